"""Independent high-precision (mpmath, 50 digits by default) reference simulator of ONE linear
hybrid neuron, written from the semantics in DESIGN.md section 3 and independent of the compiler:
no sympy closed forms, no isolation chain. Engines are tested against it.

    dx/dt = A x + a0 between events; input event (t_k, w_k): x <- x + B w_k;
    spike when u = c^T x >= theta (threshold enabled); at a spike: x <- R x + r and the threshold
    is disabled on [t*, t* + t_ref); if u >= theta when it is re-enabled, the neuron spikes then.

Conventions (shared with the engines): the neuron starts at t = 0 in state x0; events are
processed in time order (stable for ties); a jump that lifts u to >= theta spikes at the event
time itself; t_end=None means "to infinity", realised as the last event + 60 of the slowest
time constants (exp(-60) ~ 1e-26 leaves nothing to cross unless the equilibrium is above theta).

Propagation uses a Taylor series of the augmented matrix [[A, a0], [0, 0]] applied to vectors
(exact to the working precision, substepped, or scaling-and-squaring for long gaps). Crossings:
a grid fine against the fastest time constant is screened in float64 (a cell on which a generous
Taylor bound keeps u >= 1e-6 below theta cannot cross); every other cell is examined in full
precision: the sign changes of u', and of u'' (to split cells holding two extrema), isolate the
monotone pieces; the first piece where u reaches theta is bisected and finished by guarded
Newton to ~dps-8 digits. Cost: ~20-100 ms per event at 50 digits (pure-Python mpmath).

    mp_simulate(A, a0, B, c, theta, R, r, t_ref, x0, times, weights, dps=50) -> list[mpf]
    HAND_MODELS[name](params) -> dict(A=..., a0=..., B=..., c=..., theta=..., R=..., r=...,
                                      t_ref=..., x0=...)
"""

from __future__ import annotations

from typing import Optional, Sequence

import mpmath as mp
import numpy as np

# ----------------------------------------------------------------------------- small linear algebra
# Plain lists of mpf: mpmath's matrix class is ~10x slower for these 2-5 dimensional products.


def _vec(v, d=None) -> list:
    if isinstance(v, mp.matrix):
        v = [v[i] for i in range(v.rows * v.cols)]
    out = [mp.mpf(e) if not isinstance(e, (list, tuple)) else mp.mpf(e[0]) for e in v]
    if d is not None and len(out) != d:
        raise ValueError(f"expected a vector of length {d}, got {len(out)}")
    return out


def _mat(M, d) -> list:
    if isinstance(M, mp.matrix):
        return [[M[i, j] for j in range(M.cols)] for i in range(M.rows)]
    rows = [[mp.mpf(e) for e in row] for row in M]
    if len(rows) != d or any(len(row) != d for row in rows):
        raise ValueError(f"expected a {d}x{d} matrix")
    return rows


def _matvec(M, v):
    return [mp.fsum(a * b for a, b in zip(row, v)) for row in M]


def _dot(a, b):
    return mp.fsum(x * y for x, y in zip(a, b))


