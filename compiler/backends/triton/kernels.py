"""Generic Triton kernels around the per-neuron helpers printed by triton_codegen.

Two kernels per input port, both with one program per (sample, block of BN neurons):

- seq_kernel_<port>: the exact event loop (GPU baseline, correctness oracle): events one at a
  time; in each inter-event interval, the cheap no-crossing test, the crossing isolation, the
  spike-time solve, reset and refractory, until the interval holds no more spikes.
- scan_kernel_<port>: DESIGN.md section 4. From the lane's true state, K events are composed
  speculatively with tl.associative_scan over the affine event maps (no spike assumed); every
  inter-event interval of the chunk is tested for a crossing in parallel; the first crossing is
  solved, reset, and the lane restarts from the spike time with the unconsumed events. Lanes
  restart independently (per-lane event positions). Only lane states at restart points are kept.

Events: arrival order per lane through PERM (shared [B, n] order when there are no delays:
stride_j = 0; per-neuron [B, N, n] permutations of the same event arrays with delays). The
lane's event count NEV counts the arrivals <= t_end; a pseudo-event at index NEV marks t_end
(its interval is the final one). Semantics follow tests/mpref.py: the neuron starts at t = 0;
a jump lifting u to >= theta spikes at the event time; the threshold is disabled on
[t*, t* + t_ref); t_end=None means the last arrival + 60 slowest time constants.
"""

from __future__ import annotations


def _v(prefix: str, d: int, suffix: str = "") -> str:
    return ", ".join(f"{prefix}{i}{suffix}" for i in range(d))


EV_TIME = '''

@triton.jit
def _ev_time(idx, valid, nev, tend, b, j, T, CH, PERM, DL, N, s_tb, s_chb, s_pb, s_pj,
             HAS_DELAY: tl.constexpr):
    # arrival time and channel of the lane's event number idx (t_end for the pseudo-event)
    isev = valid & (idx < nev)
    e = tl.load(PERM + b * s_pb + j * s_pj + idx, mask=isev, other=0)
    ch = tl.load(CH + b * s_chb + e, mask=isev, other=0)
    t = tl.load(T + b * s_tb + e, mask=isev, other=0.0)
    if HAS_DELAY:
        t = t + tl.load(DL + ch * N + j, mask=isev, other=0.0)
    t = tl.where(valid & (idx == nev), tend, t)
    return t, ch, isev
'''

ARGS = ("T, CH, PERM, NEV, TEND, W, DL, PRM, OUT, CNT, OVF, N, S, s_tb, s_chb, s_pb, s_pj, "
        "s_nb, s_nj, s_wb")
EVARGS = "T, CH, PERM, DL, N, s_tb, s_chb, s_pb, s_pj, HAS_DELAY"


def _prologue(g, dt: str) -> list[str]:
    d, P = g.d, g.P
    L = [
        "    b = tl.program_id(0)",
        "    j = tl.program_id(1) * BN + tl.arange(0, BN)",
        "    jm = j < N",
    ]
    for k, name in enumerate(g.pnames):
        L.append(f"    {name} = tl.load(PRM + {k} * N + j, mask=jm, other=1.0)")
    L += [
        f"    ref = tl.zeros([BN], dtype={dt})",
        f"    th = theta(ref, {P})",
        f"    tr = t_ref(ref, {P})",
        f"    {_v('x', d)} = state_init(ref, {P})",
        "    nev = tl.load(NEV + b * s_nb + j * s_nj, mask=jm, other=0)",
        "    tend = tl.load(TEND + b * s_nb + j * s_nj, mask=jm, other=0.0)",
        "    if AUTO_END:",
        f"        tslow = tau_slow(ref, {P})",
        "        tend = tend + 60.0 * tslow",
        "    tc = ref",
        "    ref_end = ref - float('inf')",
        "    cnt = tl.zeros([BN], dtype=tl.int32)",
        "    ovf = tl.zeros([BN], dtype=tl.int32)",
        "    dead = ~jm",
    ]
    return L


def _record(g, ind: str, xs: str, extra: list[str], pre: list[str] = ()) -> list[str]:
    """Solve the bracketed crossing from state `xs` + (LO, HI, SS), record, reset (`pre`: lines
    run after the solve, before anything changes: the adjoint's tape)."""
    d, P = g.d, g.P
    return [
        f"{ind}Dst = solve_crossing({_v(xs, d)}, LO, HI, th, {P})",
        f"{ind}tsp = SS + Dst",
        f"{ind}{_v('ys', d)} = propagate({_v(xs, d)}, Dst, {P})",
        f"{ind}{_v('rs', d)} = reset({_v('ys', d)}, {P})",
        f"{ind}full = cnt >= S",
        f"{ind}rec = spike & ~full",
    ] + list(pre) + [
        f"{ind}tl.store(OUT + (b * N + j) * S + cnt, tsp, mask=rec)",
        f"{ind}ovf = tl.where(spike & full, 1, ovf)",
        f"{ind}dead = dead | (spike & full)",
    ] + [f"{ind}x{i} = tl.where(spike, rs{i}, x{i})" for i in range(d)] + [
        f"{ind}tc = tl.where(spike, tsp, tc)",
        f"{ind}ref_end = tl.where(rec, tsp + tr, ref_end)",
        f"{ind}cnt = cnt + rec.to(tl.int32)",
    ] + extra


