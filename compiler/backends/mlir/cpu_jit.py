"""CPU backend: the neuron's MLIR module (mlir_emit) lowered to LLVM and JIT-compiled with
torch-mlir's ExecutionEngine at opt level 3. Compiled engines are cached in-process per
(neuron formulas, dtype, port).

    compile_neuron(ir, dtype="f64", port=None) -> CompiledNeuron
    check_lowering(ir, dtype)                   -> None (raises if lowering or JIT fails)

CompiledNeuron.layer(...) calls the generated event loop on torch tensors with zero copies: each
tensor is passed as a strided memref descriptor built over its data pointer (stride 0 for
broadcast dimensions)."""

from __future__ import annotations

import ctypes
import hashlib
import threading
import time
from typing import Optional

import torch
from torch_mlir import execution_engine, passmanager

from spikescan.compiler.ir import NeuronIR
from spikescan.compiler.backends.mlir.emit import build_module

LOWER = ("builtin.module(convert-scf-to-cf,convert-vector-to-llvm,expand-strided-metadata,"
         "finalize-memref-to-llvm,"
         "convert-math-to-libm,convert-math-to-llvm,convert-arith-to-llvm,convert-cf-to-llvm,"
         "convert-func-to-llvm,reconcile-unrealized-casts)")

_CACHE: dict[str, "CompiledNeuron"] = {}
_LOCK = threading.Lock()
_DESC: dict[int, type] = {}


def _descriptor_type(rank: int) -> type:
    """ctypes struct of a ranked memref descriptor (allocated, aligned, offset, sizes, strides)."""
    if rank not in _DESC:
        _DESC[rank] = type(f"MemRef{rank}D", (ctypes.Structure,), {"_fields_": [
            ("allocated", ctypes.c_void_p), ("aligned", ctypes.c_void_p), ("offset", ctypes.c_longlong),
            ("sizes", ctypes.c_longlong * rank), ("strides", ctypes.c_longlong * rank)]})
    return _DESC[rank]


def _is_fake(t: torch.Tensor) -> bool:
    from torch._subclasses.fake_tensor import is_fake

    return is_fake(t)


def memref_of(t: torch.Tensor):
    """Descriptor over a CPU tensor's memory (no copy); strides in elements, 0 where expanded."""
    if not t.is_cpu:
        raise ValueError("the sequential-cpu engine needs CPU tensors")
    # a plain Tensor is never fake (FakeTensor is a subclass): the fast test first (~20 us per
    # call saved, ~150 descriptors per layer call)
    if torch.compiler.is_compiling() or (type(t) is not torch.Tensor and _is_fake(t)):
        # a traced tensor has no memory of its own: a descriptor of it corrupts the heap
        raise RuntimeError("the compiled CPU engines cannot run inside torch.compile tracing; "
                           "call them outside the compiled region (SpikingNetwork.forward does)")
    D = _descriptor_type(t.dim())
    return D(t.data_ptr(), t.data_ptr(), 0, tuple(t.shape), tuple(t.stride()))


_IR_TEXT: dict[int, tuple[NeuronIR, tuple, str]] = {}  # id(ir) -> (ir, its fields, their text)


def _ir_text(nir: NeuronIR) -> str:
    """The printed formulas of an IR (sympy printing costs ~5 ms: once per IR object, not per
    call; the fields are compared by identity, so an IR whose fields are replaced is printed again)."""
    fields = (nir.name, nir.state, nir.params, nir.A, nir.a0, nir.ports, nir.c, nir.theta, nir.R, nir.r,
              nir.t_ref, nir.init, nir.Phi, nir.phi, nir.no_cross_rows, nir.chain)
    hit = _IR_TEXT.get(id(nir))
    if hit is not None and hit[0] is nir and all(a is b for a, b in zip(hit[1], fields)):
        return hit[2]
    parts = [nir.name, str(nir.state), str([(p.name, p.symbol) for p in nir.params]),
             str(nir.A), str(nir.a0), str(sorted((k, str(v)) for k, v in nir.ports.items())), str(nir.c),
             str(nir.theta), str(nir.R), str(nir.r), str(nir.t_ref), str(nir.init), str(nir.Phi),
             str(nir.phi), str(nir.no_cross_rows), str(nir.chain and nir.chain.rows)]
    text = "\x00".join(parts)
    _IR_TEXT[id(nir)] = (nir, fields, text)  # keeps the IR alive: its id is not reused
    return text


