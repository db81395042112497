"""Neuron-agnostic MLIR kernels for the observation replay (runtime/engines/observe_replay.py):
the affine recurrences over known segments, JIT-compiled for the CPU like cpu_jit.py.

    affine_scan(J [L, K, d, d], c [L, K, d], X [L, K+1, d])
        X[l, k+1] = J[l, k] @ X[l, k] + c[l, k]          (X[:, 0] is set by the caller)
    affine_adjoint(J [L, K, d, d], h [L, K+1, d], lam [L, K+1, d])
        lam[l, k] = h[l, k] + J[l, k]^T @ lam[l, k+1]    (lam[:, K] is set by the caller)

The per-segment matrices come from the neuron's printed propagator (vectorised torch); only
the sequential dependency along the events is compiled here: one pass of d*d multiply-adds
per segment instead of one Python step (or log2(K) full-tensor steps) per event."""

from __future__ import annotations

import ctypes
import threading

import torch

_LOCK = threading.Lock()
_ENGINES: dict[str, tuple] = {}
_TYPES = {torch.float64: "f64", torch.float32: "f32"}


def _memref(rank: int, et: str) -> str:
    dims = "x".join(["?"] * rank)
    strides = ", ".join(["?"] * rank)
    return f"memref<{dims}x{et}, strided<[{strides}], offset: ?>>"


def _source(et: str) -> str:
    m4, m3 = _memref(4, et), _memref(3, et)
    return f"""
func.func @affine_scan(%J: {m4}, %c: {m3}, %X: {m3}) attributes {{llvm.emit_c_interface}} {{
  %c0 = arith.constant 0 : index
  %c1 = arith.constant 1 : index
  %c2 = arith.constant 2 : index
  %L = memref.dim %J, %c0 : {m4}
  %K = memref.dim %J, %c1 : {m4}
  %d = memref.dim %J, %c2 : {m4}
  scf.for %l = %c0 to %L step %c1 {{
    scf.for %k = %c0 to %K step %c1 {{
      %k1 = arith.addi %k, %c1 : index
      scf.for %i = %c0 to %d step %c1 {{
        %ci = memref.load %c[%l, %k, %i] : {m3}
        %acc = scf.for %j = %c0 to %d step %c1 iter_args(%a = %ci) -> ({et}) {{
          %jij = memref.load %J[%l, %k, %i, %j] : {m4}
          %xj = memref.load %X[%l, %k, %j] : {m3}
          %p = arith.mulf %jij, %xj : {et}
          %s = arith.addf %a, %p : {et}
          scf.yield %s : {et}
        }}
        memref.store %acc, %X[%l, %k1, %i] : {m3}
      }}
    }}
  }}
  return
}}

func.func @affine_adjoint(%J: {m4}, %h: {m3}, %lam: {m3}) attributes {{llvm.emit_c_interface}} {{
  %c0 = arith.constant 0 : index
  %c1 = arith.constant 1 : index
  %c2 = arith.constant 2 : index
  %L = memref.dim %J, %c0 : {m4}
  %K = memref.dim %J, %c1 : {m4}
  %d = memref.dim %J, %c2 : {m4}
  scf.for %l = %c0 to %L step %c1 {{
    scf.for %r = %c0 to %K step %c1 {{
      %t = arith.subi %K, %r : index
      %k = arith.subi %t, %c1 : index
      scf.for %j = %c0 to %d step %c1 {{
        %hj = memref.load %h[%l, %k, %j] : {m3}
        %acc = scf.for %i = %c0 to %d step %c1 iter_args(%a = %hj) -> ({et}) {{
          %jij = memref.load %J[%l, %k, %i, %j] : {m4}
          %li = memref.load %lam[%l, %t, %i] : {m3}
          %p = arith.mulf %jij, %li : {et}
          %s = arith.addf %a, %p : {et}
          scf.yield %s : {et}
        }}
        memref.store %acc, %lam[%l, %k, %j] : {m3}
      }}
    }}
  }}
  return
}}
"""


def _engine(et: str):
    with _LOCK:
        if et not in _ENGINES:
            from torch_mlir import execution_engine, ir, passmanager

            from spikescan.compiler.backends.mlir.cpu_jit import LOWER

            ctx = ir.Context()
            with ctx, ir.Location.unknown():
                mod = ir.Module.parse(_source(et))
                passmanager.PassManager.parse(LOWER).run(mod.operation)
                eng = execution_engine.ExecutionEngine(mod, opt_level=3)
            _ENGINES[et] = (ctx, mod, eng)  # keep the context alive with the engine
        return _ENGINES[et][2]


def _call(name: str, tensors: list) -> None:
    from spikescan.compiler.backends.mlir.cpu_jit import memref_of

    dt = tensors[0].dtype
    if dt not in _TYPES or any(t.dtype != dt or t.device.type != "cpu" for t in tensors):
        raise TypeError(f"{name}: all tensors must be CPU float32 or float64 of one dtype")
    descs = [memref_of(t) for t in tensors]
    _engine(_TYPES[dt]).invoke(name, *[ctypes.pointer(ctypes.pointer(d)) for d in descs])


def affine_scan(J: torch.Tensor, c: torch.Tensor, x0: torch.Tensor) -> torch.Tensor:
    """All prefix states X [L, K+1, d] of x_{k+1} = J_k x_k + c_k from x0 [L, d] (no autograd)."""
    L, K, d, _ = J.shape
    X = torch.empty((L, K + 1, d), dtype=J.dtype)
    X[:, 0] = x0
    _call("affine_scan", [J.contiguous(), c.contiguous(), X])
    return X


def affine_adjoint(J: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
    """lam [L, K+1, d] of lam_k = h_k + J_k^T lam_{k+1}, lam_K = h_K (no autograd)."""
    L, K, d, _ = J.shape
    lam = torch.empty((L, K + 1, d), dtype=J.dtype)
    lam[:, K] = h[:, K]
    _call("affine_adjoint", [J.contiguous(), h.contiguous(), lam])
    return lam
