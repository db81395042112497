"""Parameter names that clash with the names of generated code (issue 17 item 2): the IR
mangles every parameter symbol (compiler/ir.py PARAM_PREFIX), so a parameter called `D`,
`exp`, `exprel`, `x0` or `lambda` simulates exactly like `tau_s`. The internal names are
collected from the generated Triton module, the MLIR module and the torch engine's printed
functions, so a new internal name is tested as soon as a backend starts using it."""

from __future__ import annotations

import keyword
import re
from pathlib import Path

import pytest
import sympy
import torch

import spikescan.dsl as dsl
from spikescan.compiler.driver import load_model
from spikescan.runtime.simulate import simulate

ROOT = Path(__file__).resolve().parents[2]
CUBA = (ROOT / "models" / "cuba_lif.snn").read_text()
ENGINES = ("sequential-cpu", "torch", "torch-sequential")
TIMES = torch.tensor([1.0, 2.0, 3.0, 10.0, 11.0, 12.0, 30.0, 31.0])
WEIGHTS = torch.tensor([2.0, 2.0, 2.0, 1.5, 1.5, 1.5, 3.0, 3.0])
IDENT = re.compile(r"\b[A-Za-z_][A-Za-z0-9_]*\b")


def _write(tmp_path: Path, text: str, name: str) -> Path:
    p = tmp_path / f"{name}.snn"
    p.write_text(text)
    return p


def _spikes(path: Path, engine: str) -> list[float]:
    ir = load_model(path).neurons["CubaLIF"]
    r = simulate(ir, times=TIMES, weights=WEIGHTS, engine=engine, t_end=100.0)
    return r.times[: int(r.counts)].tolist()


def _internal_names(tmp_path: Path) -> list[str]:
    """Identifiers of the code generated for CubaLIF by every backend, one per numbered family
    (x0, x1, ... -> x0, x1), plus Python keywords and builtins the printers could meet."""
    from spikescan.compiler.backends.mlir.emit import emit_module
    from spikescan.compiler.backends.triton.codegen import generate
    from spikescan.runtime.kernels import NeuronKernels

    ir = load_model(_write(tmp_path, CUBA, "cuba")).neurons["CubaLIF"]
    text = generate(ir, "f64") + emit_module(ir, "f64")
    kern = NeuronKernels(ir)
    for printed in vars(kern).values():  # the torch engine's lambdified functions
        fn = getattr(printed, "fn", None)
        text += getattr(fn, "__doc__", "") or ""
    names = set(IDENT.findall(text)) | set(keyword.kwlist) | {"abs", "min", "max", "sum", "float",
                                                              "math", "torch", "tl", "np", "S"}
    keep = []
    for n in sorted(names):
        m = re.match(r"(.*?)(\d+)", n)
        if m and (int(m.group(2)) > 1 or n.startswith("_") and len(m.group(1)) > 3):
            continue  # numbered temporaries: one representative of each family
        keep.append(n)
    return keep


def _accepted(names: list[str]) -> list[str]:
    """Names the language accepts as parameter names (not reserved words, not too long, not
    already a state variable or the weight)."""
    out = []
    for n in names:
        if n in ("v", "i", "w", "tau_m", "tau_s", "v_th", "v_reset"):
            continue
        _, diags = dsl.check_source(CUBA.replace("v_reset = 0.0 }", f"v_reset = 0.0  {n} = 1 }}"),
                                    "probe.snn")
        if not diags:
            out.append(n)
    return out


def _balanced(names: list[str]) -> str:
    if len(names) == 1:
        return names[0]
    k = len(names) // 2
    return f"({_balanced(names[:k])} * {_balanced(names[k:])})"


@pytest.mark.parametrize("name", ["D", "exp", "exprel", "x0", "lambda", "w0", "adjX0", "tl",
                                  "p_tau_m", "phi2", "dexp2"])
def test_renamed_time_constant_simulates_the_same(tmp_path, name):
    ref = _write(tmp_path, CUBA, "ref")
    renamed = _write(tmp_path, re.sub(r"\btau_s\b", name, CUBA), "renamed")
    for engine in ENGINES:
        a, b = _spikes(ref, engine), _spikes(renamed, engine)
        assert len(a) == 2 and a == b, (engine, name, a, b)


def test_every_internal_name_as_a_parameter(tmp_path):
    """All collected internal names at once: each is a dimensionless parameter (default 1) in
    every generated signature, multiplying the input jump (so each appears in the jump's code;
    the propagator is covered name by name above: a product of 100 symbols inside the rates
    makes the symbolic analysis minutes long), and the spikes must be those of CubaLIF itself
    on every CPU engine."""
    names = _accepted(_internal_names(tmp_path))
    assert {"D", "exp", "exprel", "x0", "w0"} & set(names) and len(names) > 100
    decl = "  ".join(f"{n} = 1" for n in names)
    prod = _balanced(names)  # a flat chain would be E005 (nested too deeply)
    text = CUBA.replace("v_reset = 0.0 }", f"v_reset = 0.0  {decl} }}")
    text = text.replace("on input(w) { i += w }", f"on input(w) {{ i += w * {prod} }}")
    many = _write(tmp_path, text, "many")
    ref = _write(tmp_path, CUBA, "ref")
    ir = load_model(many).neurons["CubaLIF"]
    assert all(p.symbol.name.startswith("p_") for p in ir.params)
    jumped = set().union(*(B.free_symbols for B in ir.ports.values()))
    assert {s.name for s in jumped} >= {"p_" + n for n in names}
    for engine in ENGINES:
        a, b = _spikes(ref, engine), _spikes(many, engine)
        assert len(a) == 2 and a == pytest.approx(b, rel=1e-12, abs=1e-12), engine
