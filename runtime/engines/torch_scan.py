"""Engine "torch": the chunked speculative scan with restart (DESIGN.md section 4), in PyTorch
with autograd.

Per chunk of K events (one shared sorted order per sample without delays, per-neuron
permutations with delays):

1. No-spike trajectory X of the chunk from the true chunk-start state, all events at once:
   Hillis-Steele prefix over the affine event maps. The matrix part of a composition is just
   Phi(t_k - t_m) (Phi is a matrix exponential), so only offsets are scanned: log2(K) steps, each
   one propagator evaluation on the shared [B, 1, K] gaps and a sparse mat-vec. This is the
   reset-invariant work, done once per chunk outside the restart loop.
2. Restart loop over the lanes (neuron x sample) still live in the chunk. By linearity, after
   resets the true state is X(t) + Phi(t - t_last) delta, with delta the jump of the last reset
   relative to X; so every interval's true start state comes from X in one vectorised step.
   Crossing test for all intervals at once (the IR's cheap no-crossing rows, then the exact
   solver on the flagged ones only), take the first crossing, solve t*, reset, record, restart
   from t*. A lane without a crossing has consumed the whole chunk and leaves the loop.

Sequential steps: about (#chunks + max spikes of a lane per chunk) per chunk, not n.
"""

from __future__ import annotations

from typing import Optional

import torch

from spikescan.compiler.ir import NeuronIR
from spikescan.runtime.engines.common import SpikeRecord, col, lane_params, no_cross_safe, setup
from spikescan.runtime.engines.observe import Observer
from spikescan.runtime.engines.result import LayerResult
from spikescan.runtime.engines.spike_time import first_crossing, spike_offset
from spikescan.runtime.kernels import densify, matvec, vadd

Tensor = torch.Tensor


def _scan_chunk(kern, t, T0, x0, w, Bvec, PK, N):
    """No-spike states right after each event of the chunk: d tensors [B, N, K]."""
    B, Nd, K = t.shape
    like = torch.zeros(B, N, K, dtype=t.dtype, device=t.device)
    ts = torch.cat([T0.unsqueeze(-1), t[..., :-1]], -1)
    gap = t - ts
    phi = kern.phi(gap, PK)
    e = [None if (bv is None and ph is None) else
         (ph if bv is None else (bv * w if ph is None else ph + bv * w)) for bv, ph in zip(Bvec, phi)]
    b = densify(e, like)
    o = 1
    while o < K:
        Phi_o = kern.Phi(t[..., o:] - t[..., :-o], PK)
        add = matvec(Phi_o, [bc[..., :-o] for bc in b])
        b = [bc if ad is None else torch.cat([bc[..., :o], bc[..., o:] + ad], -1) for bc, ad in zip(b, add)]
        o *= 2
    Phi0 = kern.Phi(t - T0.unsqueeze(-1), PK)
    X = vadd(b, matvec(Phi0, [xc.unsqueeze(-1) for xc in x0]))
    return densify(X, like), ts, gap


