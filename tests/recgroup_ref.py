"""Independent mpmath event loop for small recurrent groups of CubaLIF and LIF layers with
delayed couplings (tests/runtime/test_recurrent_complete.py). Written from the semantics in
docs/engines.md ("Recurrent groups"), with closed forms for both neurons, not from the engine:

- CubaLIF (v, i): i(D) = i0 e^{-D/ts}, v(D) = v0 e^{-D/tm} + i0 ts/(ts - tm) (e^{-D/ts} - e^{-D/tm});
  input i += w; LIF (v): v(D) = v0 e^{-D/tm}, input v += w. Threshold v >= 1, reset v = 0,
  refractory 0.
- The first crossing in [0, H] is exact: v has at most one stationary point, so [0, H] splits
  into monotone pieces and the crossing is bisected to ~1e-40 ms on the first piece that rises
  through the threshold.
- Ordering: crossing before arrivals; coupled arrivals before external ones; coupled arrivals at
  equal times one spike at a time by (coupling, source neuron, spike time); a neuron is not
  tested before its own zero-delay arrivals were delivered.
"""

from __future__ import annotations

import mpmath as mp

DPS = 50


class Layer:
    def __init__(self, kind: str, n: int, tau_m: float, tau_s: float = 5.0):
        self.kind, self.n = kind, n
        self.tm, self.ts = mp.mpf(tau_m), mp.mpf(tau_s)
        self.v = [mp.mpf(0)] * n
        self.i = [mp.mpf(0)] * n

    def v_at(self, k: int, D):
        if self.kind == "LIF":
            return self.v[k] * mp.exp(-D / self.tm)
        a = self.i[k] * self.ts / (self.ts - self.tm)
        return self.v[k] * mp.exp(-D / self.tm) + a * (mp.exp(-D / self.ts) - mp.exp(-D / self.tm))

    def advance(self, D):
        for k in range(self.n):
            nv = self.v_at(k, D)
            if self.kind != "LIF":
                self.i[k] = self.i[k] * mp.exp(-D / self.ts)
            self.v[k] = nv

    def jump(self, k: int, w):
        if self.kind == "LIF":
            self.v[k] += w
        else:
            self.i[k] += w

    def stationary(self, k: int):
        if self.kind == "LIF" or self.i[k] == 0:
            return None
        a = self.i[k] * self.ts / (self.ts - self.tm)
        num, den = a * self.tm, self.ts * (a - self.v[k])
        if den == 0 or num / den <= 0:
            return None
        return mp.log(num / den) / (1 / self.ts - 1 / self.tm)

    def first_crossing(self, k: int, H):
        """Smallest D in [0, H] with v(D) >= 1, or None."""
        if self.v_at(k, 0) >= 1:
            return mp.mpf(0)
        cuts = [mp.mpf(0)]
        s = self.stationary(k)
        if s is not None and 0 < s < H:
            cuts.append(s)
        cuts.append(H)
        for lo, hi in zip(cuts, cuts[1:]):
            if self.v_at(k, lo) < 1 <= self.v_at(k, hi):
                for _ in range(400):
                    if hi - lo < mp.mpf(10) ** -40:
                        break
                    mid = (lo + hi) / 2
                    if self.v_at(k, mid) >= 1:
                        hi = mid
                    else:
                        lo = mid
                return hi
        return None


def simulate(layers: list, ext: list, couplings: list, t_end: float, dps: int = DPS) -> list:
    """layers: Layer objects; ext: per layer a list of (time, weights row [n]) external events
    (distinct times); couplings: (src, dst, W [ns][nd], D [ns][nd]) in the engine's order.
    Returns the spike times per layer and neuron (lists of mpf)."""
    with mp.workdps(dps):
        t, T_end = mp.mpf(0), mp.mpf(t_end)
        ext = [sorted((mp.mpf(te), [mp.mpf(w) for w in row]) for te, row in evs) for evs in ext]
        ptr = [0] * len(layers)
        spikes = [[[] for _ in range(l.n)] for l in layers]
        rows = []  # [coupling, j, t_spike, {k: arrival}]
        while True:
            nxt_ext = min((ext[a][ptr[a]][0] for a in range(len(layers)) if ptr[a] < len(ext[a])), default=mp.inf)
            nxt_rec = min((min(r[3].values()) for r in rows if r[3]), default=mp.inf)
            T = min(nxt_ext, nxt_rec, T_end)
            blocked = {(couplings[r[0]][0], r[1]) for r in rows if r[2] in r[3].values()}
            best, who = mp.inf, []
            for a, l in enumerate(layers):
                for k in range(l.n):
                    if (a, k) in blocked:
                        continue
                    D = l.first_crossing(k, T - t)
                    if D is None:
                        continue
                    if D < best - mp.mpf(10) ** -30:
                        best, who = D, [(a, k)]
                    elif abs(D - best) <= mp.mpf(10) ** -30:
                        who.append((a, k))
            if who:
                for l in layers:
                    l.advance(best)
                t += best
                for a, k in who:
                    layers[a].v[k] = mp.mpf(0)
                    spikes[a][k].append(t)
                    for ci, (src, dst, W, D) in enumerate(couplings):
                        if src == a:
                            arr = {m: t + mp.mpf(D[k][m]) for m in range(layers[dst].n)
                                   if t + mp.mpf(D[k][m]) <= T_end}
                            rows.append([ci, k, t, arr])
                continue
            if nxt_rec <= nxt_ext and nxt_rec <= T_end:
                due = [r for r in rows if T in r[3].values()]
                r = min(due, key=lambda r: (r[0], r[1], r[2]))
                for l in layers:
                    l.advance(T - t)
                t = T
                src, dst, W, D = couplings[r[0]]
                for m, ta in list(r[3].items()):
                    if ta == T:
                        layers[dst].jump(m, mp.mpf(W[r[1]][m]))
                        del r[3][m]
                rows = [x for x in rows if x[3]]
                continue
            if nxt_ext <= T_end:
                a = min(range(len(layers)), key=lambda a: ext[a][ptr[a]][0] if ptr[a] < len(ext[a]) else mp.inf)
                for l in layers:
                    l.advance(T - t)
                t = T
                for m, w in enumerate(ext[a][ptr[a]][1]):
                    layers[a].jump(m, w)
                ptr[a] += 1
                continue
            return spikes
