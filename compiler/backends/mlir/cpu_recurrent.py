"""CPU JIT of the recurrent-layer event loop (mlir/recurrent.py): lowered to LLVM and compiled
with torch-mlir's ExecutionEngine at opt level 3, called zero-copy on torch buffers (the memref
descriptors of cpu_jit.py). Cached in-process per (neuron formulas, dtype, port); the backward
module is built on first use (forward-only users never pay its compile time).

    compile_recurrent(ir, dtype="f64", port=None) -> CompiledRecurrent
"""

from __future__ import annotations

import ctypes
import threading
import time
from typing import Optional

import torch
from torch_mlir import execution_engine, passmanager

from spikescan.compiler.ir import NeuronIR
from spikescan.compiler.backends.mlir.cpu_jit import LOWER, ir_key, memref_of
from spikescan.compiler.backends.mlir.recurrent import build_recurrent_module

_CACHE: dict[str, "CompiledRecurrent"] = {}
_LOCK = threading.Lock()


def _jit(nir: NeuronIR, dtype: str, port: Optional[str], backward: bool, with_params: bool = True,
         vec: bool = False):
    mod = build_recurrent_module(nir, dtype, port, backward=backward, with_params=with_params, vec=vec)
    with mod.context:
        passmanager.PassManager.parse(LOWER).run(mod.operation)
        eng = execution_engine.ExecutionEngine(mod, opt_level=3)
    return mod, eng  # the module keeps its context alive


def _invoke(eng, name: str, tensors: list) -> None:
    descs = [memref_of(t) for t in tensors]
    eng.invoke(name, *[ctypes.pointer(ctypes.pointer(dsc)) for dsc in descs])


class CompiledRecurrent:
    def __init__(self, nir: NeuronIR, dtype: str, port: Optional[str]):
        t0 = time.perf_counter()
        self.ir, self.dtype, self.port = nir, dtype, port
        self._fwd = _jit(nir, dtype, port, backward=False)
        self.t_compile = time.perf_counter() - t0
        self._bwd: dict = {}

    def forward(self, key, order, chan, weight, nvalid, wrec, params: list, out, counts, over, stats):
        """@rec_forward (argument meaning: mlir_recurrent's docstring); scratch allocated here."""
        N = out.shape[1]
        ft = out.dtype
        scratch = [torch.empty((self.ir.d, N), dtype=ft), torch.empty((5, N), dtype=ft),
                   torch.empty((4, N), dtype=torch.int64)]
        _invoke(self._fwd[1], "rec_forward",
                [key, order, chan, weight, nvalid, wrec, *params, out, counts, over, stats, *scratch])

    def forward_vec(self, key, order, chan, weight, nvalid, wrec, params: list, out, counts, over, stats,
                    xrec=None):
        """@rec_forward_vec (mlir/recurrent_vec.py: shared parameters, no delays): key[B,L],
        order[B,L], weight[Bw,C,N] and wrec[N,N] dense, nvalid[B]; same results bit for bit.
        xrec [B, N, S, d] (optional, out): the state at each recorded spike before its reset."""
        N = out.shape[1]
        ft = out.dtype
        scratch = [torch.empty((self.ir.d, N), dtype=ft), torch.empty((5, N), dtype=ft),
                   torch.empty((4, N), dtype=torch.int64), torch.empty((N,), dtype=torch.int64)]
        if xrec is None:
            xrec = torch.empty((1, 1, 1, 1), dtype=ft).expand(*out.shape, self.ir.d)  # not kept
        elif tuple(xrec.shape) != (*out.shape, self.ir.d):
            raise ValueError(f"xrec must be [B, N, S, d] = {(*out.shape, self.ir.d)}, got {tuple(xrec.shape)}")
        _invoke(self._fwd[1], "rec_forward_vec",
                [key, order, chan, weight, nvalid, wrec, *params, out, counts, over, stats, *scratch, xrec])

    def backward(self, key, order, chan, weight, nvalid, wrec, params: list, gout, counts, gtimes, gweight,
                 gdelays, gwrec, gparams, tape_i, tape_f, snap_f, snap_m, with_params: bool = True,
                 vec_args: Optional[list] = None):
        """@rec_backward: replays each sample with a tape, then walks it backwards. vec_args
        (key[B,L], order[B,L], weight[Bw,C,N] dense, nvalid[B], wrec dense): replay with the
        vectorised loop (shared parameters, no delays; same tape bit for bit)."""
        ck = (bool(with_params), vec_args is not None)
        with _LOCK:
            if ck not in self._bwd:
                t0 = time.perf_counter()
                self._bwd[ck] = _jit(self.ir, self.dtype, self.port, True, ck[0], vec=ck[1])
                self.t_compile_backward = time.perf_counter() - t0
        N = gout.shape[1]
        ft = gout.dtype
        d = self.ir.d
        scratch = [torch.empty((d, N), dtype=ft), torch.empty((5, N), dtype=ft),
                   torch.empty((4, N), dtype=torch.int64), torch.empty((d + 3, N), dtype=ft)]
        extra = [] if vec_args is None else list(vec_args) + [torch.empty((N,), dtype=torch.int64)]
        _invoke(self._bwd[ck][1], "rec_backward",
                [key, order, chan, weight, nvalid, wrec, *params, gout, counts, gtimes, gweight, gdelays, gwrec,
                 gparams, *scratch, tape_i, tape_f, snap_f, snap_m, *extra])


def compile_recurrent(nir: NeuronIR, dtype: str = "f64", port: Optional[str] = None) -> CompiledRecurrent:
    """The JIT-compiled recurrent event loop for this neuron (cached in-process)."""
    key = "recurrent\x00" + ir_key(nir, dtype, port)
    with _LOCK:
        if key not in _CACHE:
            _CACHE[key] = CompiledRecurrent(nir, dtype, port)
        return _CACHE[key]