class _Propagator:
    """x(t0 + D) for dx/dt = A x + a0, via the augmented (d+1)-matrix M and Taylor series."""

    def __init__(self, A, a0):
        d = len(A)
        self.d = d
        self.M = [list(A[i]) + [a0[i]] for i in range(d)] + [[mp.mpf(0)] * (d + 1)]
        self.norm = max(mp.fsum(abs(e) for e in row) for row in self.M)
        self.tol = mp.mpf(10) ** (-(mp.mp.dps + 5))

    def _taylor(self, h, v):
        term, acc, k = list(v), list(v), 0
        while True:
            k += 1
            term = [e * h / k for e in _matvec(self.M, term)]
            acc = [a + t for a, t in zip(acc, term)]
            if max(abs(t) for t in term) <= self.tol * (1 + max(abs(a) for a in acc)):
                return acc

    def expv(self, D, v):
        """exp(M D) v for an augmented vector v (last entry 1)."""
        D = mp.mpf(D)
        if D == 0:
            return list(v)
        steps = max(1, int(mp.ceil(self.norm * abs(D) / mp.mpf("0.5"))))
        if steps <= 4:
            for _ in range(steps):
                v = self._taylor(D / steps, v)
            return v
        # long intervals: scaling and squaring of the matrix
        s = int(mp.ceil(mp.log(steps, 2)))
        E = self.step_matrix(D / 2**s)
        for _ in range(s):
            E = [[mp.fsum(E[i][k] * E[k][j] for k in range(len(E))) for j in range(len(E))]
                 for i in range(len(E))]
        return _matvec(E, v)

    def step_matrix(self, h):
        """exp(M h) (||M h|| <= 1/2 expected) as a list of rows, by Taylor on unit vectors."""
        n = self.d + 1
        cols = [self._taylor(h, [mp.mpf(1) if i == j else mp.mpf(0) for i in range(n)])
                for j in range(n)]
        return [[cols[j][i] for j in range(n)] for i in range(n)]


# ----------------------------------------------------------------------------- the simulator


def _rates(A) -> list[float]:
    ev = np.linalg.eigvals(np.array([[float(e) for e in row] for row in A]))
    return [abs(complex(e)) for e in ev if abs(complex(e)) > 0]


def mp_simulate(
    A,
    a0,
    B,
    c,
    theta,
    R,
    r,
    t_ref,
    x0,
    times: Sequence,
    weights: Sequence,
    dps: int = 50,
    t_end=None,
    max_spikes: int = 10_000,
    return_state: bool = False,
):
    """Spike times (mpf, ms) of one neuron driven by events (times[k], weights[k]).

    B is the jump vector of the (single) port used. theta/c None: the neuron never spikes.
    With return_state=True, returns (spikes, x at t_end) instead."""
    with mp.workdps(dps):
        d = len(_vec(x0))
        A_ = _mat(A, d)
        a0_ = _vec(a0, d)
        B_ = _vec(B, d)
        R_ = _mat(R, d)
        r_ = _vec(r, d)
        x = _vec(x0, d)
        spiking = c is not None and theta is not None
        c_ = _vec(c, d) if spiking else [mp.mpf(0)] * d
        th = mp.mpf(theta) if spiking else mp.inf
        tref = mp.mpf(t_ref)
        ev = sorted(zip((mp.mpf(t) for t in times), (mp.mpf(w) for w in weights)), key=lambda p: p[0])
        if ev and ev[0][0] < 0:
            raise ValueError("event times must be >= 0 (the neuron starts at t = 0)")
        rates = _rates(A_)
        tau_min = 1 / max(rates) if rates else 1.0
        tau_max = 1 / min(rates) if rates else 1.0
        if t_end is None:
            t_end = (ev[-1][0] if ev else mp.mpf(0)) + 60 * mp.mpf(tau_max)
        t_end = mp.mpf(t_end)
        sim = _Sim(A_, a0_, c_, th, R_, r_, tref, mp.mpf(tau_min), max_spikes)
        t = mp.mpf(0)
        for tk, wk in ev + [(t_end, None)]:
            if tk > t_end:
                tk, wk = t_end, None
            x, t = sim.advance(x, t, tk)
            if wk is None:
                break
            x = [a + b * wk for a, b in zip(x, B_)]
            if spiking:
                while sim.ref_end <= t and _dot(c_, x) >= th and len(sim.spikes) < max_spikes:
                    x = sim.spike(x, t)
        return (sim.spikes, x) if return_state else sim.spikes


def _expm_f64(M):
    """Float64 matrix exponential for the screening grid only (never for reported values)."""
    from scipy.linalg import expm

    return expm(M)