def run_layer(ir: NeuronIR, params, times: Tensor, channels: Tensor, weight: Tensor,
              delays: Optional[Tensor] = None, *, port: Optional[str] = None, chunk: int = 128,
              max_spikes: int = 64, on_overflow: str = "raise", observe: Optional[str] = None,
              t_end: Optional[float] = None) -> LayerResult:
    if chunk < 1:
        raise ValueError("chunk must be >= 1")
    lay = setup(ir, params, times, channels, weight, delays, port, t_end, observe, on_overflow, max_spikes)
    kern, P, ev, B, N = lay.kern, lay.P, lay.ev, lay.B, lay.N
    d = kern.d
    L = B * N
    dev = lay.device
    PK = col(P)
    rec = SpikeRecord(B, N, max_spikes, on_overflow, dev)
    obs = Observer(kern, observe, P, B, N, lay.dtype, dev)
    spiking = kern.spiking
    t_ref_all = kern.t_ref(P)
    x = lay.x0  # true state at T0, d tensors [B, N]
    T0 = torch.zeros(B, ev.perm.shape[1], dtype=lay.dtype, device=dev)
    ref_end = torch.full((L,), -float("inf"), dtype=lay.dtype, device=dev)
    all_lanes = torch.arange(L, device=dev)
    n_ext = ev.length
    for s in range(0, n_ext, chunk):
        e_ = min(s + chunk, n_ext)
        t, valid, w = ev.slice(s, e_)
        K = e_ - s
        X, ts, gap = _scan_chunk(kern, t, T0, x, w, lay.Bvec, PK, N)
        Xf = [v.reshape(L, K) for v in X]
        Xs = [torch.cat([xc.reshape(L, 1), v[:, :-1]], 1) for xc, v in zip(x, Xf)]
        tsf = ts.expand(B, N, K).reshape(L, K)
        tef = t.expand(B, N, K).reshape(L, K)
        validf = valid.expand(B, N, K).reshape(L, K)
        x_end = [v[:, -1] for v in Xf]
        if not spiking:
            obs.add(all_lanes, Xs, tef - tsf, validf)
            x = [v.reshape(B, N) for v in x_end]
            T0 = t[..., -1]
            continue
        fin_lanes, fin_states = [], []
        # live lanes: index into [L], current interval p, current (t, x), last reset (t, delta)
        idx = all_lanes[~rec.dead]
        p = torch.zeros_like(idx)
        t_cur = tsf[idx, 0]
        x_cur = [v[idx, 0] for v in Xs]
        delta = None
        t_last = t_cur
        kk = torch.arange(K, device=dev)
        while idx.numel():
            M = idx.numel()
            Pl = lane_params(P, idx % N)
            Plk = col(Pl)
            Xs_a = [v[idx] for v in Xs]
            ts_a, te_a, val_a = tsf[idx], tef[idx], validf[idx]
            at_p = kk[None, :] == p[:, None]
            if delta is None:
                start = Xs_a
            else:
                Phi_d = kern.Phi((ts_a - t_last[:, None]).clamp(min=0), Plk)
                start = densify(vadd(Xs_a, matvec(Phi_d, [dc[:, None] for dc in delta])), ts_a)
            start = [torch.where(at_p, xc[:, None], sc) for xc, sc in zip(x_cur, start)]
            st_time = torch.where(at_p, t_cur[:, None], ts_a)
            ref_a = ref_end[idx]
            lo = (ref_a[:, None] - st_time).clamp(min=0)
            hi = te_a - st_time
            ok = val_a & (kk[None, :] >= p[:, None]) & ((lo < hi) | (lo <= 0))
            theta = kern.theta(Plk)
            safe = no_cross_safe(kern, [v.detach() for v in start], Plk, theta)
            cand = ok if safe is None else ok & ~safe
            mi, ki = cand.nonzero(as_tuple=True)
            Dfull = torch.full((M, K), float("inf"), dtype=lay.dtype, device=dev)
            if mi.numel():
                D = first_crossing(kern, [v[mi, ki].detach() for v in start], lane_params(Pl, mi),
                                   lo[mi, ki].detach(), hi[mi, ki].detach(), st_time[mi, ki].detach())
                Dfull = Dfull.index_put((mi, ki), D)
            cross = torch.isfinite(Dfull)
            has = cross.any(1)
            kstar = torch.where(has, cross.to(torch.int8).argmax(1), torch.full_like(p, K - 1))
            # segments that are final now (for observe): intervals p..k*, the last one up to t*
            if obs.kind is not None:
                seg_len = hi.clone()
                Dk = Dfull.gather(1, kstar[:, None]).squeeze(1)
                seg_len = torch.where((kk[None, :] == kstar[:, None]) & has[:, None],
                                      torch.where(torch.isfinite(Dk), Dk, torch.zeros_like(Dk))[:, None], seg_len)
                seg_mask = val_a & (kk[None, :] >= p[:, None]) & (kk[None, :] <= kstar[:, None])
                obs.add(idx, start, seg_len, seg_mask)
            # lanes without a crossing consumed the chunk
            done = ~has
            if bool(done.any()):
                di = done.nonzero().squeeze(1)
                if delta is None:
                    xe = [v[idx[di]] for v in x_end]
                else:
                    Phi_e = kern.Phi((te_a[di, -1] - t_last[di]).clamp(min=0), lane_params(Pl, di))
                    xe = densify(vadd([v[idx[di]] for v in x_end],
                                      matvec(Phi_e, [dc[di] for dc in delta])), t_last[di])
                fin_lanes.append(idx[di])
                fin_states.append(xe)
            if not bool(has.any()):
                break
            si = has.nonzero().squeeze(1)
            ks = kstar[si]
            Ps = lane_params(Pl, si)
            xs = [v[si, ks] for v in start]
            lo_s = lo[si, ks]
            D_found = Dfull[si, ks]
            imm = D_found == lo_s.detach()
            Dg = torch.where(imm, lo_s, spike_offset(kern, D_found, xs, Ps))
            tstar = st_time[si, ks] + Dg
            xm = densify(kern.propagate(Dg, xs, Ps), Dg)
            xr = densify(kern.reset(xm, Ps), Dg)
            lanes = idx[si]
            keep = rec.add(lanes, tstar)
            new_delta = [a - b for a, b in zip(xr, xm)]
            if delta is not None:
                Phi_s = kern.Phi((tstar - t_last[si]).clamp(min=0), Ps)
                new_delta = densify(vadd(new_delta, matvec(Phi_s, [dc[si] for dc in delta])), Dg)
            tr = kern.t_ref(Ps)
            ref_end = ref_end.index_put((lanes,), tstar + (0.0 if tr is None else tr))
            if not bool(keep.all()):  # capped lanes (flag mode) stop here
                ki_ = keep.nonzero().squeeze(1)
                si, ks, tstar, lanes = si[ki_], ks[ki_], tstar[ki_], lanes[ki_]
                xr = [v[ki_] for v in xr]
                new_delta = [v[ki_] for v in new_delta]
            idx, p, t_cur, t_last = lanes, ks, tstar, tstar
            x_cur, delta = xr, new_delta
        # the next chunk starts from the true state after this chunk's last event
        xe_flat = [v for v in x_end]
        if fin_lanes:
            fl = torch.cat(fin_lanes)
            xe_flat = [v.index_put((fl,), torch.cat([fs[c] for fs in fin_states]))
                       for c, v in enumerate(xe_flat)]
        x = [v.reshape(B, N) for v in xe_flat]
        T0 = t[..., -1]
    return rec.result(lay.dtype, dev, obs.result())
