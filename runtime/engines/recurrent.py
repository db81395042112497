"""Exact event-driven simulation of a layer with a recurrent connection (all-to-all, zero delay).

Each output spike of neuron j at t* is an input event of weight w_rec[j, k] on the layer's port
to every neuron k of the same sample, arriving at t* after the reset of j. Because a spike can
change every neuron's future, the layer is simulated one event per sample per step (vectorised
over the batch and neurons), with the same kernels and solver as engine "torch-sequential":

  per step and sample, with T = the time of the next due event (a pending recurrent event, else
  the earliest external arrival), solve every neuron's first crossing in [t_cur, T]; then
  1. if some neuron crosses: the earliest one(s) spike (reset, record) and their recurrent
     events become pending at t*;
  2. else if a recurrent event is pending: deliver it (lowest neuron index first) to all neurons;
  3. else: deliver the next external event to the lanes whose next arrival is T.

Ordering at equal times (docs/engines.md): a crossing at time t comes before any input at t;
pending recurrent events at t come before external inputs at t; simultaneous recurrent events
are delivered one at a time in neuron order, the threshold being checked after each jump.
Autograd flows to weight, w_rec, params and input times; spike times through SpikeTime (IFT).
"""

from __future__ import annotations

import math
from typing import Optional

import torch

from spikescan.compiler.ir import NeuronIR
from spikescan.runtime.engines.common import SpikeRecord, fire, lane_params, no_cross_safe, setup
from spikescan.runtime.engines.observe import Observer
from spikescan.runtime.engines.result import LayerResult
from spikescan.runtime.engines.spike_time import first_crossing
from spikescan.runtime.events import LayerEvents
from spikescan.runtime.kernels import densify

Tensor = torch.Tensor


def _jump(Bvec: list, lanes: Tensor, N: int, w: Tensor) -> list:
    """Per-lane jump vectors B * w for flat lanes `lanes` (B entries: None, float, 0-d or [N])."""
    out = []
    for bv in Bvec:
        if bv is None:
            out.append(None)
        elif torch.is_tensor(bv) and bv.dim() > 0:
            out.append(bv[lanes % N] * w)
        else:
            out.append(bv * w)
    return out


def _arrival(ev: LayerEvents, lanes: Tensor, p: Tensor, N: int) -> tuple[Tensor, Tensor]:
    """(time with grad, weight) of arrival number p of each flat lane, as LayerEvents.slice gives
    them: delays added, the virtual horizon event at t_end with weight 0."""
    b, j = lanes // N, lanes % N
    idx = ev.perm[b, 0 if ev.shared else j, p]
    real = idx < ev.n
    ch = ev.ch_ext[b, idx]
    t = ev.times_ext[b, idx]
    w = ev.weight[ch, j] if ev.weight.dim() == 2 else ev.weight[b, ch, j]
    if ev.delays is not None:
        t = t + torch.where(real, ev.delays[ch, j], torch.zeros_like(t))
    hz = ev.t_end[b, 0 if ev.shared else j].to(t.dtype)
    return torch.where(real, t, hz), torch.where(real, w, torch.zeros_like(w))