class _Sim:
    def __init__(self, A, a0, c, theta, R, r, t_ref, tau_min, max_spikes):
        self.A, self.a0, self.c, self.theta = A, a0, c, theta
        self.R, self.r, self.t_ref = R, r, t_ref
        self.prop = _Propagator(A, a0)
        self.h = tau_min / 16  # grid cell width: u is nearly polynomial on a cell
        self.ref_end = -mp.inf
        self.spikes: list = []
        self.max_spikes = max_spikes
        self.cA = [_dot(c, [A[i][j] for i in range(len(c))]) for j in range(len(c))]  # c^T A
        self.cAA = [_dot(self.cA, [A[i][j] for i in range(len(c))]) for j in range(len(c))]
        self.cAAA = [_dot(self.cAA, [A[i][j] for i in range(len(c))]) for j in range(len(c))]
        self.d = len(c)
        self.M_f = np.array([[float(e) for e in row] for row in self.prop.M])
        self.c_f = np.array([float(e) for e in c])
        self.cA_f = np.array([float(e) for e in self.cA])
        self.cAA_f = np.array([float(e) for e in self.cAA])
        self.ca0_f = float(_dot(c, a0))
        self.cAa0_f = float(_dot(self.cA, a0))

    # potentials and derivatives of a state x
    def f(self, x):
        return _dot(self.c, x) - self.theta

    def g(self, x):  # u' = c^T (A x + a0)
        return _dot(self.cA, x) + _dot(self.c, self.a0)

    def g2(self, x):  # u'' = c^T A (A x + a0)
        return _dot(self.cAA, x) + _dot(self.cA, self.a0)

    def at(self, x, D):
        return self.prop.expv(D, x + [mp.mpf(1)])[:-1]

    def spike(self, x, t):
        self.spikes.append(t)
        self.ref_end = t + self.t_ref
        return [a + b for a, b in zip(_matvec(self.R, x), self.r)]

    def advance(self, x, t, t_target):
        """Simulate from (x, t) to t_target, spiking on the way; returns (x, t_target)."""
        spiking = self.theta != mp.inf
        while True:
            if not spiking or len(self.spikes) >= self.max_spikes:
                return self.at(x, t_target - t), t_target
            if self.ref_end > t:
                if self.ref_end >= t_target:
                    return self.at(x, t_target - t), t_target
                x, t = self.at(x, self.ref_end - t), self.ref_end
                if self.f(x) >= 0:
                    x = self.spike(x, t)
                    continue
            if self.f(x) >= 0:  # only after a reset that leaves u above theta
                x = self.spike(x, t)
                continue
            Ds = self.first_crossing(x, t_target - t)
            if Ds is None:
                return self.at(x, t_target - t), t_target
            x, t = self.at(x, Ds), t + Ds
            x = self.spike(x, t)

    # -- crossing search
    def first_crossing(self, x0, Dmax):
        """Grid screening in float64: a cell on which u stays >= 1e-6 below theta by a generous
        Taylor bound cannot cross (float errors ~1e-14 cannot fake that); every other cell is
        examined in full precision."""
        if Dmax <= 0:
            return None
        n = max(4, int(mp.ceil(Dmax / self.h)))
        hh = Dmax / n
        if self.prop.norm * hh > mp.mpf("0.5"):
            n = int(mp.ceil(Dmax * self.prop.norm * 2))
            hh = Dmax / n
        E = _expm_f64(self.M_f * float(hh))
        xs = np.empty((n + 1, self.d + 1))
        xs[0] = [float(e) for e in x0] + [1.0]
        for i in range(n):
            xs[i + 1] = E @ xs[i]
        xs = xs[:, :-1]
        f = xs @ self.c_f - float(self.theta)
        g = xs @ self.cA_f + self.ca0_f
        g2 = xs @ self.cAA_f + self.cAa0_f
        margin = 1e-6 * max(1.0, abs(float(self.theta)))
        # a generous Taylor bound of how far u can rise inside a cell of width hh
        hf = float(hh)
        rise = 2 * hf * (np.maximum(abs(g[:-1]), abs(g[1:])) + hf * np.maximum(abs(g2[:-1]), abs(g2[1:])))
        flagged = np.maximum(f[:-1], f[1:]) + rise > -margin
        for i in np.nonzero(flagged)[0]:
            a, b = i * hh, (i + 1) * hh
            D = self.cell(x0, a, b, self.at(x0, a), self.at(x0, b), depth=0)
            if D is not None:
                return D
        return None

    def cell(self, x0, a, b, xa, xb, depth):
        """First upward crossing of theta in [a, b] (offsets from the interval start x0);
        xa, xb: the states at a and b. Solves are done from xa (short, cheap propagations)."""
        fa, fb, ga, gb = self.f(xa), self.f(xb), self.g(xa), self.g(xb)
        if fa >= 0:  # only reachable at a cell boundary that is exactly a root
            return a if a > 0 else None
        if ga > 0 and gb < 0:  # one interior maximum m (more would need more zeros of u'')
            m = self._solve(xa, a, b, self.g, self.g2, increasing=False)
            if self.f(self.at(xa, m - a)) >= 0:
                return self._solve(xa, a, m, self.f, self.g, increasing=True)
            return None
        if ga < 0 and gb > 0:  # interior minimum: only [min, b] can cross upwards
            return self._solve(xa, a, b, self.f, self.g, increasing=True) if fb >= 0 else None
        # u' has one sign at both ends; two extrema inside would need a sign change of u''
        g2a, g2b = self.g2(xa), self.g2(xb)
        if depth < 4 and (g2a > 0) != (g2b > 0) and g2a != 0 and g2b != 0:
            m = self._solve(xa, a, b, self.g2, self.g3, increasing=g2a < 0)
            xm = self.at(xa, m - a)
            if (self.g(xm) > 0) != (ga > 0):
                r = self.cell(x0, a, m, xa, xm, depth + 1)
                return r if r is not None else self.cell(x0, m, b, xm, xb, depth + 1)
        return self._solve(xa, a, b, self.f, self.g, increasing=True) if fb >= 0 else None

    def g3(self, x):  # third derivative: c^T A^2 (A x + a0)
        return _dot(self.cAAA, x) + _dot(self.cAA, self.a0)

    def _solve(self, xa, a, b, fn, dfn, increasing):
        """The zero of fn(x(D)), monotone on [a, b] (fn(a) < 0 <= fn(b) if increasing), found
        by bisection to 1e-8 of the width and then guarded Newton to ~dps-8 digits; for an
        increasing fn the result is on the fn >= 0 side."""
        lo, hi, width = a, b, b - a

        def val(D):
            v = fn(self.at(xa, D - a))
            return v if increasing else -v

        while hi - lo > width * mp.mpf("1e-8"):
            m = (lo + hi) / 2
            if val(m) < 0:
                lo = m
            else:
                hi = m
        D = hi
        tol = mp.mpf(10) ** (-(mp.mp.dps - 8)) * (1 + abs(hi))
        for _ in range(60):
            xD = self.at(xa, D - a)
            fD, gD = fn(xD), dfn(xD)
            if (fD < 0) == increasing:
                lo = max(lo, D)
            else:
                hi = min(hi, D)
            Dn = D - fD / gD if gD != 0 else (lo + hi) / 2
            if not (lo <= Dn <= hi):
                Dn = (lo + hi) / 2
            if abs(Dn - D) <= tol:
                return Dn
            D = Dn
        return D


