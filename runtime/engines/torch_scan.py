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
from spikescan.runtime.engines.spike_time import crossing_bracket, solve_bracketed, spike_offset
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


def _take(T: Tensor, lanes: Tensor, k: Tensor, N: int) -> Tensor:
    """T[b, n, k] for flat lanes (b*N + n) from a [B, Nd, K] tensor (Nd = 1: shared order)."""
    if T.shape[1] == 1:
        return T[lanes // N, 0, k]
    return T[lanes // N, lanes % N, k]


def _rows(T: Tensor, lanes: Tensor, N: int) -> Tensor:
    """T[b, n, :] for flat lanes from a [B, Nd, K] tensor."""
    if T.shape[1] == 1:
        return T[:, 0][lanes // N]
    return T.reshape(-1, T.shape[-1])[lanes]


def _plus(a, b):
    return a if b is None else (b if a is None else a + b)


def _propagate_delta(kern, dt, delta, Pk):
    """Phi(dt) delta for a reset jump delta (entries None outside kern.delta_support)."""
    if delta is None:
        return None
    return matvec(kern.PhiS(dt, Pk), delta)


def run_layer(ir: NeuronIR, params, times: Tensor, channels: Tensor, weight: Tensor,
              delays: Optional[Tensor] = None, *, port: Optional[str] = None, chunk: int = 128,
              max_spikes: int = 64, on_overflow: str = "raise", observe: Optional[str] = None,
              t_end: Optional[float] = None) -> LayerResult:
    if chunk < 1:
        raise ValueError("chunk must be >= 1")
    lay = setup(ir, params, times, channels, weight, delays, port, t_end, observe, on_overflow, max_spikes)
    kern, P, ev, B, N = lay.kern, lay.P, lay.ev, lay.B, lay.N
    P = kern.constants(P)
    L = B * N
    dev = lay.device
    PK = col(P)
    rec = SpikeRecord(B, N, max_spikes, on_overflow, dev)
    obs = Observer(kern, observe, P, B, N, lay.dtype, dev)
    spiking = kern.spiking
    # With no refractory period the threshold is never disabled: lo = 0 everywhere, and no
    # refractory bookkeeping (nor its autograd graph) is needed.
    t_ref_all = kern.t_ref(P) if spiking else None
    refractory = t_ref_all is not None
    x = lay.x0  # true state at T0, d tensors [B, N]
    T0 = torch.zeros(B, ev.perm.shape[1], dtype=lay.dtype, device=dev)
    ref_end = torch.full((L,), -float("inf"), dtype=lay.dtype, device=dev)
    all_lanes = torch.arange(L, device=dev)
    support = set(kern.delta_support)
    # Columns after every sample's horizon event are padding everywhere: skip them (exact).
    n_ext = min(ev.length, int(torch.isfinite(ev.key).sum(-1).max()) if ev.key.numel() else 0)
    for s in range(0, n_ext, chunk):
        e_ = min(s + chunk, n_ext)
        t, valid, w = ev.slice(s, e_)
        K = e_ - s
        X, ts, gap = _scan_chunk(kern, t, T0, x, w, lay.Bvec, PK, N)
        Xf = [v.reshape(L, K) for v in X]
        Xs = [torch.cat([xc.reshape(L, 1), v[:, :-1]], 1) for xc, v in zip(x, Xf)]  # interval starts
        x_end = [v[:, -1] for v in Xf]
        tsB = ts.expand(B, ts.shape[1], K)
        if not spiking:
            tsf = tsB.expand(B, N, K).reshape(L, K)
            tef = t.expand(B, N, K).reshape(L, K)
            validf = valid.expand(B, N, K).reshape(L, K)
            obs.add(all_lanes, Xs, tef - tsf, validf)
            x = [v.reshape(B, N) for v in x_end]
            T0 = t[..., -1]
            continue
        # no-grad copies for the crossing decisions
        Xs_nd = [v.detach() for v in Xs]
        ts_nd, te_nd = tsB.detach(), t.detach()
        fin_lanes, fin_states = [], []
        kk = torch.arange(K, device=dev)
        # live lanes: idx into [L]; current interval p; current (t_cur, x_cur) and last reset
        # (t_last, delta) with autograd: the true start state of interval k > p is
        # Xs_k + Phi(ts_k - t_last) delta (linearity), so no re-scan after a reset.
        idx = all_lanes[~rec.dead]
        p = torch.zeros_like(idx)
        t_cur = x_cur = delta = t_last = None
        while idx.numel():
            M = idx.numel()
            Pl = lane_params(P, idx % N)
            Plk = col(Pl)
            with torch.no_grad():
                start = [v[idx] for v in Xs_nd]
                ts_a = _rows(ts_nd, idx, N)
                te_a = _rows(te_nd, idx, N)
                val_a = _rows(valid, idx, N)
                if delta is None:
                    st_time = ts_a
                    ok = val_a
                else:
                    dd = [None if v is None else v.detach()[:, None] for v in delta]
                    corr = _propagate_delta(kern, (ts_a - t_last.detach()[:, None]).clamp(min=0), dd, Plk)
                    at_p = kk[None, :] == p[:, None]
                    start = [torch.where(at_p, xc.detach()[:, None], _plus(sc, cc))
                             for xc, sc, cc in zip(x_cur, start, corr)]
                    st_time = torch.where(at_p, t_cur.detach()[:, None], ts_a)
                    ok = val_a & (kk[None, :] >= p[:, None])
                hi = te_a - st_time
                if refractory:
                    lo = (ref_end.detach()[idx][:, None] - st_time).clamp(min=0)
                    ok = ok & ((lo < hi) | (lo <= 0))
                else:
                    lo = torch.zeros_like(hi)
                theta = kern.theta(Plk)
                safe = no_cross_safe(kern, start, Plk, theta)
                cand = ok if safe is None else ok & ~safe
                mi, ki = cand.nonzero(as_tuple=True)
                si = ks = None
                if mi.numel():
                    Pc = lane_params(Pl, mi)
                    lo_c, st_c = lo[mi, ki], st_time[mi, ki]
                    imm, found, a, b, fa, fb, lanes_c = crossing_bracket(
                        kern, [v[mi, ki] for v in start], Pc, lo_c, hi[mi, ki], st_c)
                    ci = (imm | found).nonzero().squeeze(1)
                    if ci.numel():
                        # candidates come in row-major order: the first one of each lane
                        cm = mi[ci]
                        first = torch.ones_like(cm, dtype=torch.bool)
                        first[1:] = cm[1:] != cm[:-1]
                        ci = ci[first]
                        si, ks = mi[ci], ki[ci]
                        imm_s = imm[ci]
                        D_found = lo_c[ci]
                        need = (~imm_s).nonzero().squeeze(1)
                        if need.numel():
                            cn = ci[need]
                            D_found = D_found.index_put((need,), solve_bracketed(
                                lanes_c.subset(cn), a[cn], b[cn], fa[cn], fb[cn], st_c[cn]))
            has = torch.zeros(M, dtype=torch.bool, device=dev)
            if si is not None:
                has[si] = True
            # lanes without a crossing consumed the chunk: their end state (autograd)
            di = (~has).nonzero().squeeze(1)
            if di.numel():
                xe = [v[idx[di]] for v in x_end]
                if delta is not None:
                    corr = _propagate_delta(kern, (te_a[di, -1] - t_last[di]).clamp(min=0),
                                            [None if v is None else v[di] for v in delta], lane_params(Pl, di))
                    xe = [_plus(a_, c_) for a_, c_ in zip(xe, corr)]
                fin_lanes.append(idx[di])
                fin_states.append(xe)
            if si is None:
                if obs.kind is not None:
                    _observe(obs, kern, idx, Xs, tsB, t, valid, N, kk, p, None, None, None,
                             delta, t_last, x_cur, t_cur, Plk, None)
                break
            # the spikes, with autograd: start state and time of interval ks of lanes si
            lanes = idx[si]
            Ps = lane_params(Pl, si)
            xs = [v[lanes, ks] for v in Xs]
            st = _take(tsB, lanes, ks, N)
            if delta is not None:
                atp = ks == p[si]
                corr = _propagate_delta(kern, (st - t_last[si]).clamp(min=0),
                                        [None if v is None else v[si] for v in delta], Ps)
                xs = [torch.where(atp, xc[si], _plus(sc, cc)) for xc, sc, cc in zip(x_cur, xs, corr)]
                st = torch.where(atp, t_cur[si], st)
            if refractory:
                lo_s = (ref_end[lanes] - st).clamp(min=0)
                Dg = torch.where(imm_s, lo_s, spike_offset(kern, D_found, xs, Ps))
            else:
                Dg = torch.where(imm_s, torch.zeros_like(D_found), spike_offset(kern, D_found, xs, Ps))
            if obs.kind is not None:
                _observe(obs, kern, idx, Xs, tsB, t, valid, N, kk, p, si, ks, Dg,
                         delta, t_last, x_cur, t_cur, Plk, has)
            tstar = st + Dg
            xm = densify(kern.propagate(Dg, xs, Ps), Dg)
            xr = densify(kern.reset(xm, Ps), Dg)
            keep = rec.add(lanes, tstar)
            new_delta = [(r_ - m_) if c in support else None for c, (r_, m_) in enumerate(zip(xr, xm))]
            if delta is not None:
                corr = _propagate_delta(kern, (tstar - t_last[si]).clamp(min=0),
                                        [None if v is None else v[si] for v in delta], Ps)
                new_delta = [_plus(a_, c_) for a_, c_ in zip(new_delta, corr)]
            if refractory:
                tr = kern.t_ref(Ps)
                ref_end = ref_end.index_put((lanes,), tstar + tr)
            if not bool(keep.all()):  # capped lanes (flag mode) stop here
                k_ = keep.nonzero().squeeze(1)
                ks, tstar, lanes = ks[k_], tstar[k_], lanes[k_]
                xr = [v[k_] for v in xr]
                new_delta = [None if v is None else v[k_] for v in new_delta]
            idx, p, t_cur, t_last = lanes, ks, tstar, tstar
            x_cur, delta = xr, new_delta
        # the next chunk starts from the true state after this chunk's last event
        xe_flat = [v for v in x_end]
        if fin_lanes:
            fl = torch.cat(fin_lanes)
            xe_flat = [v.index_put((fl,), torch.cat([densify([fs[c]], fs[c] if torch.is_tensor(fs[c]) else v[fl])[0]
                                                     for fs in fin_states]))
                       for c, v in enumerate(xe_flat)]
        x = [v.reshape(B, N) for v in xe_flat]
        T0 = t[..., -1]
    return rec.result(lay.dtype, dev, obs.result())


def _observe(obs, kern, idx, Xs, tsB, t, valid, N, kk, p, si, ks, Dg, delta, t_last, x_cur, t_cur, Plk, has):
    """Final segments of this restart step for the readout observables (autograd): intervals
    p..k* of every live lane, the crossing one only up to its spike."""
    M = idx.numel()
    start = [v[idx] for v in Xs]
    ts_a, te_a, val_a = _rows(tsB, idx, N), _rows(t, idx, N), _rows(valid, idx, N)
    if delta is None:
        st_time = ts_a
        after = torch.ones_like(val_a)
    else:
        corr = _propagate_delta(kern, (ts_a - t_last[:, None]).clamp(min=0),
                                [None if v is None else v[:, None] for v in delta], Plk)
        at_p = kk[None, :] == p[:, None]
        start = [torch.where(at_p, xc[:, None], _plus(sc, cc)) for xc, sc, cc in zip(x_cur, start, corr)]
        st_time = torch.where(at_p, t_cur[:, None], ts_a)
        after = kk[None, :] >= p[:, None]
    seg_len = te_a - st_time
    kstar = torch.full((M,), kk.numel() - 1, dtype=torch.long, device=kk.device)
    if si is not None:
        kstar = kstar.index_put((si,), ks)
        Dk = torch.zeros(M, dtype=seg_len.dtype, device=seg_len.device).index_put((si,), Dg)
        at_k = (kk[None, :] == kstar[:, None]) & has[:, None]
        seg_len = torch.where(at_k, Dk[:, None], seg_len)
    seg_mask = val_a & after & (kk[None, :] <= kstar[:, None])
    obs.add(idx, [densify([v], seg_len)[0] for v in start], seg_len, seg_mask)
