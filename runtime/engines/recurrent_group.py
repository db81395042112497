"""Exact event loop for a group of layers coupled by recurrent connections: delays on recurrent
connections, feedback from later layers (a strongly connected group of layers, possibly of
different neuron types) and several recurrent connections per layer. The reference engine for
all of them (PyTorch, autograd); runtime/engines/recurrent.py keeps the plain case (one
zero-delay self-connection) and this loop reproduces it (tests/runtime/test_recurrent_complete.py).

A coupling (src -> dst, weight [Ns, Nd], delays [Ns, Nd] or none, port of dst) turns a spike of
source neuron j at t* into an event of weight W[j, k] on the port at t* + d[j, k] for every
target neuron k. Undelivered spikes are kept as rows (sample, j, t*, arrivals [Nd]); a row
leaves once every target took (or outlived) its arrival. One step per sample, vectorised over
the batch and the neurons of every layer, with T = the sample's next due event:

  1. if some neuron of the group crosses its threshold in [t_cur, T]: the earliest one(s) spike;
  2. else if a coupled arrival is due at T: deliver one row's arrivals at T (all its targets due
     then, one step);
  3. else: deliver the next external event to the lanes whose next arrival is T.

Ordering at equal times (docs/engines.md): a crossing at t comes before any arrival at t;
coupled (recurrent) arrivals at t come before external ones at t; simultaneous coupled arrivals
go one row at a time in the order (coupling, source neuron, spike order), couplings numbered in
the order of the group's layers and, within a layer, of its connections; the threshold is checked
after each. A neuron is not checked again before its own zero-delay arrivals of t were delivered.
The horizon is shared by the group: t_end, else the latest of the layers' automatic horizons.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import torch

from spikescan.compiler.ir import NeuronIR
from spikescan.runtime.engines.common import SpikeRecord, fire, lane_params, no_cross_safe, setup
from spikescan.runtime.engines.observe import Observer
from spikescan.runtime.engines.recurrent import _arrival, _jump
from spikescan.runtime.engines.result import LayerResult
from spikescan.runtime.engines.spike_time import first_crossing
from spikescan.runtime.kernels import densify

Tensor = torch.Tensor
LOOKAHEAD = True  # lanes take their own events ahead within their smallest incoming delay (tests switch it off)


@dataclass
class GroupLayer:
    """One layer of the group and its events from outside the group (times None: none)."""

    ir: NeuronIR
    params: Optional[dict]
    size: int
    times: Optional[Tensor] = None  # [B, n] external events
    channels: Optional[Tensor] = None
    weight: Optional[Tensor] = None  # [C, N] or [B, C, N]
    delays: Optional[Tensor] = None  # [C, N]
    port: Optional[str] = None  # port of the external events
    observe: Optional[str] = None


@dataclass
class Coupling:
    """A connection inside the group: spikes of layer `src` become events of layer `dst`."""

    src: int
    dst: int
    weight: Tensor  # [Ns, Nd]
    delays: Optional[Tensor] = None  # [Ns, Nd] (ms, >= 0) or None: zero delay
    port: Optional[str] = None


class _State:
    """Per-layer state of the loop (flat lanes = sample * N + neuron)."""

    def __init__(self, lay, rec, obs):
        self.lay, self.rec, self.obs = lay, rec, obs
        B, N, dev, dt = lay.B, lay.N, lay.device, lay.dtype
        self.B, self.N, self.L = B, N, B * N
        L = self.L
        ev = lay.ev
        self.lane_b = torch.arange(L, device=dev) // N
        self.lane_r = torch.zeros(L, dtype=torch.long, device=dev) if ev.shared else torch.arange(L, device=dev) % N
        self.ptr = torch.zeros(L, dtype=torch.long, device=dev)
        self.x = [v.reshape(L) for v in lay.x0]
        self.t_cur = torch.zeros(L, dtype=dt, device=dev)
        self.ref_end = torch.full((L,), -math.inf, dtype=dt, device=dev)
        self.Pl_all = lane_params(lay.P, torch.arange(L, device=dev) % N)
        self.theta_all = lay.kern.theta(self.Pl_all)
        self.blocked = torch.zeros(L, dtype=torch.bool, device=dev)

    def refresh(self):
        ev = self.lay.ev
        self.n_valid = torch.isfinite(ev.key).sum(-1)[self.lane_b, self.lane_r]

    def deliver(self, lanes: Tensor, t_to: Tensor, w: Tensor, Bvec: list):
        kern, P, N = self.lay.kern, self.lay.P, self.N
        gap = t_to - self.t_cur[lanes]
        xl = [v[lanes] for v in self.x]
        if self.obs.kind is not None:
            self.obs.add(lanes, [v[:, None] for v in xl], gap[:, None], torch.ones_like(gap[:, None], dtype=torch.bool))
        xn = densify(kern.propagate(gap, xl, lane_params(P, lanes % N)), gap)
        jump = [None if b is None else b * w for b in Bvec] if isinstance(Bvec, _PerLane) else _jump(Bvec, lanes, N, w)
        xn = [v if bv is None else v + bv for v, bv in zip(xn, jump)]
        self.x = [v.index_put((lanes,), r) for v, r in zip(self.x, xn)]
        self.t_cur = self.t_cur.index_put((lanes,), t_to)


def _external_jump(st: _State, lanes: Tensor, p: Tensor):
    """The jump vector of external arrival p of each lane: the layer's port, or with a PortMap
    (runtime/engines/ports.py) the port of each arrival's channel, as per-lane entries."""
    lay = st.lay
    port = getattr(lay, "port", None)
    if port is None or isinstance(port, str):
        return lay.Bvec
    from spikescan.runtime.engines.ports import jump_vectors

    ev, N = lay.ev, st.N
    b, j = lanes // N, lanes % N
    idx = ev.perm[b, 0 if ev.shared else j, p]
    pe = port.index.to(idx.device)[ev.ch_ext[b, idx]]
    return _PerLane(jump_vectors(lay.kern, port, lane_params(lay.P, j), pe, lay.dtype))


