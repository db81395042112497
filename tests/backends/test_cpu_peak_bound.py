"""The event-outer forward's bound on interior maxima (compiler/backends/mlir/shared.py
_peak_below: max u <= u(0) + u'(0) D for chains of length 2 with a decaying first rate) only
spares the exact path where it finds no crossing: peaks grazing the threshold from both sides
give the same spikes, bit for bit, as the scalar event-outer loop and the per-neuron loop, and
the spike/no-spike split of the closed form."""


import pytest
import torch
from test_cpu_vector import neuron, per_neuron, shared_direct

F64 = torch.float64
# CubaLIF (tau_m 20, tau_s 5, theta 1) from rest after one input w: v = (w / 3)(e^{-t/20} - e^{-t/5}),
# peak at t = ln 4 / 0.15 of w * (4^{-1/3} - 4^{-4/3}) / 3
PEAK_PER_W = (4.0 ** (-1.0 / 3.0) - 4.0 ** (-4.0 / 3.0)) / 3.0


def grazing_inputs(B=2, probes=60, gap=0.5):
    """Channel 0 at t = 0 (weights around the critical one), then zero-weight probes on channel 1
    every `gap` ms: many intervals with the maximum of v inside, just below or above theta."""
    w_c = 1.0 / PEAK_PER_W
    rel = torch.cat([torch.linspace(-1e-2, 1e-2, 41, dtype=F64), torch.tensor([-1e-6, -1e-9, 1e-9, 1e-6], dtype=F64)])
    W = torch.zeros((2, rel.numel()), dtype=F64)
    W[0] = w_c * (1.0 + rel)
    n = probes + 1
    times = torch.arange(n, dtype=F64).mul(gap).expand(B, n).clone()
    times[1] += 0.013  # another phase of the probes against the peak time
    ch = torch.ones((B, n), dtype=torch.int64)
    ch[:, 0] = 0
    return times, ch, W, rel


@pytest.mark.parametrize("gap", [0.5, 2.9])
def test_grazing_peaks_same_bits_as_exact_paths(gap, monkeypatch):
    nir = neuron("CubaLIF")
    times, ch, W, rel = grazing_inputs(gap=gap)
    vec = shared_direct(nir, times, ch, W, "vector")
    sca = shared_direct(nir, times, ch, W, "scalar")
    assert torch.equal(vec[0], sca[0]) and torch.equal(vec[1], sca[1])
    ref = per_neuron(nir, times, ch, W, monkeypatch)
    S = ref.times.shape[2]
    assert torch.equal(vec[0][:, :, :S], ref.times) and torch.equal(vec[1], ref.counts)
    # the closed form: a neuron spikes iff its peak reaches theta (margins >= 1e-9 relative)
    spikes = vec[1][0] > 0
    assert torch.equal(spikes, rel > 0)
