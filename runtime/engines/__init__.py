"""Engine registry. Every engine module defines the same `run_layer(ir, params, times, channels,
weight, delays=None, *, port=None, chunk=128, max_spikes=64, on_overflow="raise", observe=None,
t_end=None) -> LayerResult` (see result.py). Modules are imported lazily: the Triton and MLIR
engines are optional and a missing one gives a clear error, not an ImportError deep inside."""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Optional

from spikescan.runtime.engines.result import LayerResult, SpikeCapExceeded

ENGINES = {
    "torch": "spikescan.runtime.engines.torch_scan",
    "torch-sequential": "spikescan.runtime.engines.torch_sequential",
    "sequential-cpu": "spikescan.runtime.engines.sequential_cpu",
    "triton-scan": "spikescan.runtime.engines.triton_scan",
    "triton-sequential": "spikescan.runtime.engines.triton_sequential",
}

# Engines that propagate gradients through run_layer (usable for training).
DIFFERENTIABLE = {"torch", "torch-sequential", "sequential-cpu", "triton-scan", "triton-sequential"}
# The safe default for training on a GPU without a measurement. Which engines train on a given
# GPU, and which is fastest, is read from the file bench/gpu_check.sh writes (cached by GPU name,
# runtime/engines/gpu_measured.py), never set here by hand: see gpu_training_measured().
GPU_TRAINING_MEASURED = {"torch"}


def gpu_training_measured(device="cuda") -> list:
    """Differentiable engines measured correct on this GPU, fastest first; GPU_TRAINING_MEASURED
    when none was measured."""
    from spikescan.runtime.engines.gpu_measured import gpu_name, training_ranking

    try:
        ranked = [e for e in training_ranking(gpu_name(device)) if e in DIFFERENTIABLE and e != "sequential-cpu"]
    except Exception:  # noqa: BLE001 - no GPU name (driver trouble): the safe default
        ranked = []
    return ranked or sorted(GPU_TRAINING_MEASURED)


class EngineUnavailable(RuntimeError):
    pass


def _load(name: str) -> ModuleType:
    try:
        mod = importlib.import_module(ENGINES[name])
    except ImportError as e:
        raise EngineUnavailable(f"engine {name!r} is not available: {e}") from e
    if not hasattr(mod, "run_layer"):
        raise EngineUnavailable(f"engine {name!r} ({ENGINES[name]}) defines no run_layer")
    return mod


def available(name: str) -> bool:
    try:
        get_engine(name, device="cpu")
        return True
    except EngineUnavailable:
        return False


def _usable(needs_grad: bool) -> set:
    return DIFFERENTIABLE if needs_grad else set(ENGINES)


def choose_auto(device: str = "cpu", needs_grad: bool = True) -> str:
    """The fastest exact engine for the device that can deliver what is needed: on CUDA,
    triton-scan for forward-only runs, and for training the fastest engine that bench/gpu_check.sh
    measured correct on this GPU (gpu_training_measured; "torch" without a measurement); on CPU
    the MLIR sequential-cpu engine (compiled forward and adjoint), else "torch" when torch-mlir
    is missing."""
    import torch

    if str(device).startswith("cuda") and torch.cuda.is_available():
        for name in (["triton-scan"] if not needs_grad else gpu_training_measured(device)) + ["torch"]:
            try:
                _load(name)
                return name
            except EngineUnavailable:
                pass
        return "torch"
    if "sequential-cpu" in _usable(needs_grad):
        try:
            _load("sequential-cpu")
            return "sequential-cpu"
        except EngineUnavailable:
            pass
    return "torch"


def get_engine(name: str, device: Optional[str] = None, needs_grad: bool = True) -> ModuleType:
    """Engine module by name ("auto" picks per device; see choose_auto)."""
    if name == "auto":
        name = choose_auto(device or "cpu", needs_grad)
    if name not in ENGINES:
        raise KeyError(f"unknown engine {name!r}; known: {sorted(ENGINES)} and 'auto'")
    return _load(name)


__all__ = ["get_engine", "choose_auto", "available", "LayerResult", "SpikeCapExceeded", "ENGINES",
           "DIFFERENTIABLE", "EngineUnavailable", "GPU_TRAINING_MEASURED", "gpu_training_measured"]
