"""The exact state trace of one neuron driven by weighted input events, as a matplotlib Figure:
the thresholded potential u = c.x with the threshold and every crossing (spike) marked at its
exact time, the other state variables, and the input events.

    fig = spikescan.plot_trace("models/cuba_lif.snn", "CubaLIF", times=[1, 2, 3], weights=[5, 5, 5])
    fig.savefig("trace.png")

`spikescan plot trace model.snn --neuron CubaLIF --times 1,2,3 --weights 5,5,5 -o trace.png`
is the same from the shell. The curve is `simulate(..., return_trace=True)`: the closed-form
state on a uniform grid (right limits, so resets show as drops), replayed through the engine's
spike times; the markers are the engine's spike times, not grid points.
"""

from __future__ import annotations

import math
from typing import Optional, Sequence

import torch

from spikescan.runtime.plots import pyplot


def _numbers(expr, subs: dict) -> float:
    return float(expr.subs(subs)) if hasattr(expr, "subs") else float(expr)


def trace_data(model, neuron: Optional[str] = None, times: Sequence[float] = (1.0, 2.0, 3.0),
               weights: Optional[Sequence[float]] = None, params: Optional[dict] = None,
               t_end: Optional[float] = None, points: int = 1001, port: Optional[str] = None) -> dict:
    """Everything the figure shows, as tensors: grid `t` [T], state `x` [T, d], potential `u` [T]
    (None without a threshold), threshold `theta`, `spikes` [k], input `times`, `weights`, names."""
    from spikescan.runtime.simulate import _resolve_ir, simulate

    ir = _resolve_ir(model, neuron)
    times = torch.as_tensor(list(times), dtype=torch.float64).reshape(-1)
    weights = torch.ones_like(times) if weights is None else torch.as_tensor(list(weights), dtype=torch.float64)
    if weights.shape != times.shape:
        raise ValueError(f"{len(times)} input times but {len(weights)} weights")
    res = simulate(ir, times=times, weights=weights, params=params, engine="torch", return_trace=True,
                   t_end=t_end, trace_points=points, port=port)
    subs = {p.symbol: float((params or {}).get(p.name, p.default)) for p in ir.params}
    x = res.trace_x
    u, theta = None, None
    if ir.c is not None:
        c = torch.tensor([_numbers(v, subs) for v in ir.c], dtype=x.dtype)
        u = x @ c
        theta = _numbers(ir.theta, subs) if ir.theta is not None else None
    spikes = res.times[: int(res.counts)]
    return dict(t=res.trace_t, x=x, u=u, theta=theta, spikes=spikes[torch.isfinite(spikes)], times=times,
                weights=weights, state=tuple(ir.state), neuron=ir.name)


def plot_trace(model, neuron: Optional[str] = None, times: Sequence[float] = (1.0, 2.0, 3.0),
               weights: Optional[Sequence[float]] = None, params: Optional[dict] = None,
               t_end: Optional[float] = None, points: int = 1001, port: Optional[str] = None):
    """A Figure of the exact trace of `neuron` (a name in the .snn file `model`, or a NeuronIR)
    for input events at `times` (ms) with `weights` (default 1 each); `params` override the
    neuron's parameters. Returns the matplotlib Figure (save it with fig.savefig)."""
    plt = pyplot()
    d = trace_data(model, neuron, times, weights, params, t_end, points, port)
    t = d["t"].numpy()
    others = [i for i, _ in enumerate(d["state"])]
    fig, axes = plt.subplots(2 + bool(others), 1, figsize=(8, 6.5), sharex=True,
                             gridspec_kw=dict(height_ratios=[3] + [2] * bool(others) + [1]))
    ax_u, ax_in = axes[0], axes[-1]
    n_sp = len(d["spikes"])
    if d["u"] is not None:  # grid values are right limits: a spike at a grid time sorts first
        tu, uu = t, d["u"].numpy()
        if d["theta"] is not None and n_sp:  # the left limits u(t_k-) = theta, exactly, into the curve
            import numpy as np

            tt = np.concatenate([d["spikes"].numpy(), tu])
            order = np.argsort(tt, kind="stable")
            tu, uu = tt[order], np.concatenate([np.full(n_sp, d["theta"]), uu])[order]
        ax_u.plot(tu, uu, color="C0", lw=1.4, label="u = c.x (thresholded potential)")
        if d["theta"] is not None:
            ax_u.axhline(d["theta"], color="C3", ls="--", lw=1, label=f"threshold {d['theta']:g}")
            if n_sp:
                ax_u.plot(d["spikes"].numpy(), [d["theta"]] * n_sp, "v", color="C3", ms=9,
                          label=f"crossings ({n_sp}): exact spike times")
        ax_u.set_ylabel("potential")
    else:
        ax_u.plot(t, d["x"][:, 0].numpy(), color="C0", label=d["state"][0])
        ax_u.set_ylabel(d["state"][0])
    for s in d["spikes"].tolist():
        for a in axes[:-1]:
            a.axvline(s, color="C3", alpha=0.25, lw=0.8)
    ax_u.set_title(f"{d['neuron']}: exact state trace, {n_sp} spike{'s' if n_sp != 1 else ''}")
    ax_u.legend(loc="upper right", fontsize=8)
    if others:
        a = axes[1]
        for i in others:
            a.plot(t, d["x"][:, i].numpy(), lw=1.2, label=d["state"][i], color=f"C{i + 1}")
        a.set_ylabel("state")
        a.legend(loc="upper right", fontsize=8)
    fin = torch.isfinite(d["times"])
    if bool(fin.any()):
        ax_in.stem(d["times"][fin].numpy(), d["weights"][fin].numpy(), basefmt="k-")
    ax_in.set_ylabel("input w")
    ax_in.set_xlabel("time (ms)")
    ax_in.set_xlim(float(t[0]), float(t[-1]) if len(t) and math.isfinite(float(t[-1])) else None)
    fig.tight_layout()
    return fig
