"""The analysis of models/*.snn equals the matrices written by hand in tests/mpref.py (an
independent reading of the same .snn semantics), up to the state order."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from spikescan.compiler.driver import load_model
from spikescan.compiler.numeric import ir_numeric

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
mpref = pytest.importorskip("mpref")

FILES = {"LIF": "lif.snn", "CubaLIF": "cuba_lif.snn", "AlphaLIF": "alpha_lif.snn", "AdaptiveLIF": "adaptive_lif.snn"}
HAND_ORDER = {"LIF": ("v",), "CubaLIF": ("v", "i"), "AlphaLIF": ("v", "i", "g"), "AdaptiveLIF": ("v", "i", "a")}


@pytest.mark.parametrize("name", list(FILES))
def test_ir_matches_hand_written_model(name, models_dir):
    ir = load_model(models_dir / FILES[name]).neurons[name]
    perm = [ir.state.index(s) for s in HAND_ORDER[name]]
    rng = np.random.default_rng(11)
    for _ in range(3):
        params = {p.name: (rng.uniform(1, 60) if p.dim == 1 else rng.uniform(-1, 1)) for p in ir.params}
        num = ir_numeric(ir, params)
        hand = mpref.HAND_MODELS[name](params)
        f = lambda m: np.array(m.tolist() if hasattr(m, "tolist") else m, dtype=float)  # noqa: E731
        np.testing.assert_allclose(num.A[np.ix_(perm, perm)], f(hand["A"]), rtol=1e-15)
        np.testing.assert_allclose(num.a0.reshape(-1)[perm], f(hand["a0"]).reshape(-1), atol=0)
        np.testing.assert_allclose(num.B["input"].reshape(-1)[perm], f(hand["B"]).reshape(-1), atol=0)
        np.testing.assert_allclose(num.c.reshape(-1)[perm], f(hand["c"]).reshape(-1), atol=0)
        assert num.theta == float(hand["theta"])
        np.testing.assert_allclose(num.R[np.ix_(perm, perm)], f(hand["R"]), atol=0)
        np.testing.assert_allclose(num.r.reshape(-1)[perm], f(hand["r"]).reshape(-1), rtol=1e-15)
        assert num.t_ref == float(hand["t_ref"])
        np.testing.assert_allclose(num.init.reshape(-1)[perm], f(hand["x0"]).reshape(-1), atol=0)