# ----------------------------------------------------------------------------- hand-written models
# Written by hand from the .snn semantics (DESIGN.md section 2, interfaces.md); independent of the
# compiler's analysis. State order is free here: only c^T x matters to spike times.


def _p(params, defaults):
    p = dict(defaults)
    for k, v in (params or {}).items():
        if k not in p:
            raise KeyError(f"unknown parameter {k!r}; known: {sorted(p)}")
        p[k] = v
    return {k: mp.mpf(v) for k, v in p.items()}


def _hp(fn):
    """Build a model at >= 60 digits (mpf values keep their precision afterwards)."""

    def wrapped(params=None):
        with mp.workdps(max(60, mp.mp.dps)):
            return fn(params)

    wrapped.__name__, wrapped.__doc__ = fn.__name__, fn.__doc__
    return wrapped


def _model(A, a0, B, c, theta, R, r, t_ref, x0):
    return dict(A=A, a0=a0, B=B, c=c, theta=theta, R=R, r=r, t_ref=t_ref, x0=x0)


@_hp
def lif(params=None):
    """neuron LIF: dv/dt = -v/tau_m; on input(w) { v += w }; spike when v >= v_th; v = v_reset."""
    p = _p(params, dict(tau_m=20.0, v_th=1.0, v_reset=0.0, t_ref=0.0))
    return _model(
        A=[[-1 / p["tau_m"]]], a0=[0], B=[1], c=[1], theta=p["v_th"],
        R=[[0]], r=[p["v_reset"]], t_ref=p["t_ref"], x0=[0],
    )