def ir_key(nir: NeuronIR, dtype: str, port: Optional[str]) -> str:
    """Content key of everything the emitted code depends on."""
    return hashlib.sha256("\x00".join([_ir_text(nir), dtype, str(port)]).encode()).hexdigest()


class CompiledNeuron:
    def __init__(self, nir: NeuronIR, dtype: str, port: Optional[str]):
        t0 = time.perf_counter()
        self.ir, self.dtype, self.port = nir, dtype, port
        self.module = build_module(nir, dtype, with_layer=True, port=port)
        self.t_emit = time.perf_counter() - t0
        with self.module.context:
            passmanager.PassManager.parse(LOWER).run(self.module.operation)
            self.engine = execution_engine.ExecutionEngine(self.module, opt_level=3)
        self.t_compile = time.perf_counter() - t0
        self.pnames = [p.name for p in nir.params]
        self._bwd: dict = {}

    def _pmap(self, pmap) -> list:
        """The trailing pmap[C] i64 argument of a multi-port engine (port: a tuple of names)."""
        if isinstance(self.port, tuple) != (pmap is not None):
            raise ValueError(f"engine compiled for port {self.port!r}: pmap must be given iff the port is a tuple")
        return [] if pmap is None else [pmap]

    def layer(self, times, chan, order, weight, delays, nvalid, horizon, params: list, out, counts, over, pmap=None):
        """Run the generated event loop (see mlir_emit.build_layer for the argument meaning)."""
        tensors = [times, chan, order, weight, delays, nvalid, horizon, *params, out, counts, over, *self._pmap(pmap)]
        descs = [memref_of(t) for t in tensors]
        ptrs = [ctypes.pointer(ctypes.pointer(dsc)) for dsc in descs]
        self.engine.invoke("layer", *ptrs)

    def layer_backward(self, times, chan, order, weight, delays, nvalid, horizon, params: list, gout,
                       counts, gtimes, gweight, gdelays, gparams, tape_f, tape_i, tpos,
                       with_params: bool = True, pmap=None):
        """The adjoint event loop (mlir_adjoint.build_layer_backward), JIT-compiled on first use
        (two variants: with and without the parameter gradients)."""
        eng = self._backward_engine(bool(with_params))
        tensors = [times, chan, order, weight, delays, nvalid, horizon, *params, gout, counts, gtimes,
                   gweight, gdelays, gparams, tape_f, tape_i, tpos, *self._pmap(pmap)]
        descs = [memref_of(t) for t in tensors]
        eng.invoke("layer_backward", *[ctypes.pointer(ctypes.pointer(dsc)) for dsc in descs])

    def _backward_engine(self, with_params: bool):
        with _LOCK:
            if with_params not in self._bwd:
                from spikescan.compiler.backends.mlir.adjoint import build_backward_module

                t0 = time.perf_counter()
                mod = build_backward_module(self.ir, self.dtype, self.port, with_params)
                with mod.context:
                    passmanager.PassManager.parse(LOWER).run(mod.operation)
                    eng = execution_engine.ExecutionEngine(mod, opt_level=3)
                self._bwd[with_params] = (mod, eng)  # the module keeps its context alive
                self.t_compile_backward = time.perf_counter() - t0
            return self._bwd[with_params][1]

    def _scalar_shared_engine(self):
        """A second engine whose module also holds `layer_shared_scalar` (compiled on first use;
        only bench/cpu_forward.py and the tests ask for it)."""
        with _LOCK:
            if "scalar_shared" not in self._bwd:
                mod = build_module(self.ir, self.dtype, with_layer=True, port=self.port,
                                   scalar_shared=True)
                with mod.context:
                    passmanager.PassManager.parse(LOWER).run(mod.operation)
                    eng = execution_engine.ExecutionEngine(mod, opt_level=3)
                self._bwd["scalar_shared"] = (mod, eng)
            return self._bwd["scalar_shared"][1]

    def layer_shared(self, times, chan, order, weight, nvalid, horizon, params: list, out, counts, over,
                     impl: str = "vector", xrec=None, pmap=None, phirec=None, erec=None):
        """The event-outer loop for shared parameters and no delays (mlir/shared.py; impl="scalar":
        the earlier scalar loop mlir_emit.build_layer_shared_scalar, same results bit for bit);
        weight is [C, N] or [B, C, N] and made dense here. xrec [B, N, S, d] (vector loop only):
        receives the state at each recorded spike before its reset (default: not kept); phirec
        [B, n+1, d*d] (vector loop only) receives Phi(D)^T of every interval and erec [B, N, S] i64
        the interval of each recorded spike (default: not kept)."""
        if impl not in ("vector", "scalar"):
            raise ValueError(f"impl must be 'vector' or 'scalar', got {impl!r}")
        N = out.shape[1]
        w = weight if weight.dim() == 3 else weight.unsqueeze(0)
        w = w.contiguous()
        xs = torch.empty((self.ir.d, N), dtype=out.dtype)
        refs = torch.empty((N,), dtype=out.dtype)
        ints = torch.empty((2, N), dtype=torch.int64)
        # scratch: flags[N] i8 for the scalar loop, the flagged neurons' indices for the vector one
        flags = torch.empty((N,), dtype=torch.int8 if impl == "scalar" else torch.int64)
        tensors = [times, chan, order, w, nvalid, horizon, *params, out, counts, over, xs, refs, ints, flags]
        if impl == "vector":  # the flagged neurons' interval-start states; the states at the spikes
            tensors.append(torch.empty((self.ir.d, N), dtype=out.dtype))
            if xrec is None:
                xrec = torch.empty((1, 1, 1, 1), dtype=out.dtype).expand(*out.shape, self.ir.d)  # not kept
            elif tuple(xrec.shape) != (*out.shape, self.ir.d):
                raise ValueError(f"xrec must be [B, N, S, d] = {(*out.shape, self.ir.d)}, got {tuple(xrec.shape)}")
            tensors.append(xrec)
            shape = (times.shape[0], times.shape[1] + 1, self.ir.d ** 2)
            if phirec is None:
                phirec = torch.empty((1, 1, 1), dtype=out.dtype).expand(*shape)  # not kept
            elif tuple(phirec.shape) != shape:
                raise ValueError(f"phirec must be [B, n+1, d*d] = {shape}, got {tuple(phirec.shape)}")
            tensors.append(phirec)
            if erec is None:
                erec = torch.empty((1, 1, 1), dtype=torch.int64).expand(*out.shape)  # not kept
            elif tuple(erec.shape) != tuple(out.shape) or erec.dtype != torch.int64:
                raise ValueError(f"erec must be int64 [B, N, S] = {tuple(out.shape)}, got {tuple(erec.shape)}")
            tensors.append(erec)
        tensors += self._pmap(pmap)
        descs = [memref_of(t) for t in tensors]
        eng, fname = ((self.engine, "layer_shared") if impl == "vector"
                      else (self._scalar_shared_engine(), "layer_shared_scalar"))
        eng.invoke(fname, *[ctypes.pointer(ctypes.pointer(dsc)) for dsc in descs])


def compile_neuron(nir: NeuronIR, dtype: str = "f64", port: Optional[str] = None) -> CompiledNeuron:
    """The JIT-compiled engine for this neuron (cached in-process)."""
    if nir.c is None or nir.theta is None:
        raise NotImplementedError(f"{nir.name}: the CPU JIT event loop needs a threshold "
                                  "(non-spiking readouts are not supported by sequential-cpu yet)")
    key = ir_key(nir, dtype, port)
    with _LOCK:
        if key not in _CACHE:
            _CACHE[key] = CompiledNeuron(nir, dtype, port)
        return _CACHE[key]


def check_lowering(nir: NeuronIR, dtype: str = "f64") -> None:
    """Used by `spikescan compile --emit cpu`: make sure the module lowers and JIT-compiles."""
    if nir.c is None or nir.theta is None:
        return
    compile_neuron(nir, dtype)
