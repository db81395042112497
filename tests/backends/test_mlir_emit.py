"""The emitted MLIR (compiler/backends/mlir/emit.py) parses back and verifies for every neuron
model and both dtypes, holds the promised functions, and its special functions / IFT partials
agree with independent references once lowered and JIT-compiled."""

import ctypes

import mpmath as mp
import pytest
import torch
from torch_mlir import execution_engine, ir, passmanager

from spikescan.compiler import special
from spikescan.compiler.backends.mlir.cpu_jit import LOWER
from spikescan.compiler.backends.mlir.emit import build_module, emit_module
from spikescan.compiler.driver import load_model
from repo_paths import repo

FILES = ["lif", "cuba_lif", "alpha_lif", "adaptive_lif", "li_readout"]


def all_neurons():
    out = []
    for f in FILES:
        for name, nir in load_model(repo(f"models/{f}.snn")).neurons.items():
            out.append((name, nir))
    return out


@pytest.mark.parametrize("dtype", ["f64", "f32"])
def test_roundtrip_parse_and_verify(dtype):
    for name, nir in all_neurons():
        text = emit_module(nir, dtype)
        with ir.Context():
            m = ir.Module.parse(text)
            assert m.operation.verify(), name
            fns = {op.attributes["sym_name"].value for op in m.body.operations}
        expect = {"propagate", "reset", "potential", "dpotential", "combine"} | {f"jump_{p}" for p in nir.ports}
        if nir.c is not None:
            expect |= {"crossing", "spike_time", "dtstar_dx", "dtstar_dtheta", "dtstar_dparams", "layer"}
        assert expect <= fns, (name, expect - fns)
        fty = "f64" if dtype == "f64" else "f32"
        assert f"-> ({fty}" in text or f"-> {fty}" in text
        assert "math.expm1" in text or name == "LIF"  # exprel lowered through expm1


def test_combine_skips_structural_zeros():
    nir = load_model(repo("models/alpha_lif.snn")).neurons["AlphaLIF"]
    text = emit_module(nir, "f64")
    # lower-triangular 3x3 Phi: 6 nonzeros + 3 offsets per affine map
    sig = [ln for ln in text.splitlines() if "func.func @combine" in ln][0]
    assert sig.count("f64") == 2 * 9 + 9


def _jit_scalar(nir, fname, nin, nout):
    """JIT the module and call the scalar function `fname` through a small memref wrapper."""
    m = build_module(nir, "f64", with_layer=False)
    with m.context, ir.Location.unknown():
        from torch_mlir.dialects import func, memref

        f64 = ir.F64Type.get()
        dyn = ir.ShapedType.get_dynamic_size()
        mt = ir.MemRefType.get([dyn], f64)
        with ir.InsertionPoint(m.body):
            w = func.FuncOp("wrap", ir.FunctionType.get([mt, mt], []))
            w.attributes["llvm.emit_c_interface"] = ir.UnitAttr.get()
            blk = w.add_entry_block()
            with ir.InsertionPoint(blk):
                from torch_mlir.dialects import arith

                ins = [memref.load(blk.arguments[0], [arith.constant(ir.IndexType.get(), i)]) for i in range(nin)]
                target = [op for op in m.body.operations if op.attributes["sym_name"].value == fname][0]
                call = func.CallOp(target, ins)
                for i, r in enumerate(call.results):
                    memref.store(r, blk.arguments[1], [arith.constant(ir.IndexType.get(), i)])
                func.ReturnOp([])
        passmanager.PassManager.parse(LOWER).run(m.operation)
        ee = execution_engine.ExecutionEngine(m, opt_level=2)

    class D1(ctypes.Structure):
        _fields_ = [("a", ctypes.c_void_p), ("b", ctypes.c_void_p), ("o", ctypes.c_longlong),
                    ("s", ctypes.c_longlong * 1), ("t", ctypes.c_longlong * 1)]

    def call(*args):
        a = torch.tensor(args, dtype=torch.float64)
        r = torch.zeros(nout, dtype=torch.float64)
        da, dr = D1(a.data_ptr(), a.data_ptr(), 0, (nin,), (1,)), D1(r.data_ptr(), r.data_ptr(), 0, (nout,), (1,))
        ee.invoke("wrap", ctypes.pointer(ctypes.pointer(da)), ctypes.pointer(ctypes.pointer(dr)))
        return r.tolist()

    return m, ee, call