class _PerLane(list):
    """Jump entries already one per delivered lane (not per neuron)."""


class _Rows:
    """Undelivered spikes of one coupling: sample rb, source neuron rj, spike time rt (with grad),
    arrival keys arr [R, Nd] (no grad; +inf once delivered or past the target's horizon)."""

    def __init__(self, c: Coupling, Bvec: list, Nd: int, dt, dev):
        self.c, self.Bvec, self.Nd = c, Bvec, Nd
        self.W = c.weight.to(dt)
        self.D = None if c.delays is None else c.delays.to(dt)
        self.rb = torch.zeros(0, dtype=torch.long, device=dev)
        self.rj = torch.zeros(0, dtype=torch.long, device=dev)
        self.rt = torch.zeros(0, dtype=dt, device=dev)
        self.arr = torch.zeros(0, Nd, dtype=dt, device=dev)

    def add(self, b: Tensor, j: Tensor, t: Tensor):
        td = t.detach()
        arr = td[:, None] + self.D.detach()[j] if self.D is not None else td[:, None].expand(-1, self.Nd)
        self.rb, self.rj = torch.cat([self.rb, b]), torch.cat([self.rj, j])
        self.rt, self.arr = torch.cat([self.rt, t]), torch.cat([self.arr, arr])

    def prune(self, done_dst: Tensor):
        """Drop arrivals at targets past their horizon, then rows with nothing left."""
        if not self.rb.numel():
            return
        self.arr = torch.where(done_dst[self.rb], torch.full_like(self.arr, math.inf), self.arr)
        keep = torch.isfinite(self.arr).any(1)
        if not bool(keep.all()):
            self.rb, self.rj, self.rt, self.arr = self.rb[keep], self.rj[keep], self.rt[keep], self.arr[keep]


def _check(layers: list, couplings: list) -> None:
    if not layers:
        raise ValueError("a recurrent group needs at least one layer")
    if all(l.times is None for l in layers):
        raise ValueError("a recurrent group needs events from outside the group (no layer has any)")
    for c in couplings:
        if not (0 <= c.src < len(layers) and 0 <= c.dst < len(layers)):
            raise ValueError(f"coupling {c.src} -> {c.dst} names a layer outside the group")
        shape = (layers[c.src].size, layers[c.dst].size)
        if tuple(c.weight.shape) != shape:
            raise ValueError(f"coupling {c.src} -> {c.dst}: weight must be {list(shape)}, got {list(c.weight.shape)}")
        if c.delays is not None:
            if tuple(c.delays.shape) != shape:
                raise ValueError(f"coupling {c.src} -> {c.dst}: delays must be {list(shape)}, got "
                                 f"{list(c.delays.shape)}")
            d = c.delays.detach()
            if bool(torch.isnan(d).any()) or bool((d < 0).any()) or not bool(torch.isfinite(d).all()):
                raise ValueError(f"coupling {c.src} -> {c.dst}: delays must be finite and >= 0 ms")
        if layers[c.src].ir.c is None or layers[c.dst].ir.c is None:
            raise ValueError(f"coupling {c.src} -> {c.dst}: recurrent connections need spiking neurons at both "
                             "ends (a neuron with `spike when`)")