def run_recurrent_layer(ir: NeuronIR, params, times: Tensor, channels: Tensor, weight: Tensor, w_rec: Tensor,
                        delays: Optional[Tensor] = None, *, port: Optional[str] = None, max_spikes: int = 64,
                        on_overflow: str = "raise", observe: Optional[str] = None,
                        t_end: Optional[float] = None) -> LayerResult:
    lay = setup(ir, params, times, channels, weight, delays, port, t_end, observe, on_overflow, max_spikes)
    kern, P, ev, B, N = lay.kern, lay.P, lay.ev, lay.B, lay.N
    if lay.Bvec is None:  # a PortMap (runtime/engines/ports.py)
        from spikescan.runtime.engines.ports import refuse

        refuse("recurrent", instead="the recurrent-group loop (runtime/engines/recurrent_group.py), which SpikingNetwork uses for such layers")
    if not kern.spiking:
        raise ValueError(f"neuron {ir.name!r} has no threshold: a recurrent connection needs a spiking neuron")
    if w_rec.shape != (N, N):
        raise ValueError(f"w_rec must be [N, N] = [{N}, {N}], got {tuple(w_rec.shape)}")
    L = B * N
    dev, dt = lay.device, lay.dtype
    w_rec = w_rec.to(dt)
    rec = SpikeRecord(B, N, max_spikes, on_overflow, dev)
    obs = Observer(kern, observe, P, B, N, dt, dev)
    Pl_all = lane_params(P, torch.arange(L, device=dev) % N)
    theta_all = kern.theta(Pl_all)

    # Lanes walk their sorted arrivals with a pointer; arrivals are looked up per step (never a
    # [B*N, n] copy). n_valid: arrivals (incl. the horizon) each lane must take.
    K = ev.length
    lane_b = torch.arange(L, device=dev) // N
    lane_r = torch.zeros(L, dtype=torch.long, device=dev) if ev.shared else torch.arange(L, device=dev) % N
    n_valid = torch.isfinite(ev.key).sum(-1)[lane_b, lane_r]
    ptr = torch.zeros(L, dtype=torch.long, device=dev)

    x = [v.reshape(L) for v in lay.x0]
    t_cur = torch.zeros(L, dtype=dt, device=dev)
    ref_end = torch.full((L,), -math.inf, dtype=dt, device=dev)
    spk_t = torch.zeros(L, dtype=dt, device=dev)  # last spike time of each lane (with grad)
    pending = torch.zeros(B, N, dtype=torch.bool, device=dev)
    t_pend = torch.full((B,), math.inf, dtype=dt, device=dev)  # detached time of pending events
    inf_l = torch.full((L,), math.inf, dtype=dt, device=dev)
    arangeN = torch.arange(N, device=dev)

    def deliver(lanes: Tensor, t_to: Tensor, w: Tensor):
        nonlocal x, t_cur
        gap = t_to - t_cur[lanes]
        xl = [v[lanes] for v in x]
        if obs.kind is not None:
            obs.add(lanes, [v[:, None] for v in xl], gap[:, None], torch.ones_like(gap[:, None], dtype=torch.bool))
        xn = densify(kern.propagate(gap, xl, lane_params(P, lanes % N)), gap)
        xn = [v if bv is None else v + bv for v, bv in zip(xn, _jump(lay.Bvec, lanes, N, w))]
        x = [v.index_put((lanes,), r) for v, r in zip(x, xn)]
        t_cur = t_cur.index_put((lanes,), t_to)

    while True:
        done = ptr >= n_valid
        pend_b = pending.any(1)
        if not bool((~done).any() or pend_b.any()):
            break
        te_key = torch.where(done, inf_l, ev.key[lane_b, lane_r, ptr.clamp(max=K - 1)])
        e_b = te_key.view(B, N).min(1).values
        T_b = torch.where(pend_b, t_pend, e_b)
        T_l = T_b.repeat_interleave(N)
        # 1. earliest crossing of every lane before the next due event of its sample.
        cand = inf_l.clone()
        D_l = inf_l.clone()
        tc = t_cur.detach()
        lo = (ref_end.detach() - tc).clamp(min=0)
        hi = T_l - tc
        chk = ~done & ~rec.dead & torch.isfinite(T_l) & ~pending.view(L) & ((lo < hi) | (lo <= 0))
        safe = no_cross_safe(kern, [v.detach() for v in x], Pl_all, theta_all)
        if safe is not None:
            chk = chk & ~safe
        ci = chk.nonzero().squeeze(1)
        if ci.numel():
            Pc = lane_params(P, ci % N)
            D = first_crossing(kern, [v[ci].detach() for v in x], Pc, lo[ci], hi[ci], tc[ci])
            D_l = D_l.index_put((ci,), D)
            cand = cand.index_put((ci,), tc[ci] + D)
        s_b = cand.view(B, N).min(1).values
        act_spike = torch.isfinite(s_b)
        if bool(act_spike.any()):
            sl = (cand.view(B, N) == s_b[:, None]) & act_spike[:, None]
            si = sl.view(L).nonzero().squeeze(1)
            Ps = lane_params(P, si % N)
            xs = [v[si] for v in x]
            lo_s = (ref_end[si] - t_cur[si]).clamp(min=0)
            D_found = D_l[si]
            x, t_cur, ref_end, tstar, keep = fire(kern, obs, rec, si, xs, Ps, lo_s, D_found, x, t_cur, ref_end)
            spk_t = spk_t.index_put((si,), tstar)
            # A spike dropped at the cap (on_overflow="flag") sends no recurrent event.
            sk = si[keep]
            pending = pending.view(L).index_put((sk,), torch.ones_like(sk, dtype=torch.bool)).view(B, N)
            t_pend = torch.where(act_spike, s_b, t_pend)
        # 2. deliver one pending recurrent event per sample (lowest neuron index first).
        act_pend = ~act_spike & pend_b
        if bool(act_pend.any()):
            bs = act_pend.nonzero().squeeze(1)
            j = torch.where(pending[bs], arangeN, N).min(1).values  # first pending neuron
            src = bs * N + j
            # Lanes past their horizon (per-lane with delays) take no more events.
            live = ~done.view(B, N)[bs]
            lanes = (bs[:, None] * N + arangeN)[live]
            t_to = spk_t[src][:, None].expand(-1, N)[live]
            deliver(lanes, t_to, w_rec[j][live])
            pending = pending.index_put((bs, j), torch.zeros_like(j, dtype=torch.bool))
            t_pend = torch.where(pending.any(1), t_pend, torch.full_like(t_pend, math.inf))
        # 3. deliver the next external event to the lanes whose next arrival is due.
        act_ext = ~act_spike & ~pend_b
        if bool(act_ext.any()):
            due = ~done & (te_key == T_l) & act_ext.repeat_interleave(N)
            lanes = due.nonzero().squeeze(1)
            if lanes.numel():
                p = ptr[lanes]
                deliver(lanes, *_arrival(ev, lanes, p, N))
                ptr = ptr.index_put((lanes,), p + 1)
    return rec.result(dt, dev, obs.result())
