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

Memory (DESIGN.md section 6): each chunk is a pure function of its start state (_chunk). With
checkpointing (see CHECKPOINT below) it runs without autograd and only its start state and its
decisions stay alive; the backward reruns it with autograd, replaying the decisions (no second
crossing search or root solve), so memory grows with chunks x state, not with events x lanes.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Optional

import torch

from spikescan.compiler.ir import NeuronIR
from spikescan.runtime.engines.common import SpikeRecord, col, lane_params, no_cross_safe, setup
from spikescan.runtime.engines.observe import Observer
from spikescan.runtime.engines.ports import event_ports, is_multi, jump_vectors
from spikescan.runtime.engines.recompute import recompute
from spikescan.runtime.engines.result import LayerResult
from spikescan.runtime.engines.scan_ties import (after_event, at_next, exact_end, sequential_starts,
                                                take as _take)
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


# Checkpointing (DESIGN.md section 6: memory must not grow with events x chunks). True: every
# chunk runs as one recompute node (runtime/engines/recompute.py): its forward records no graph,
# only its start state (x, T0, ref_end, spike counts) and its no-grad decisions (O(spikes)) stay
# alive, and the backward reruns the chunk with autograd (about one extra forward of the
# autograd part). False: keep every chunk's autograd graph (about 170 bytes per lane-event at
# chunk 128 when times and weights need gradients). "auto": checkpoint when a gradient is needed,
# the layer has at least AUTO_MIN_CHUNKS chunks and B * N * events >= AUTO_MIN_LANE_EVENTS (the
# graph would take about 90 MB or more); small layers (Yin-Yang, tests) keep the faster path.
CHECKPOINT = "auto"
AUTO_MIN_CHUNKS = 2
AUTO_MIN_LANE_EVENTS = 1 << 19

_checkpoint = recompute  # module attribute: tests and bench/torch_memory.py wrap it to measure


@dataclass
class _Ctx:
    """Per-layer constants shared by every chunk."""
    kern: object
    P: tuple
    PK: tuple
    ev: object
    Bvec: list
    B: int
    N: int
    dtype: torch.dtype
    dev: torch.device
    observe: Optional[str]
    port: Optional[str]
    spiking: bool
    refractory: bool
    support: set
    all_lanes: Tensor


def _make_ctx(lay, port, observe, P_raw: tuple, ev) -> _Ctx:
    kern, B, N = lay.kern, lay.B, lay.N
    port = lay.port  # normalized by setup (a name, None or a PortMap)
    P = kern.constants(P_raw)
    # With no refractory period the threshold is never disabled: lo = 0 everywhere, and no
    # refractory bookkeeping (nor its autograd graph) is needed.
    refractory = kern.spiking and kern.t_ref(P) is not None
    return _Ctx(kern, P, col(P), ev, None if is_multi(port) else kern.B(port, P_raw), B, N, lay.dtype, lay.device, observe, port,
                kern.spiking, refractory, set(kern.delta_support), torch.arange(B * N, device=lay.device))


def _grad_leaves(lay):
    """The layer's tensors that need a gradient (input times, weights, delays, parameters) and
    where they sit, so that a chunk's context can be rebuilt around replacements of them."""
    slots, leaves = [], []
    for name in ("times_ext", "weight", "delays"):
        v = getattr(lay.ev, name)
        if torch.is_tensor(v) and v.requires_grad:
            slots.append(name)
            leaves.append(v)
    for i, v in enumerate(lay.P):
        if torch.is_tensor(v) and v.requires_grad:
            slots.append(i)
            leaves.append(v)
    return slots, leaves