def seq_step(g, port: str, ind: str, tape=None) -> list[str]:
    """One iteration (event number k) of the exact event loop, at indentation `ind`: every spike
    in the interval before the event, then propagate to the event and apply its jump. `tape`
    (the adjoint's replay, triton_adjoint.py) adds lines that record each step: called as
    tape("spike", ind) before a reset and tape("prop", ind) before the propagation."""
    d, P, X = g.d, g.P, g.X
    i1, i2 = ind + "    ", ind + "        "
    L = [
        f"{ind}live = jm & (k <= nev)",
        f"{ind}kv = tl.zeros([BN], dtype=tl.int32) + k",
        f"{ind}te, ch, isev = _ev_time(kv, live, nev, tend, b, j, {EVARGS})",
        f"{ind}w = tl.load(W + b * s_wb + ch * N + j, mask=isev, other=0.0)",
        f"{ind}te = tl.where(live, te, tc)",
        f"{ind}act = live & ~dead",
        f"{ind}while tl.max(act.to(tl.int32)) > 0:",
        f"{i1}s = tl.maximum(tc, ref_end)",
        f"{i1}test = act & (s <= te)",
        f"{i1}{_v('xs', d)} = propagate({X}, tl.where(test, s - tc, 0.0), {P})",
        f"{i1}nc = no_cross({_v('xs', d)}, th, {P})",
        f"{i1}cand = test & ~nc",
        f"{i1}spike = cand & (ref != ref)",
        f"{i1}LO = ref",
        f"{i1}HI = ref",
        f"{i1}if tl.max(cand.to(tl.int32)) > 0:",
        f"{i2}fnd, LO, HI = first_crossing({_v('xs', d)}, tl.where(cand, te - s, 0.0), th, {P})",
        f"{i2}spike = cand & fnd",
        f"{i1}SS = s",
        f"{i1}if tl.max(spike.to(tl.int32)) > 0:",
    ]
    pre = tape("spike", i2) if tape else []
    L += _record(g, i2, "xs", [i2 + "act = rec"], pre=pre)
    L += [f"{i1}else:", f"{i2}act = spike"]
    L += tape("prop", ind) if tape else []
    L += [
        f"{ind}{X} = propagate({X}, tl.where(live, te - tc, 0.0), {P})",
        f"{ind}tc = te",
        f"{ind}{X} = jump_{port}({X}, tl.where(isev, w, 0.0), {P})",
    ]
    return L


def _seq_kernel(g, port: str, dt: str) -> list[str]:
    L = ["", "", "@triton.jit",
         f"def seq_kernel_{port}({ARGS}, BN: tl.constexpr, HAS_DELAY: tl.constexpr,",
         "                     AUTO_END: tl.constexpr):"]
    L += _prologue(g, dt)
    L += [
        "    nmax = tl.max(tl.where(jm, nev, 0))",
        "    for k in range(0, nmax + 1):",
    ]
    L += seq_step(g, port, " " * 8)
    L += [
        "    tl.store(CNT + b * N + j, cnt, mask=jm)",
        "    tl.store(OVF + b * N + j, ovf, mask=jm)",
    ]
    return L