def _setup_layers(layers: list, t_end, on_overflow: str, max_spikes: int):
    like = next(l.times for l in layers if l.times is not None)
    B, dt, dev = like.shape[0], like.dtype, like.device
    out = []
    for l in layers:
        if l.times is None:  # fed only from inside the group: no external event (one padding column)
            times = torch.full((B, 1), math.inf, dtype=dt, device=dev)
            ch = torch.zeros((B, 1), dtype=torch.long, device=dev)
            w, dl = torch.zeros((1, l.size), dtype=dt, device=dev), None
        else:
            times, ch, w, dl = l.times, l.channels, l.weight, l.delays
        lay = setup(l.ir, l.params, times, ch, w, dl, l.port, t_end, l.observe, on_overflow, max_spikes)
        if not lay.kern.spiking:
            raise ValueError(f"neuron {l.ir.name!r} has no threshold: a recurrent connection needs a spiking neuron")
        out.append(lay)
    if t_end is None:  # one horizon for the group: the latest automatic horizon of its layers
        H = torch.stack([lay.ev.t_end.max(1).values for lay in out]).max(0).values
        for lay in out:
            ev = lay.ev
            # the virtual event is the last finite key of each order, so raising it keeps the sort
            ev.key = torch.where(ev.perm == ev.n, H[:, None, None].to(ev.key.dtype), ev.key)
            ev.t_end = H[:, None].expand_as(ev.t_end).clone()
    return out, B, dt, dev


