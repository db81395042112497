"""Device and dtype resolution for `train`, `eval` and `spikescan.simulate`-style callers.

`--device cpu|cuda|cuda:N|auto` and `--dtype f32|f64` become a torch.device and a torch dtype
here; `resolve_engine` picks the engine for that device ("auto": the fastest differentiable
engine measured for it) and refuses engines that cannot run there. Every refusal is a one-line
ValueError naming the option. Datasets stay on the CPU: `to_device` moves each batch.
"""

from __future__ import annotations

import os
from typing import Optional

import torch

DTYPES = {"f64": torch.float64, "f32": torch.float32}
TRITON_ENGINES = ("triton-scan", "triton-sequential")
CPU_ONLY_ENGINES = ("sequential-cpu",)


def resolve_device(spec: Optional[str | torch.device] = "auto") -> torch.device:
    """"auto" (CUDA when available, else CPU), "cpu", "cuda", "cuda:N" (or a torch.device)."""
    if isinstance(spec, torch.device):
        spec = str(spec)
    spec = "auto" if spec is None else str(spec).strip().lower()
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(spec)
    except (RuntimeError, ValueError):
        raise ValueError(f"--device {spec!r} is not a device: use auto, cpu, cuda or cuda:N") from None
    if dev.type == "meta":
        return dev  # tests of the plumbing: tensors without data
    if dev.type not in ("cpu", "cuda"):
        raise ValueError(f"--device {spec!r}: only cpu and cuda[:N] are supported")
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"--device {spec}: no CUDA GPU is visible to torch here; use --device cpu")
        n = torch.cuda.device_count()
        if dev.index is not None and dev.index >= n:
            raise ValueError(f"--device {spec}: only {n} CUDA device(s) (cuda:0..cuda:{n - 1})")
    return dev


def resolve_dtype(spec: Optional[str | torch.dtype] = "f64") -> torch.dtype:
    """"f64" (default; the exact reference) or "f32" (a torch dtype passes through)."""
    if isinstance(spec, torch.dtype):
        if spec not in DTYPES.values():
            raise ValueError(f"--dtype {spec}: use f32 or f64")
        return spec
    key = "f64" if spec is None else str(spec).strip().lower()
    key = {"float64": "f64", "float32": "f32", "double": "f64", "float": "f32"}.get(key, key)
    if key not in DTYPES:
        raise ValueError(f"--dtype {spec!r}: use f32 or f64")
    return DTYPES[key]


def dtype_name(dtype: torch.dtype) -> str:
    return {v: k for k, v in DTYPES.items()}[dtype]


def _jit_dtypes() -> tuple[str, ...]:
    """dtypes the MLIR CPU JIT compiles (runtime/engines/sequential_cpu.py _DTYPES)."""
    from spikescan.runtime.engines import sequential_cpu

    return tuple(sequential_cpu._DTYPES.values())


def _mlir_available() -> bool:
    try:
        from spikescan.runtime.engines import get_engine

        get_engine("sequential-cpu")
        import spikescan.compiler.backends.mlir.cpu_jit  # noqa: F401  (needs torch_mlir)
        return True
    except Exception:  # noqa: BLE001 - no MLIR JIT here
        return False


def resolve_engine(name, device: Optional[torch.device] = None, dtype: torch.dtype = torch.float64):
    """The engine name for training/evaluating on `device` in `dtype`. "auto": on CPU the
    compiled "sequential-cpu" (or "torch" without torch-mlir), on CUDA the fastest differentiable
    engine measured on this GPU (runtime/engines/gpu_measured.py; "torch" until measured).
    Named engines are checked against the device: the Triton engines need CUDA (or
    TRITON_INTERPRET=1), sequential-cpu needs the CPU. Engine objects (tests) pass through."""
    if not isinstance(name, str):
        if hasattr(name, "run_layer"):
            return name
        raise ValueError(f"engine must be a name, got {type(name).__name__}")
    from spikescan.runtime.engines import ENGINES, choose_auto

    dev = torch.device("cpu") if device is None else torch.device(device)
    if name == "auto":
        if dev.type == "cuda":
            return choose_auto(str(dev), needs_grad=True)
        if dev.type == "meta":
            return "torch"
        return "sequential-cpu" if _mlir_available() else "torch"
    if name not in ENGINES:
        raise ValueError(f"unknown engine {name!r}; choose auto, {', '.join(sorted(ENGINES))}")
    if name in TRITON_ENGINES and dev.type != "cuda" and os.environ.get("TRITON_INTERPRET") != "1":
        raise ValueError(f"engine {name!r} runs on CUDA tensors: pass --device cuda, or on the CPU use --engine auto "
                         "(sequential-cpu), torch or torch-sequential")
    if name in CPU_ONLY_ENGINES and dev.type == "cuda":
        raise ValueError(f"engine {name!r} is the CPU JIT: with --device {dev} use --engine auto, torch, "
                         "triton-scan or triton-sequential")
    if name == "sequential-cpu" and dtype is not None:
        have = _jit_dtypes()
        if dtype_name(dtype) not in have:
            raise ValueError(f"engine sequential-cpu compiles {', '.join(have)} only, not --dtype {dtype_name(dtype)}")
    return name


def runs_on(name, device: torch.device) -> bool:
    """Whether engine `name` runs on `device` (names only; "auto" runs anywhere)."""
    if not isinstance(name, str) or name == "auto":
        return True
    if name in TRITON_ENGINES:
        return device.type == "cuda" or os.environ.get("TRITON_INTERPRET") == "1"
    return not (name in CPU_ONLY_ENGINES and device.type == "cuda")


def module_device(module: torch.nn.Module) -> torch.device:
    for t in module.parameters():
        return t.device
    for t in module.buffers():
        return t.device
    return torch.device("cpu")


def to_device(batch, device: torch.device):
    """(times, channels, labels) from a CPU loader onto `device` (no copy when already there)."""
    times, channels, labels = batch
    nb = device.type == "cuda"
    return (torch.as_tensor(times).to(device, non_blocking=nb), torch.as_tensor(channels).to(device, non_blocking=nb),
            torch.as_tensor(labels).to(device, non_blocking=nb))


def cpu_tree(x):
    """A state dict (nested dicts/lists of tensors) with every tensor on the CPU, for checkpoints
    that load anywhere."""
    if isinstance(x, torch.Tensor):
        return x.detach().cpu()
    if isinstance(x, dict):
        return {k: cpu_tree(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return type(x)(cpu_tree(v) for v in x)
    return x