def test_propagate_matches_mpmath_expm_including_equal_taus():
    nir = load_model(repo("models/alpha_lif.snn")).neurons["AlphaLIF"]
    keep = _jit_scalar(nir, "propagate", 1 + 3 + 4, 3)
    call = keep[2]
    for tm, ts in [(20.0, 5.0), (10.0, 10.0), (10.0, 10.0 * (1 + 1e-9)), (5.0, 40.0)]:
        for D in [1e-7, 0.3, 7.0, 80.0]:
            x = [0.7, -0.4, 1.3]  # state order (g, i, v)
            got = call(D, *x, tm, ts, 1.0, 0.0)  # params (tau_m, tau_s, v_th, v_reset)
            with mp.workdps(40):
                A = mp.matrix([[-1 / mp.mpf(ts), 0, 0], [1 / mp.mpf(ts), -1 / mp.mpf(ts), 0],
                               [0, 1 / mp.mpf(tm), -1 / mp.mpf(tm)]])
                ref = mp.expm(A * D) * mp.matrix(x)
            for g, r in zip(got, ref):
                assert abs(g - float(r)) <= 4e-16 * (1 + abs(float(r))), (tm, ts, D, got, ref)


def test_ift_partials_match_finite_differences():
    nir = load_model(repo("models/cuba_lif.snn")).neurons["CubaLIF"]
    keep_c = _jit_scalar(nir, "crossing", 3 + 2 + 4, 1)
    keep_dx = _jit_scalar(nir, "dtstar_dx", 1 + 2 + 4, 2)
    keep_dp = _jit_scalar(nir, "dtstar_dparams", 1 + 2 + 4, 4)
    keep_th = _jit_scalar(nir, "dtstar_dtheta", 1 + 2 + 4, 1)
    cross = keep_c[2]
    x, p = [8.0, 0.1], [20.0, 5.0, 1.0, 0.0]  # state (i, v); params (tau_m, tau_s, v_th, v_reset)

    def tstar(x, p):
        return cross(0.0, 50.0, 0.0, *x, *p)[0]

    D = tstar(x, p)
    assert 0 < D < 50
    h = 1e-6
    dx = keep_dx[2](D, *x, *p)
    for k in range(2):
        xp, xm = list(x), list(x)
        xp[k] += h
        xm[k] -= h
        fd = (tstar(xp, p) - tstar(xm, p)) / (2 * h)
        assert abs(dx[k] - fd) <= 1e-6 * (1 + abs(fd))
    dp = keep_dp[2](D, *x, *p)
    for k in range(4):
        pp, pm = list(p), list(p)
        pp[k] += h
        pm[k] -= h
        fd = (tstar(x, pp) - tstar(x, pm)) / (2 * h)
        assert abs(dp[k] - fd) <= 1e-5 * (1 + abs(fd)), (k, dp[k], fd)
    assert abs(keep_th[2](D, *x, *p)[0] - dp[2]) < 1e-12  # dt*/dv_th is the theta partial


def test_special_functions_against_numeric_reference():
    nir = load_model(repo("models/alpha_lif.snn")).neurons["AlphaLIF"]
    # the (2,0) entry of Phi carries dexp2, the (1,0) of CubaLIF exprel: through propagate
    call = _jit_scalar(nir, "propagate", 8, 3)[2]
    for tm, ts in [(20.0, 5.0), (5.0, 20.0), (10.0, 10.0 + 1e-6)]:
        D = 3.0
        got = call(D, 1.0, 0.0, 0.0, tm, ts, 1.0, 0.0)[2]
        z = D * (ts - tm) / (tm * ts)
        import math

        ref = D**2 * math.exp(-D / tm) * special.numeric_dexp2(z, z) / (tm * ts)
        assert abs(got - ref) <= 1e-14 * abs(ref)