def run_recurrent_group(layers: list[GroupLayer], couplings: list[Coupling], *, max_spikes: int = 64,
                        on_overflow: str = "raise", t_end: Optional[float] = None) -> list[LayerResult]:
    """Simulate the layers of a recurrent group jointly; one LayerResult per layer (same order)."""
    _check(layers, couplings)
    lays, B, dt, dev = _setup_layers(layers, t_end, on_overflow, max_spikes)
    S = []
    for l, lay in zip(layers, lays):
        st = _State(lay, SpikeRecord(B, lay.N, max_spikes, on_overflow, dev),
                    Observer(lay.kern, l.observe, lay.P, B, lay.N, dt, dev))
        st.refresh()
        S.append(st)
    rows = [_Rows(c, lays[c.dst].kern.B(c.port, tuple(lays[c.dst].P)), lays[c.dst].N, dt, dev) for c in couplings]
    inf_b = torch.full((B,), math.inf, dtype=dt, device=dev)
    for k, st in enumerate(S):  # lookahead of each lane: its smallest incoming coupling delay
        st.dmin = torch.full((st.L,), math.inf, dtype=dt, device=dev)
        for R in rows:
            if R.c.dst == k:
                col = R.D.detach().min(0).values if R.D is not None else torch.zeros(st.N, dtype=dt, device=dev)
                st.dmin = torch.minimum(st.dmin, col.repeat(B))
        st.ahead = LOOKAHEAD and bool((st.dmin > 0).any())
    big = torch.iinfo(torch.long).max

    while True:
        # next external arrival of every lane, and of every sample
        e_b = inf_b
        for st in S:
            K = st.lay.ev.length
            st.done = st.ptr >= st.n_valid
            key = st.lay.ev.key[st.lane_b, st.lane_r, st.ptr.clamp(max=K - 1)]
            st.te = torch.where(st.done, torch.full_like(key, math.inf), key)
            e_b = torch.minimum(e_b, st.te.view(B, st.N).min(1).values)
        # next coupled arrival of every sample; lanes waiting for their own zero-delay arrivals
        r_b = inf_b
        for st in S:
            st.blocked = torch.zeros_like(st.blocked)
        for R in rows:
            R.prune(S[R.c.dst].done.view(B, -1))
            if R.rb.numel():
                r_b = r_b.scatter_reduce(0, R.rb, R.arr.min(1).values, "amin")
                zero = (R.arr == R.rt.detach()[:, None]).any(1)
                src = S[R.c.src]
                src.blocked = src.blocked.index_put(((R.rb * src.N + R.rj)[zero],),
                                                    torch.ones_like(R.rb[zero], dtype=torch.bool))
        pend_b = torch.isfinite(r_b) & (r_b <= e_b)
        if not (any(bool((~st.done).any()) for st in S) or bool(pend_b.any())):
            break
        T_b = torch.where(pend_b, r_b, e_b)
        if any(st.ahead for st in S):
            _next_coupled(S, rows, B)

        # 1. earliest crossing of every lane of the group before the sample's next due event
        s_b = inf_b
        for st in S:
            kern, P, L, N = st.lay.kern, st.lay.P, st.L, st.N
            T_l = T_b.repeat_interleave(N)
            st.cand = torch.full((L,), math.inf, dtype=dt, device=dev)
            st.D = st.cand.clone()
            tc = st.t_cur.detach()
            lo = (st.ref_end.detach() - tc).clamp(min=0)
            if st.ahead:  # up to the lane's next event, within its lookahead window (see _window_moves)
                st.a = torch.minimum(st.te, st.rc)
                hi = torch.where(st.dmin > 0, torch.minimum(st.a, T_l + st.dmin), T_l) - tc
            else:
                hi = T_l - tc
            chk = ~st.done & ~st.rec.dead & torch.isfinite(T_l) & ~st.blocked & ((lo < hi) | (lo <= 0)) & (hi >= 0)
            safe = no_cross_safe(kern, [v.detach() for v in st.x], st.Pl_all, st.theta_all)
            if safe is not None:
                chk = chk & ~safe
            ci = chk.nonzero().squeeze(1)
            if ci.numel():
                D = first_crossing(kern, [v[ci].detach() for v in st.x], lane_params(P, ci % N), lo[ci], hi[ci],
                                   tc[ci])
                st.D = st.D.index_put((ci,), D)
                st.cand = st.cand.index_put((ci,), tc[ci] + D)
            s_b = torch.minimum(s_b, st.cand.view(B, N).min(1).values)
        act_spike = torch.isfinite(s_b) & (s_b <= T_b)  # a crossing at t comes before arrivals at t
        if bool(act_spike.any()):
            for k, st in enumerate(S):
                N = st.N
                sl = (st.cand.view(B, N) == s_b[:, None]) & act_spike[:, None]
                si = sl.view(st.L).nonzero().squeeze(1)
                if not si.numel():
                    continue
                Ps = lane_params(st.lay.P, si % N)
                xs = [v[si] for v in st.x]
                lo_s = (st.ref_end[si] - st.t_cur[si]).clamp(min=0)
                st.x, st.t_cur, st.ref_end, tstar, keep = fire(st.lay.kern, st.obs, st.rec, si, xs, Ps, lo_s,
                                                               st.D[si], st.x, st.t_cur, st.ref_end)
                sk = si[keep]  # a spike dropped at the cap (on_overflow="flag") sends nothing
                for R in rows:
                    if R.c.src == k and sk.numel():
                        R.add(sk // N, sk % N, tstar[keep])

        # 2. one row of coupled arrivals due at T per sample (coupling, source neuron, spike order)
        act_pend = ~act_spike & pend_b
        if bool(act_pend.any()):
            served = torch.zeros(B, dtype=torch.bool, device=dev)
            for R in rows:
                n = R.rb.numel()
                if not n:
                    continue
                at_T = R.arr == T_b[R.rb][:, None]
                ok = at_T.any(1) & act_pend[R.rb] & ~served[R.rb]
                if not bool(ok.any()):
                    continue
                score = torch.where(ok, R.rj * n + torch.arange(n, device=dev), torch.full_like(R.rj, big))
                best = torch.full((B,), big, dtype=torch.long, device=dev).scatter_reduce(0, R.rb, score, "amin")
                sel = (ok & (score == best[R.rb])).nonzero().squeeze(1)
                served = served.index_put((R.rb[sel],), torch.ones_like(sel, dtype=torch.bool))
                dst = S[R.c.dst]
                m = at_T[sel]  # [S, Nd]: the targets due now (finished targets were pruned)
                lanes = (R.rb[sel][:, None] * dst.N + torch.arange(dst.N, device=dev))[m]
                j = R.rj[sel]
                t_sp = R.rt[sel][:, None]
                t_to = (t_sp + R.D[j])[m] if R.D is not None else t_sp.expand(-1, dst.N)[m]
                dst.deliver(lanes, t_to, R.W[j][m], R.Bvec)
                arr = R.arr.clone()
                arr[sel] = torch.where(m, torch.full_like(m, math.inf, dtype=dt), arr[sel])
                R.arr = arr

        # 3. the next external event, to the lanes whose next arrival is due
        act_ext = ~act_spike & ~pend_b
        if bool(act_ext.any()):
            for st in S:
                N = st.N
                due = ~st.done & (st.te == T_b.repeat_interleave(N)) & act_ext.repeat_interleave(N)
                lanes = due.nonzero().squeeze(1)
                if lanes.numel():
                    p = st.ptr[lanes]
                    t_to, w = _arrival(st.lay.ev, lanes, p, N)
                    st.deliver(lanes, t_to, w, _external_jump(st, lanes, p))
                    st.ptr = st.ptr.index_put((lanes,), p + 1)
        # 4. lanes ahead: their own next event inside their lookahead window
        if any(st.ahead for st in S) and bool((~act_spike).any()):
            _window_moves(S, rows, T_b, ~act_spike, B, dev)
    return [st.rec.result(dt, dev, st.obs.result()) for st in S]


def _next_coupled(S: list, rows: list, B: int) -> None:
    """st.rc [L]: each lane's next coupled arrival; st.rc_c: the coupling it comes from (the
    first coupling at equal times, rule 3)."""
    for st in S:
        st.rc = torch.full((st.L,), math.inf, dtype=st.t_cur.dtype, device=st.t_cur.device)
        st.rc_c = torch.full((st.L,), -1, dtype=torch.long, device=st.t_cur.device)
    for ci, R in enumerate(rows):
        st = S[R.c.dst]
        if not st.ahead or not R.rb.numel():
            continue
        flat = (R.rb[:, None] * R.Nd + torch.arange(R.Nd, device=R.rb.device)).reshape(-1)
        m = torch.full_like(st.rc, math.inf).scatter_reduce(0, flat, R.arr.reshape(-1), "amin")
        better = m < st.rc
        st.rc = torch.where(better, m, st.rc)
        st.rc_c = torch.where(better, torch.full_like(st.rc_c, ci), st.rc_c)


def _window_moves(S: list, rows: list, T_b: Tensor, free_b: Tensor, B: int, dev) -> None:
    """Conservative lookahead (exact): every spike from now on happens at >= T (the sample's
    next due time: no lane crosses before it) and reaches lane k no earlier than T + dmin_k, its
    smallest incoming delay. So a lane whose own next event a_k lies in (T, T + dmin_k), with no
    crossing before it, takes that event now, in its own order (coupled before external, then by
    coupling, source neuron, spike order). With zero delays nothing moves ahead: the loop is then
    step for step the one above."""
    for st in S:
        if not st.ahead:
            continue
        N = st.N
        T_l = T_b.repeat_interleave(N)
        mv = (free_b.repeat_interleave(N) & ~st.done & ~st.blocked & torch.isinf(st.cand) & torch.isfinite(st.a)
              & (st.a > T_l) & (st.a < T_l + st.dmin))
        lanes = mv.nonzero().squeeze(1)
        if not lanes.numel():
            continue
        coupled = st.rc[lanes] <= st.te[lanes]
        for ci, R in enumerate(rows):
            sel = lanes[coupled & (st.rc_c[lanes] == ci)]
            if not sel.numel():
                continue
            b, k = sel // N, sel % N
            n = R.rb.numel()
            due = (R.rb[:, None] == b[None, :]) & (R.arr[:, k] == st.rc[sel][None, :])  # [rows, lanes]
            score = torch.where(due, (R.rj * n + torch.arange(n, device=dev))[:, None], torch.iinfo(torch.long).max)
            r = score.min(0).indices
            j = R.rj[r]
            t_to = R.rt[r] + R.D[j, k] if R.D is not None else R.rt[r]
            st.deliver(sel, t_to, R.W[j, k], R.Bvec)
            R.arr = R.arr.index_put((r, k), torch.full_like(t_to.detach(), math.inf))
        ext = lanes[~coupled]
        if ext.numel():
            p = st.ptr[ext]
            t_to, w = _arrival(st.lay.ev, ext, p, N)
            st.deliver(ext, t_to, w, _external_jump(st, ext, p))
            st.ptr = st.ptr.index_put((ext,), p + 1)
