"""Engine "torch-sequential": the exact reference, one event at a time, vectorised over
batch x neurons, autograd-native. Same formulas and solver as the scan engine, none of its
speculation: for every event, spike (possibly several times) in the interval before it, then
propagate to the event and apply its jump."""

from __future__ import annotations

from typing import Optional

import torch

from spikescan.compiler.ir import NeuronIR
from spikescan.runtime.engines.common import SpikeRecord, fire, lane_params, no_cross_safe, setup
from spikescan.runtime.engines.observe import Observer
from spikescan.runtime.engines.ports import apply_jump, event_ports, is_multi, jump_vectors
from spikescan.runtime.engines.result import LayerResult
from spikescan.runtime.engines.spike_time import first_crossing
from spikescan.runtime.kernels import densify

Tensor = torch.Tensor


def run_layer(ir: NeuronIR, params, times: Tensor, channels: Tensor, weight: Tensor,
              delays: Optional[Tensor] = None, *, port=None, chunk: int = 128,
              max_spikes: int = 64, on_overflow: str = "raise", observe: Optional[str] = None,
              t_end: Optional[float] = None) -> LayerResult:
    del chunk  # no chunks here
    lay = setup(ir, params, times, channels, weight, delays, port, t_end, observe, on_overflow, max_spikes)
    kern, P, ev, B, N = lay.kern, lay.P, lay.ev, lay.B, lay.N
    L = B * N
    dev, dt = lay.device, lay.dtype
    rec = SpikeRecord(B, N, max_spikes, on_overflow, dev)
    obs = Observer(kern, observe, P, B, N, dt, dev)
    Pl_all = lane_params(P, torch.arange(L, device=dev) % N)
    x = [v.reshape(L) for v in lay.x0]
    t_cur = torch.zeros(L, dtype=dt, device=dev)
    ref_end = torch.full((L,), -float("inf"), dtype=dt, device=dev)
    all_lanes = torch.arange(L, device=dev)
    for k in range(ev.length):
        t, valid, w = ev.slice(k, k + 1)
        at_hz = ev.at_horizon(k, k + 1).expand(B, N, 1).reshape(L)
        te = t.expand(B, N, 1).reshape(L)
        val = valid.expand(B, N, 1).reshape(L)
        wl = w.reshape(L)
        if kern.spiking:
            chk = val & ~rec.dead
            while bool(chk.any()):
                lo = (ref_end - t_cur).clamp(min=0)
                hi = te - t_cur
                ok = chk & ((lo < hi) | (lo <= 0) | (at_hz & (lo <= hi)))
                safe = no_cross_safe(kern, [v.detach() for v in x], Pl_all, kern.theta(Pl_all))
                cand = ok if safe is None else ok & ~safe
                ci = cand.nonzero().squeeze(1)
                if ci.numel() == 0:
                    break
                Pc = tuple(p if p.dim() == 0 else p[ci] for p in Pl_all)
                D = first_crossing(kern, [v[ci].detach() for v in x], Pc, lo[ci].detach(), hi[ci].detach(),
                                   t_cur[ci].detach())
                hit = torch.isfinite(D)
                if not bool(hit.any()):
                    break
                si = ci[hit]
                Ps = tuple(p if p.dim() == 0 else p[si] for p in Pl_all)
                xs = [v[si] for v in x]
                lo_s = lo[si]
                D_found = D[hit]
                x, t_cur, ref_end, tstar, keep = fire(kern, obs, rec, si, xs, Ps, lo_s, D_found, x, t_cur, ref_end)
                chk = torch.zeros_like(chk).index_put((si[keep],), torch.ones_like(si[keep], dtype=torch.bool))
        gap = te - t_cur
        if obs.kind is not None:
            obs.add(all_lanes, [v[:, None] for v in x], gap[:, None], val[:, None])
        x = densify(kern.propagate(gap, x, Pl_all), te)
        if is_multi(lay.port):  # each event's own port (PortMap)
            pe = event_ports(ev, lay.port, k, k + 1).expand(B, N, 1).reshape(L)
            x = apply_jump(x, jump_vectors(kern, lay.port, Pl_all, pe, dt), wl)
        else:
            x = [v if bv is None else v + bv * wl for v, bv in zip(x, lay.Bvec)]
        t_cur = te
    return rec.result(dt, dev, obs.result())
