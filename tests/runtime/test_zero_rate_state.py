"""`dx/dt = 0` (docs/language.md: keeps x constant between events) checks and simulates: a
state that only changes at jumps (issue 17 item 6.3: it used to be refused with E031)."""

from __future__ import annotations

import math

import pytest
import torch

import spikescan
import spikescan.dsl as dsl
from spikescan.compiler.driver import load_model

torch.set_num_threads(1)

# c is a drive that only jumps (inputs add w, spikes keep it); v relaxes to c with tau.
SRC = """neuron Held {
    params { tau = 10 ms   v_th = 1.0 }
    state  { v = 0.0   c = 0.0 }
    dynamics {
        dv/dt = (c - v) / tau
        dc/dt = 0
    }
    on input(w) { c += w }
    spike when v >= v_th
    on spike { v = 0 }
}
"""


def test_zero_rate_checks_clean():
    _, diags = dsl.check_source(SRC, "<string>")
    assert diags == []


@pytest.mark.parametrize("engine", ["sequential-cpu", "torch", "torch-sequential"])
def test_zero_rate_state_against_closed_form(tmp_path, engine):
    p = tmp_path / "held.snn"
    p.write_text(SRC)
    ir = load_model(str(p)).neurons["Held"]
    # one input of weight c at t0: v(t) = c (1 - exp(-(t - t0)/tau)) from v = 0, c constant,
    # so the neuron fires every tau ln(c / (c - v_th)) after t0, forever (c is never reset)
    t0, c, tau, t_end = 1.0, 2.0, 10.0, 40.0
    period = tau * math.log(c / (c - 1.0))
    expect = [t0 + k * period for k in range(1, 10) if t0 + k * period <= t_end]
    res = spikescan.simulate(ir, None, torch.tensor([[t0]], dtype=torch.float64),
                             torch.tensor([[c]], dtype=torch.float64), engine=engine, t_end=t_end,
                             return_trace=True)
    got = res.times[0][: int(res.counts[0])].tolist()
    assert len(got) == len(expect) == 5
    assert all(abs(a - b) < 1e-10 for a, b in zip(got, expect)), (got, expect)
    ci = res.state_names.index("c")
    cs = res.trace_x[0, :, ci]
    after = res.trace_t[0] > t0
    assert torch.all(cs[after] == c) and torch.all(cs[res.trace_t[0] < t0] == 0)
