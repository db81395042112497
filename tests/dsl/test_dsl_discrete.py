"""Discrete-time (psn) declarations and networks: the diagnostics beyond the one fixture per
code (tests/dsl/fixtures/E054-E058.snn), and what checks clean."""

from pathlib import Path

import pytest

import spikescan.dsl as dsl

FIXTURES = Path(__file__).parent / "fixtures"

NET = """{decl}
network n {{
    input  x[5]
    {grid}
    layer  h[4] = {hidden} <- {conn}
    layer  out[3] = P() <- dense(h)
    readout out: {readout}
}}
"""


def _codes(decl="neuron P = psn()", grid="time_bins = 8", hidden="P()", conn="dense(x)", readout="spike_count",
           extra=""):
    src = 'from "lib/base.snn" import CubaLIF\n' + extra + NET.format(decl=decl, grid=grid, hidden=hidden, conn=conn,
                                                                       readout=readout)
    _, diags = dsl.check_source(src, str(FIXTURES / "discrete_inline.snn"))
    return [d.code for d in diags]


def test_clean_network_checks():
    assert _codes() == []
    assert _codes(decl="neuron P = masked_psn(T = 8, k = 8, surrogate = sigmoid(alpha = 1.5))") == []
    assert _codes(decl="neuron P = sliding_psn(k = 3, surrogate = atan)", grid="time_bins = 0.5 ms") == []
    assert _codes(readout="max_potential") == []


@pytest.mark.parametrize("decl", [
    "neuron P = lif_psn(T = 8)",                    # unknown kind
    "neuron P = masked_psn(T = 8)",                 # missing k
    "neuron P = masked_psn(T = 4, k = 5)",          # k > T
    "neuron P = psn(T = 2.5)",                      # not an integer
    "neuron P = psn(T = 8 ms)",                     # not dimensionless
    "neuron P = psn(T = 8, tau = 2 ms)",            # unknown argument
    "neuron P = sliding_psn(k = 2, surrogate = atan(alpha = -1))",
    "neuron P = psn(T = 5000)",                     # over MAX_BINS
])
def test_bad_declarations_are_E054(decl):
    assert "E054" in _codes(decl=decl)


@pytest.mark.parametrize("grid", ["time_bins = 0", "time_bins = -1 ms", "time_bin = 8",
                                  "time_bins = 8  time_bins = 8", "time_bins = 2.5"])
def test_bad_grids_are_E055(grid):
    assert _codes(grid=grid) == ["E055"]


def test_grid_without_discrete_layers_is_E055():
    src = ('from "lib/base.snn" import CubaLIF\nnetwork n { input x[2] time_bins = 1 ms '
           "layer o[2] = CubaLIF() <- dense(x) readout o: first_spike }")
    _, diags = dsl.check_source(src, str(FIXTURES / "discrete_inline.snn"))
    assert [d.code for d in diags] == ["E055"]


def test_bridge_from_exact_to_discrete_is_E056():
    assert _codes(hidden="CubaLIF()") == ["E056"]


def test_recurrent_and_overrides_on_discrete_layers_are_E058():
    assert _codes(conn="dense(x), recurrent(h)") == ["E058"]
    assert _codes(conn="dense(x, port = input)") == ["E058"]
    assert _codes(hidden="P(T = 4)") == ["E058"]


def test_first_spike_readout_of_a_discrete_layer_is_E048():
    assert _codes(readout="first_spike") == ["E048"]


def test_name_clash_with_a_neuron_is_E011():
    assert _codes(decl="neuron P = psn()\nneuron CubaLIF = psn()") == ["E011"]


def test_mismatched_T_is_E057():
    assert _codes(decl="neuron P = psn(T = 9)") == ["E057", "E057"]  # both layers use P