class _ChunkRun:
    """One chunk as a pure function of (states, leaves) for recompute(): states = (*x, T0,
    ref_end), leaves as from _grad_leaves. Its memo keeps the first run's decisions (replayed by
    the recompute) and snap the spike record at the chunk start."""

    def __init__(self, lay, port, observe, slots, s: int, e: int, snap, nx: int):
        self.lay, self.port, self.observe, self.slots = lay, port, observe, slots
        self.s, self.e, self.snap, self.nx = s, e, snap, nx
        self.memo: list = []

    def ctx(self, leaves) -> _Ctx:
        P_raw, rep = list(self.lay.P), {}
        for slot, v in zip(self.slots, leaves):
            if isinstance(slot, str):
                rep[slot] = v
            else:
                P_raw[slot] = v
        ev = dataclasses.replace(self.lay.ev, **rep) if rep else self.lay.ev
        return _make_ctx(self.lay, self.port, self.observe, tuple(P_raw), ev)

    def __call__(self, states, leaves):
        nx = self.nx
        x, T0, ref_end = states[:nx], states[nx], states[nx + 1]
        xn, T0n, refn, rec, obs = _chunk(self.ctx(leaves), self.s, self.e, x, T0, ref_end, self.snap, self.memo)
        times = torch.cat(rec.times) if rec.times else ref_end.new_zeros(0)
        return [*xn, T0n, refn, times] + ([] if obs is None else [obs]), rec

    def held(self) -> list:
        """Tensors kept for the backward besides the inputs: record state and decisions."""
        out = [self.snap.counts, self.snap.dead, self.snap.overflow]
        for m in self.memo:
            out += [t for t in m if torch.is_tensor(t)]
        return out


def _needs_grad(times, weight, delays, P, x0) -> bool:
    if not torch.is_grad_enabled():
        return False
    ts = [times, weight, delays, *P, *x0]
    return any(torch.is_tensor(v) and v.requires_grad for v in ts)


def _use_checkpoint(flag, n_chunks: int, lane_events: int, needs_grad: bool) -> bool:
    flag = CHECKPOINT if flag is None else flag
    if flag not in (True, False, "auto"):
        raise ValueError(f"checkpoint must be True, False, 'auto' or None, got {flag!r}")
    if not needs_grad or flag is False:
        return False
    return flag is True or (n_chunks >= AUTO_MIN_CHUNKS and lane_events >= AUTO_MIN_LANE_EVENTS)


def run_layer(ir: NeuronIR, params, times: Tensor, channels: Tensor, weight: Tensor,
              delays: Optional[Tensor] = None, *, port=None, chunk: int = 128,
              max_spikes: int = 64, on_overflow: str = "raise", observe: Optional[str] = None,
              t_end: Optional[float] = None, checkpoint=None) -> LayerResult:
    """checkpoint: True / False / "auto" (None: the module default CHECKPOINT); see above."""
    if chunk < 1:
        raise ValueError("chunk must be >= 1")
    lay = setup(ir, params, times, channels, weight, delays, port, t_end, observe, on_overflow, max_spikes)
    ev, B, N = lay.ev, lay.B, lay.N
    L = B * N
    dev = lay.device
    rec = SpikeRecord(B, N, max_spikes, on_overflow, dev)
    x = lay.x0  # true state at T0, d tensors [B, N]
    nx = len(x)
    T0 = torch.zeros(B, ev.perm.shape[1], dtype=lay.dtype, device=dev)
    ref_end = torch.full((L,), -float("inf"), dtype=lay.dtype, device=dev)
    # Columns after every sample's horizon event are padding everywhere: skip them (exact).
    n_ext = min(ev.length, int(torch.isfinite(ev.key).sum(-1).max()) if ev.key.numel() else 0)
    starts = range(0, n_ext, chunk)
    ckpt = _use_checkpoint(checkpoint, len(starts), L * n_ext, _needs_grad(times, weight, delays, lay.P, lay.x0))
    slots, leaves = _grad_leaves(lay)
    cx = None if ckpt else _make_ctx(lay, port, observe, lay.P, ev)
    observed = []
    for s in starts:
        e = min(s + chunk, n_ext)
        snap = rec.fork()  # never mutated: a recompute starts from exactly this record state
        if ckpt:
            outs, part = _checkpoint(_ChunkRun(lay, port, observe, slots, s, e, snap, nx),
                                     [*x, T0, ref_end], leaves)
            x, T0, ref_end = outs[:nx], outs[nx], outs[nx + 1]
            part.times = [outs[nx + 2]] if part.times else []  # the spike times with the backward
            seen = outs[nx + 3] if len(outs) > nx + 3 else None
        else:
            x, T0, ref_end, part, seen = _chunk(cx, s, e, x, T0, ref_end, snap)
        rec.absorb(part)
        if seen is not None:
            observed.append(seen)
    return rec.result(lay.dtype, dev, _combine(observe, observed, B, N, lay.dtype, dev))


