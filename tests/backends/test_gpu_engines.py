"""Every differentiable engine on CUDA against the CPU reference (sequential-cpu, f64 on the same
inputs), forward spike trains and backward gradients, in f64 and f32 (bench/gpu_check.py
check_engine; run by bench/gpu_check.sh). Skipped without a GPU."""

import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

pytestmark = pytest.mark.gpu


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("engine", ["torch", "torch-sequential", "triton-scan", "triton-sequential"])
def test_engine_on_cuda_matches_cpu_reference(engine, dtype):
    from bench.gpu_check import check_engine

    rec = check_engine(engine, dtype, torch.device("cuda"))
    assert rec["spikes"] > 0
    assert rec["counts_equal"], rec
    assert rec["ok"], rec
