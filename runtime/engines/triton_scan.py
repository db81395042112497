"""Engine "triton-scan": the generated chunked associative scan with restart (DESIGN.md
section 4) as Triton kernels; see runtime/engines/triton_engine.py."""

from __future__ import annotations

from .triton_engine import run_layer as _run


def run_layer(ir, params, times, channels, weight, delays=None, *, port=None, chunk=128,
              max_spikes=64, on_overflow="raise", observe=None, t_end=None):
    return _run(ir, params, times, channels, weight, delays, port=port, chunk=chunk,
                max_spikes=max_spikes, on_overflow=on_overflow, observe=observe, t_end=t_end,
                mode="scan")