def _scan_kernel(g, port: str, dt: str) -> list[str]:
    d, P, X = g.d, g.P, g.X
    PT = ", ".join("t" + n for n in g.pnames)
    M = ", ".join(f"m{i}_{j}" for i, j in g.nz) + ", " + _v("bb", d)
    L = ["", "", "@triton.jit",
         f"def scan_kernel_{port}({ARGS}, KC, K: tl.constexpr, BN: tl.constexpr,",
         "                      HAS_DELAY: tl.constexpr, AUTO_END: tl.constexpr):"]
    L += _prologue(g, dt)
    L += [f"    t{n} = {n}[:, None]" for n in g.pnames]
    L += [
        "    tht = th[:, None]",
        "    pos = tl.zeros([BN], dtype=tl.int32)",
        "    done = ~jm",
        "    kk = tl.arange(0, K)[None, :]",
        "    jt = j[:, None]",
        "    nevt = nev[:, None]",
        "    tendt = tend[:, None]",
        "    while tl.min(done.to(tl.int32)) == 0:",
        "        # ---- the interval from the lane's true state to its next event",
        f"        te0, ch0, isev0 = _ev_time(pos, ~done, nev, tend, b, j, {EVARGS})",
        "        s0 = tl.maximum(tc, ref_end)",
        "        test0 = ~done & ~dead & (s0 <= te0)",
        f"        {_v('xa', d)} = propagate({X}, tl.where(test0, s0 - tc, 0.0), {P})",
        f"        nc0 = no_cross({_v('xa', d)}, th, {P})",
        "        cand0 = test0 & ~nc0",
        "        found0 = cand0 & (ref != ref)",
        "        lo0 = ref",
        "        hi0 = ref",
        "        if tl.max(cand0.to(tl.int32)) > 0:",
        f"            f0, lo0, hi0 = first_crossing({_v('xa', d)}, tl.where(cand0, te0 - s0, 0.0), th, {P})",
        "            found0 = cand0 & f0",
        "        # ---- speculative composition of the next K events (no spike assumed)",
        "        idx = pos[:, None] + kk",
        "        inb = (idx <= nevt) & (~done)[:, None] & (kk < KC)",
        f"        te, ch, isev = _ev_time(idx, inb, nevt, tendt, b, jt, {EVARGS})",
        f"        tp, chp, isevp = _ev_time(idx - 1, inb & (kk > 0), nevt, tendt, b, jt, {EVARGS})",
        "        tp = tl.where(kk == 0, tc[:, None], tp)",
        "        w = tl.load(W + b * s_wb + ch * N + jt, mask=isev, other=0.0)",
        "        Dk = tl.where(inb, te - tp, 0.0)",
        f"        {M} = maps_{port}(Dk, tl.where(isev, w, 0.0), {PT})",
        f"        {M} = tl.associative_scan(({M}), 1, combine)",
        f"        {_v('xt', d)} = apply_map({M}, {_v('x', d, '[:, None]')})",
        "        # ---- crossing test on every interval of the chunk, in parallel",
        "        nxt = inb & (idx + 1 <= nevt)",
        f"        tn, chn, isevn = _ev_time(idx + 1, nxt, nevt, tendt, b, jt, {EVARGS})",
        "        sk = tl.maximum(te, ref_end[:, None])",
        "        testk = nxt & (kk < KC - 1) & (~dead)[:, None] & (sk <= tn)",
        f"        {_v('xk', d)} = propagate({_v('xt', d)}, tl.where(testk, sk - te, 0.0), {PT})",
        f"        nck = no_cross({_v('xk', d)}, tht, {PT})",
        "        candk = testk & ~nck",
        "        foundk = candk & (Dk != Dk)",
        "        lok = Dk * 0.0",
        "        hik = Dk * 0.0",
        "        if tl.max(tl.max(candk.to(tl.int32), axis=1), axis=0) > 0:",
        f"            fk, lok, hik = first_crossing({_v('xk', d)}, tl.where(candk, tn - sk, 0.0), tht, {PT})",
        "            foundk = candk & fk",
        "        kstar = tl.min(tl.where(foundk, kk, K), axis=1)",
        "        anyk = kstar < K",
        "        sel = kk == kstar[:, None]",
        "        spike = found0 | anyk",
    ]
    for i in range(d):
        L.append(f"        xz{i} = tl.where(found0, xa{i}, tl.sum(tl.where(sel, xk{i}, 0.0), axis=1))")
    L += [
        "        LO = tl.where(found0, lo0, tl.sum(tl.where(sel, lok, 0.0), axis=1))",
        "        HI = tl.where(found0, hi0, tl.sum(tl.where(sel, hik, 0.0), axis=1))",
        "        SS = tl.where(found0, s0, tl.sum(tl.where(sel, sk, 0.0), axis=1))",
        "        # ---- lanes without a crossing consume the whole chunk",
        "        adv = ~done & ~spike",
    ]
    for i in range(d):
        L.append(f"        x{i} = tl.where(adv, tl.sum(tl.where(kk == K - 1, xt{i}, 0.0), axis=1), x{i})")
    L += [
        "        tc = tl.where(adv, tl.max(tl.where(inb, te, -float('inf')), axis=1), tc)",
        "        pos = tl.where(adv, pos + KC, pos)",
        "        if tl.max(spike.to(tl.int32)) > 0:",
    ]
    L += _record(g, " " * 12, "xz", [" " * 12 + "pos = tl.where(~found0 & anyk, pos + kstar + 1, pos)"])
    L += [
        "        done = done | (pos > nev)",
        "    tl.store(CNT + b * N + j, cnt, mask=jm)",
        "    tl.store(OVF + b * N + j, ovf, mask=jm)",
    ]
    return L


def kernel_source(g) -> str:
    if not g.spiking:
        return "\n# no threshold: this neuron never spikes; no event kernels are generated\n"
    dt = g.cfg["tl"]
    L = EV_TIME.splitlines()
    for port in g.ir.ports:
        L += _seq_kernel(g, port, dt)
        L += _scan_kernel(g, port, dt)
    from .adjoint import adjoint_source

    L += adjoint_source(g)
    from .ports import kernels as multiport_kernels, wanted

    if wanted(g):  # several ports per layer: the PMAP kernels (triton_ports.py)
        L += multiport_kernels(g, dt)
    return "\n".join(L) + "\n"