@_hp
def cuba_lif(params=None):
    """CubaLIF (DESIGN.md section 2): x = (v, i); dv = (i - v)/tau_m, di = -i/tau_s; i += w."""
    p = _p(params, dict(tau_m=20.0, tau_s=5.0, v_th=1.0, v_reset=0.0, t_ref=0.0))
    tm, ts = p["tau_m"], p["tau_s"]
    return _model(
        A=[[-1 / tm, 1 / tm], [0, -1 / ts]], a0=[0, 0], B=[0, 1], c=[1, 0], theta=p["v_th"],
        R=[[0, 0], [0, 1]], r=[p["v_reset"], 0], t_ref=p["t_ref"], x0=[0, 0],
    )


@_hp
def alpha_lif(params=None):
    """AlphaLIF: x = (v, i, g); dv = (i - v)/tau_m, di = (g - i)/tau_s, dg = -g/tau_s; g += w."""
    p = _p(params, dict(tau_m=20.0, tau_s=5.0, v_th=1.0, v_reset=0.0, t_ref=0.0))
    tm, ts = p["tau_m"], p["tau_s"]
    return _model(
        A=[[-1 / tm, 1 / tm, 0], [0, -1 / ts, 1 / ts], [0, 0, -1 / ts]], a0=[0, 0, 0],
        B=[0, 0, 1], c=[1, 0, 0], theta=p["v_th"],
        R=[[0, 0, 0], [0, 1, 0], [0, 0, 1]], r=[p["v_reset"], 0, 0], t_ref=p["t_ref"], x0=[0, 0, 0],
    )


@_hp
def adaptive_lif(params=None):
    """AdaptiveLIF: x = (v, i, a); dv = (i - v)/tau_m, di = -i/tau_s, da = -a/tau_a; i += w;
    spike when v - a >= v_th; on spike { v = v_reset  a += beta }."""
    p = _p(params, dict(tau_m=20.0, tau_s=5.0, tau_a=100.0, beta=0.2, v_th=1.0, v_reset=0.0,
                        t_ref=0.0))
    tm, ts, ta = p["tau_m"], p["tau_s"], p["tau_a"]
    return _model(
        A=[[-1 / tm, 1 / tm, 0], [0, -1 / ts, 0], [0, 0, -1 / ta]], a0=[0, 0, 0],
        B=[0, 1, 0], c=[1, 0, -1], theta=p["v_th"],
        R=[[0, 0, 0], [0, 1, 0], [0, 0, 1]], r=[p["v_reset"], 0, p["beta"]], t_ref=p["t_ref"],
        x0=[0, 0, 0],
    )


HAND_MODELS = {"LIF": lif, "CubaLIF": cuba_lif, "AlphaLIF": alpha_lif, "AdaptiveLIF": adaptive_lif}


def simulate_model(name: str, params: Optional[dict], times, weights, **kw):
    """Convenience: mp_simulate on HAND_MODELS[name](params)."""
    m = HAND_MODELS[name](params)
    return mp_simulate(m["A"], m["a0"], m["B"], m["c"], m["theta"], m["R"], m["r"], m["t_ref"],
                       m["x0"], times, weights, **kw)