def _combine(kind, parts, B, N, dtype, dev):
    """Per-chunk observables [B, N] -> the layer's (max over chunks, or sum)."""
    if kind is None:
        return None
    if not parts:
        return Observer(None, kind, (), B, N, dtype, dev).result()
    if kind == "max_potential":
        return torch.stack(parts).amax(0)
    return torch.stack(parts).sum(0)


@torch.no_grad()
def _decide(kern, idx, N, Xs_nd, ts_nd, te_nd, valid, kk, p, delta, t_last, x_cur, t_cur, ref_end,
            refractory, Pl, Plk, x_next, hz_nd, port, w_nd, pe_nd=None):
    """The restart step's decisions, without autograd: for every live lane the first interval
    (>= p) whose potential crosses theta, and the crossing offset in it. Returns (si, ks, imm_s,
    D_found): rows of idx that spike, their interval, whether the spike is at the interval start
    (a jump or the end of a refractory period), and the solved offset; all None without spikes."""
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
        scan_part = start
        start = [torch.where(at_p, xc.detach()[:, None], _plus(sc, cc))
                 for xc, sc, cc in zip(x_cur, start, corr)]
        start = at_next(kk, p, [v.detach() for v in x_next], start)
        st_time = torch.where(at_p, t_cur.detach()[:, None], ts_a)
        ok = val_a & (kk[None, :] >= p[:, None])
        start = sequential_starts(kern, port, start, scan_part, corr, ok, kk, p, [v.detach() for v in x_cur],
                                  t_cur.detach(), te_a, w_nd.reshape(-1, w_nd.shape[-1])[idx], Pl, Plk,
                                  None if pe_nd is None else pe_nd[idx])
    hi = te_a - st_time
    if refractory:
        lo = (ref_end.detach()[idx][:, None] - st_time).clamp(min=0)
        ok = ok & ((lo < hi) | (lo <= 0) | (_rows(hz_nd, idx, N) & (lo <= hi)))
    else:
        lo = torch.zeros_like(hi)
    theta = kern.theta(Plk)
    safe = no_cross_safe(kern, start, Plk, theta)
    cand = ok if safe is None else ok & ~safe
    mi, ki = cand.nonzero(as_tuple=True)
    si = ks = imm_s = D_found = None
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
    return si, ks, imm_s, D_found


