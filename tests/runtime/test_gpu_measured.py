"""engine="auto" on CUDA trains with what bench/gpu_check.sh measured on that GPU (issue 16 item
2): the measurement file, its safe default, the choice per GPU name, the Triton tile-size cache,
and the Triton engines handing readouts (observe=) to the PyTorch engine."""

import json
import math
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture()
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SPIKESCAN_CACHE", str(tmp_path))
    monkeypatch.delenv("SPIKESCAN_GPU_MEASURED", raising=False)
    return tmp_path


def test_safe_default_without_or_with_a_broken_measurement(cache, monkeypatch):
    from spikescan.runtime.engines import GPU_TRAINING_MEASURED, gpu_training_measured

    assert gpu_training_measured("cpu") == sorted(GPU_TRAINING_MEASURED) == ["torch"]
    (cache / "gpu_measured.json").write_text("{ not json")
    assert gpu_training_measured("cpu") == ["torch"]


def test_ranking_per_gpu_from_the_file(cache, monkeypatch):
    from spikescan.runtime.engines import gpu_measured, gpu_training_measured

    monkeypatch.setattr(gpu_measured, "gpu_name", lambda device: "Fake GPU A")
    gpu_measured.record("Fake GPU A", "torch", ok=True, train_step_s=0.5)
    gpu_measured.record("Fake GPU A", "triton-scan", ok=True, train_step_s=0.1)
    gpu_measured.record("Fake GPU A", "triton-sequential", ok=False, train_step_s=0.01)  # fast but wrong
    gpu_measured.record("Fake GPU B", "triton-sequential", ok=True, train_step_s=0.01)
    assert gpu_training_measured("cuda") == ["triton-scan", "torch"]
    data = json.loads((cache / "gpu_measured.json").read_text())
    assert set(data["gpus"]) == {"Fake GPU A", "Fake GPU B"}
    monkeypatch.setattr(gpu_measured, "gpu_name", lambda device: "Fake GPU C")
    assert gpu_training_measured("cuda") == ["torch"]  # another GPU: not measured


def test_auto_on_cuda_follows_the_measurement(cache, monkeypatch):
    from spikescan.runtime import engines
    from spikescan.runtime.devices import resolve_engine
    from spikescan.runtime.engines import gpu_measured

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(gpu_measured, "gpu_name", lambda device: "Fake GPU A")
    assert engines.choose_auto("cuda", needs_grad=True) == "torch"
    assert engines.choose_auto("cuda", needs_grad=False) == "triton-scan"
    gpu_measured.record("Fake GPU A", "triton-sequential", ok=True, train_step_s=0.2)
    gpu_measured.record("Fake GPU A", "torch", ok=True, train_step_s=0.4)
    assert engines.choose_auto("cuda", needs_grad=True) == "triton-sequential"
    assert resolve_engine("auto", torch.device("cuda")) == "triton-sequential"
    assert engines.choose_auto("cpu") == "sequential-cpu"  # the CPU choice is not affected


def test_tile_size_cache(cache, monkeypatch):
    from spikescan.runtime.engines import gpu_measured, triton_tune

    monkeypatch.setattr(gpu_measured, "gpu_name", lambda device: "Fake GPU A")
    monkeypatch.setattr(triton_tune, "gpu_name", lambda device: "Fake GPU A")
    assert triton_tune.lookup("mod_x", "scan", "cuda") is None
    k = triton_tune.key("mod_x", "scan", "cuda")
    for bad in (3, -4, "32"):
        gpu_measured.write_json(triton_tune.tune_path(), {"entries": {k: {"block_n": bad}}})
        assert triton_tune.lookup("mod_x", "scan", "cuda") is None
    gpu_measured.write_json(triton_tune.tune_path(), {"entries": {k: {"block_n": 16}}})
    assert triton_tune.lookup("mod_x", "scan", "cuda") == 16
    assert triton_tune.lookup("mod_x", "sequential", "cuda") is None
    assert triton_tune.lookup("mod_y", "scan", "cuda") is None


def test_triton_engine_hands_readouts_to_torch():
    """observe= readouts are not generated for Triton: the same call runs the PyTorch engine
    (no Triton launch, so no GPU or interpreter is needed)."""
    from spikescan.compiler.driver import load_model
    from spikescan.runtime.engines import torch_scan, triton_engine

    ir = load_model(str(ROOT / "models" / "li_readout.snn")).neurons["LI"]
    times = torch.tensor([[1.0, 2.5, math.inf]], dtype=torch.float64)
    ch = torch.tensor([[0, 1, 0]])
    w = torch.tensor([[0.5, -0.2], [0.3, 0.9]], dtype=torch.float64)
    a = triton_engine.run_layer(ir, {}, times, ch, w, observe="max_potential", t_end=10.0)
    b = torch_scan.run_layer(ir, {}, times, ch, w, observe="max_potential", t_end=10.0)
    assert torch.equal(a.observed, b.observed) and float(a.observed.abs().max()) > 0