def peak_cuba(w, tau_m, tau_s):
    """Closed-form peak (time, value) of CubaLIF's v after one input of weight w at t = 0
    (distinct time constants), for constructing inputs that only just reach threshold."""
    tm, ts = mp.mpf(tau_m), mp.mpf(tau_s)
    if tm == ts:
        return tm, mp.mpf(w) / mp.e
    tp = tm * ts / (tm - ts) * mp.log(tm / ts)
    v = mp.mpf(w) * ts / (tm - ts) * (mp.exp(-tp / tm) - mp.exp(-tp / ts))
    return tp, v



def mp_readout(A, a0, B, c, x0, times: Sequence, weights: Sequence, t_end, dps: int = 30, grid: int = 48,
               resets: Sequence = (), R=None, r=None):
    """(max of u = c^T x over [0, t_end], integral of u over [0, t_end]) of one neuron, in mpmath:
    the integral as an extra state z' = c^T x of the augmented system; the maximum over u at every
    event (before and after its jump), on a grid of each interval, and at the zeros of u' that the
    grid brackets (+ to -), refined by bisection in full precision. An event at exactly t_end is
    applied (closed interval); later events are ignored. `resets`: known spike times (e.g. from
    mp_simulate) where x <- R x + r, before an arrival at the same time (c^T B = 0 neurons)."""
    with mp.workdps(dps):
        d = len(_vec(x0))
        A_, a0_, B_, c_ = _mat(A, d), _vec(a0, d), _vec(B, d), _vec(c, d)
        A2 = [list(A_[i]) + [mp.mpf(0)] for i in range(d)] + [list(c_) + [mp.mpf(0)]]
        prop = _Propagator(A2, list(a0_) + [mp.mpf(0)])
        t_end = mp.mpf(t_end)
        ev = sorted(zip((mp.mpf(t) for t in times), (mp.mpf(w) for w in weights)), key=lambda p: p[0])
        # (time, order, weight): a reset (weight "reset") before an arrival at the same time
        ev = sorted([(tk, 1, wk) for tk, wk in ev] + [(mp.mpf(s), 0, "reset") for s in resets],
                    key=lambda p: (p[0], p[1]))
        ev = [(tk, wk) for tk, _, wk in ev]
        R_ = _mat(R, d) if resets else None
        r_ = _vec(r, d) if resets else None
        x = _vec(x0, d) + [mp.mpf(0), mp.mpf(1)]  # state, integral, the augmented 1

        def u(v):
            return _dot(c_, v[:d])

        def du(v):
            return _dot(c_, [a + b for a, b in zip(_matvec(A_, v[:d]), a0_)])

        best, t = u(x), mp.mpf(0)
        for tk, wk in ev + [(t_end, None)]:
            if tk > t_end:
                tk, wk = t_end, None
            D = tk - t
            pts = [(mp.mpf(0), x)]  # grid states, each from the previous one (short steps)
            for i in range(1, grid + 1):
                pts.append((D * i / grid, prop.expv(D * i / grid - pts[-1][0], pts[-1][1])))
            best = max(best, *(u(v) for _, v in pts))
            for (s0, v0), (s1, v1) in zip(pts[:-1], pts[1:]):
                if du(v0) > 0 and du(v1) < 0:
                    lo, hi = s0, s1
                    for _ in range(int(dps * 1.7) + 8):  # half the digits: u's error is quadratic
                        mid = (lo + hi) / 2
                        lo, hi = (mid, hi) if du(prop.expv(mid - s0, v0)) > 0 else (lo, mid)
                    best = max(best, u(prop.expv((lo + hi) / 2 - s0, v0)))
            x, t = pts[-1][1], tk
            if wk is None:
                break
            if isinstance(wk, str):  # a known spike: the reset
                x = [a + b for a, b in zip(_matvec(R_, x[:d]), r_)] + x[d:]
            else:
                x = [a + b * wk for a, b in zip(x[:d], B_)] + x[d:]
            best = max(best, u(x))
        return best, x[d]