def _chunk(cx: _Ctx, s: int, e_: int, x, T0, ref_end, snap, memo=None):
    """One chunk (events s..e_-1) from the true state (x, T0, ref_end, spike record `snap`):
    speculative scan, then the restart loop. A pure function of its arguments and of cx (it
    records into a fork of snap), so torch.utils.checkpoint can rerun it in the backward and take
    the same decisions. memo (a list, or None): the first run appends every restart step's
    decisions (_decide), a recompute replays them. Returns (x, T0, ref_end) after the chunk's
    last event, the fork holding its spikes, and the chunk's observable [B, N] (or None)."""
    kern, P, PK, B, N, dev = cx.kern, cx.P, cx.PK, cx.B, cx.N, cx.dev
    L = B * N
    support, all_lanes = cx.support, cx.all_lanes
    rec = snap.fork()
    obs = Observer(kern, cx.observe, P, B, N, cx.dtype, dev)
    t, valid, w = cx.ev.slice(s, e_)
    hz_nd = cx.ev.at_horizon(s, e_)
    K = e_ - s
    pe = pe_nd = None  # a PortMap: each event's port index, laid out like w (and its lane rows)
    Bvec = cx.Bvec
    if is_multi(cx.port):
        pe = event_ports(cx.ev, cx.port, s, e_).expand(B, N, K)
        pe_nd = pe.reshape(L, K)
        Bvec = jump_vectors(kern, cx.port, PK, pe, cx.dtype)
    X, ts, gap = _scan_chunk(kern, t, T0, x, w, Bvec, PK, N)
    Xf = [v.reshape(L, K) for v in X]
    Xs = [torch.cat([xc.reshape(L, 1), v[:, :-1]], 1) for xc, v in zip(x, Xf)]  # interval starts
    x_end = [v[:, -1] for v in Xf]
    tsB = ts.expand(B, ts.shape[1], K)
    if not cx.spiking:
        tsf = tsB.expand(B, N, K).reshape(L, K)
        tef = t.expand(B, N, K).reshape(L, K)
        validf = valid.expand(B, N, K).reshape(L, K)
        obs.add(all_lanes, Xs, tef - tsf, validf)
        return [v.reshape(B, N) for v in x_end], t[..., -1], ref_end, rec, obs.result()
    refractory = cx.refractory
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
    step = 0
    while idx.numel():
        M = idx.numel()
        Pl = lane_params(P, idx % N)
        Plk = col(Pl)
        x_next = None if delta is None else after_event(kern, cx.port, t, w, idx, p, x_cur, t_cur, Pl, N, pe)
        if memo is not None and step < len(memo):  # recompute in the backward: replay
            si, ks, imm_s, D_found = memo[step]
        else:
            si, ks, imm_s, D_found = _decide(kern, idx, N, Xs_nd, ts_nd, te_nd, valid, kk, p, delta, t_last,
                                             x_cur, t_cur, ref_end, refractory, Pl, Plk, x_next, hz_nd, cx.port, w.detach(),
                                             pe_nd)
            if memo is not None:
                memo.append((si, ks, imm_s, D_found))
        step += 1
        has = torch.zeros(M, dtype=torch.bool, device=dev)
        if si is not None:
            has[si] = True
        # lanes without a crossing consumed the chunk: their end state (autograd)
        di = (~has).nonzero().squeeze(1)
        if di.numel():
            xe = [v[idx[di]] for v in x_end]
            if delta is not None:
                # the chunk's last event time with autograd (the decisions' copy is detached): when it is a real
                # event (not the horizon) the end state depends on it through Phi(t_end - t_last)
                te_g = _take(t, idx[di], torch.full_like(di, K - 1), N)
                corr = _propagate_delta(kern, (te_g - t_last[di]).clamp(min=0),
                                        [None if v is None else v[di] for v in delta], lane_params(Pl, di))
                scan_end, xe = xe, [_plus(a_, c_) for a_, c_ in zip(xe, corr)]
                last = p[di] == K - 1  # the chunk's last event right after the restart: exact form
                xe = [torch.where(last, xn[di], xv) for xn, xv in zip(x_next, xe)]
                xe = exact_end(kern, cx.port, xe, scan_end, corr, [v[di] for v in x_cur], t_cur[di], p[di],
                               _rows(t.detach(), idx[di], N), w.detach().reshape(-1, K)[idx[di]],
                               lane_params(Pl, di), None if pe_nd is None else pe_nd[idx[di]])
            fin_lanes.append(idx[di])
            fin_states.append(xe)
        if si is None:
            if obs.kind is not None:
                _observe(obs, kern, idx, Xs, tsB, t, valid, N, kk, p, None, None, None,
                         delta, t_last, x_cur, t_cur, Plk, None, x_next)
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
            nxt = ks == p[si] + 1
            xs = [torch.where(nxt, xn[si], xv) for xn, xv in zip(x_next, xs)]
            st = torch.where(atp, t_cur[si], st)
        if refractory:
            lo_s = (ref_end[lanes] - st).clamp(min=0)
            Dg = torch.where(imm_s, lo_s, spike_offset(kern, D_found, xs, Ps))
        else:
            Dg = torch.where(imm_s, torch.zeros_like(D_found), spike_offset(kern, D_found, xs, Ps))
        if obs.kind is not None:
            _observe(obs, kern, idx, Xs, tsB, t, valid, N, kk, p, si, ks, Dg,
                     delta, t_last, x_cur, t_cur, Plk, has, x_next)
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
    return [v.reshape(B, N) for v in xe_flat], t[..., -1], ref_end, rec, obs.result()


def _observe(obs, kern, idx, Xs, tsB, t, valid, N, kk, p, si, ks, Dg, delta, t_last, x_cur, t_cur, Plk, has,
             x_next=None):
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
        start = at_next(kk, p, x_next, start)
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
