"""The backward pass of the Triton engines: a reverse associative scan of the adjoint, with the
implicit function theorem at every spike (DESIGN.md sections 5 and 6), generated from the same
NeuronIR as the forward kernels.

Once the forward pass has fixed where the spikes are, every step of a lane (propagate to the
next arrival + jump, or propagate to a spike + reset) is an affine map of the state, and its
adjoint is an affine map of the adjoint vector Lam = (lam_x, lam_t, lam_ref): the adjoint of
the state, of the current time and of the refractory end. The only constant term is dL/dt* of a
recorded spike. So, walking backwards in time,

    Lam_before(row) = F_row Lam_after(row) + f_row,

which composes associatively. Per program (one sample x a block of BN neurons) and per chunk of
KC input events, from the last chunk to the first:

1. restore the lane state checkpointed at the chunk start (phase A: one replay of the forward
   event loop that stores (x, t, refractory end, spike count) every KC events; memory is
   O(B N (n / KC + KT)), never events x chunks);
2. replay the chunk with the forward's own event-loop code (triton_kernels.seq_step), recording
   one tape row per step: interval-start state x, step length D, kind, aux (event index or
   spike rank), at most KT = KC + S + 1 rows;
3. build the rows' affine adjoint maps (the map is linear in Lam, so its columns are the map
   applied to unit vectors; f is the map at Lam = 0), run tl.associative_scan(reverse=True)
   over the rows, shifted by one so that position r holds the composition of rows r+1..end:
   Lam entering row r = that composition applied to the Lam carried in from the next chunk;
4. with every row's entering adjoint known, all gradient contributions of the chunk are
   computed in parallel: dL/dw = lam_x . B at each jump, dL/d(arrival) = lam_t + lam_D (to the
   input time and the delay), parameter derivatives printed from sympy derivatives of the IR's
   own maps (compiler/adjoint_forms.py, shared with the compiled CPU backward), the IFT term at
   solved spikes: dD*/dx = -c^T Phi(D*) / u'(D*), dD*/dp = -(du/dp - dtheta/dp) / u'.

Row formulas (x = interval-start state, xn = Phi(D) x + phi(D), y = A xn + a0):
    PROP   lam_D = lam_x . y;  lam_x <- Phi^T lam_x;  lam_t <- -lam_D;  lam_ref unchanged
    SPIKE  lam_t* = lam_t + lam_ref + dL/dt*;  lam_s = R^T lam_x;  lam_D = lam_s . y + lam_t*;
           lam_x <- Phi^T lam_s + k Phi^T c with k = -lam_D / (c . y) for a solved crossing;
           at a refractory-end spike lam_t <- lam_t* - lam_D, lam_ref <- lam_D.
Gradients accumulate with atomic adds (input times and shared weights are shared by lanes).
"""

from __future__ import annotations

import sympy

from ...adjoint_forms import PROP, SPIKE, SPIKE_NOW, SPIKE_REF, AdjointForms
from .kernels import ARGS, _prologue, _v, seq_step


def _forms(g, port: str):
    return AdjointForms(g.ir, port)


def emit_adjoint_helpers(g) -> None:
    """Per-neuron helpers of the backward kernels (elementwise, any shape)."""
    ir, d, P = g.ir, g.d, g.P
    X = g.X
    L = ", ".join(f"l{i}" for i in range(d))
    lsyms = [sympy.Symbol(f"l{i}", real=True) for i in range(d)]
    for s in lsyms:
        g.names[s] = s.name
    lv = sympy.Matrix(lsyms)
    xv = sympy.Matrix(g.xs)
    # A x + a0: the time derivative of the state
    y = ir.A * xv + ir.a0
    g.fn("deriv", f"{X}, {P}", g.assign({f"y{i}": y[i] for i in range(d)}, "x0"),
         ", ".join(f"y{i}" for i in range(d)))
    # R^T l (the adjoint of the reset)
    rt = ir.R.T * lv
    g.fn("reset_T", f"{L}, {P}", g.assign({f"y{i}": rt[i] for i in range(d)}, "l0"),
         ", ".join(f"y{i}" for i in range(d)))
    # Phi^T l from the structural non-zeros m_ij that maps_<port> returns
    nzs = set(g.nz)
    M = ", ".join(f"m{i}_{j}" for i, j in g.nz)
    body = []
    for jj in range(d):
        terms = [f"m{i}_{jj} * l{i}" for i in range(d) if (i, jj) in nzs]
        body.append(f"    y{jj} = " + (" + ".join(terms) if terms else "l0 * 0.0"))
    g.fn("apply_T", f"{M}, {L}", body, ", ".join(f"y{i}" for i in range(d)))
    g.fn("cvec", f"ref, {P}", g.assign({f"y{i}": ir.c[i] for i in range(d)}, "ref"),
         ", ".join(f"y{i}" for i in range(d)))
    for port, Bk in ir.ports.items():
        g.fn(f"bvec_{port}", f"ref, {P}", g.assign({f"y{i}": Bk[i] for i in range(d)}, "ref"),
             ", ".join(f"y{i}" for i in range(d)))
    _emit_param_forms(g, lsyms)


def _emit_param_forms(g, lsyms) -> None:
    """gpf_*: d/dp of the maps' adjoint pairings, one output per parameter (none: no function)."""
    npar = len(g.pnames)
    if npar == 0:
        return
    d, P = g.d, g.P
    for port in g.ir.ports:
        f = _forms(g, port)
        names = dict(g.names)
        for i in range(d):
            names[f.X[i]] = f"x{i}"
            names[f.L[i]] = f"l{i}"
        outs = [f"q{k}" for k in range(npar)]
        X, L = g.X, ", ".join(s.name for s in lsyms)

        def fn(name, args, exprs, ref):
            from .printer import emit_assignments

            body = emit_assignments({o: e for o, e in zip(outs, exprs)}, names, dtype=g.lit_dtype)
            for o, e in zip(outs, exprs):
                if not sympy.sympify(e).free_symbols:
                    body.append(f"    {o} = tl.zeros_like({ref}) + {o}")
            g.fn(name, args, body, ", ".join(outs))

        fn(f"gpf_prop_{port}", f"{X}, {L}, D, {P}", f.prop, "D")
        fn(f"gpf_reset_{port}", f"{X}, {L}, {P}", f.reset, "x0")
        fn(f"gpf_jump_{port}", f"{L}, {P}", f.jump, "l0")
        fn(f"gpf_init_{port}", f"{L}, {P}", f.init, "l0")
        fn(f"gpf_tref_{port}", f"ref, {P}", f.tref, "ref")
        fn(f"gpf_u_{port}", f"{X}, D, {P}", f.u, "D")


def _lin_fn(g) -> None:
    """adj_lin: one tape row's adjoint map applied to (lam_x, lam_t, lam_ref) and dL/dt* = gg,
    from the row's precomputed quantities; also returns what the gradient terms need."""
    d, P = g.d, g.P
    L = _v("l", d)
    M = ", ".join(f"m{i}_{j}" for i, j in g.nz)
    args = (f"{L}, lt, lref, gg, isprop, normal, at_ref, has, {M}, {_v('y', d)}, {_v('cp', d)}, "
            f"up, {P}")
    b = [
        "    lDp = " + " + ".join(f"l{i} * y{i}" for i in range(d)),
        "    lri = tl.where(has, lref, 0.0)",
        "    lts = lt + lri + gg",
        f"    {_v('s', d)} = reset_T({L}, {P})",
        "    lDs = " + " + ".join(f"s{i} * y{i}" for i in range(d)) + " + lts",
    ]
    b += [f"    u{i} = tl.where(isprop, l{i}, s{i})" for i in range(d)]
    b += [f"    {_v('v', d)} = apply_T({M}, {_v('u', d)})",
          "    kk = tl.where(normal, -lDs / tl.where(normal, up, 1.0), 0.0)"]
    b += [f"    o{i} = tl.where(isprop, v{i}, v{i} + kk * cp{i})" for i in range(d)]
    b += [
        "    ot = tl.where(isprop, -lDp, tl.where(at_ref, lts - lDs, lts))",
        "    orf = tl.where(isprop, lref, tl.where(at_ref, lDs, 0.0))",
    ]
    g.fn("adj_lin", args, b, f"{_v('o', d)}, ot, orf, lDp, kk, lri, {_v('u', d)}")


def _comb_fn(g) -> None:
    """Composition for the reverse scan: acc = the rows after this one, cur = this row:
    result = cur o acc (apply acc first). Dense m x m matrices, m = d + 2, plus offsets."""
    m = g.d + 2
    A = [f"a{i}_{j}" for i in range(m) for j in range(m)] + [f"af{i}" for i in range(m)]
    C = [f"c{i}_{j}" for i in range(m) for j in range(m)] + [f"cf{i}" for i in range(m)]
    b = []
    for i in range(m):
        for j in range(m):
            b.append(f"    r{i}_{j} = " + " + ".join(f"c{i}_{k} * a{k}_{j}" for k in range(m)))
    for i in range(m):
        b.append(f"    rf{i} = " + " + ".join(f"c{i}_{k} * af{k}" for k in range(m)) + f" + cf{i}")
    rets = [f"r{i}_{j}" for i in range(m) for j in range(m)] + [f"rf{i}" for i in range(m)]
    g.fn("adj_combine", ", ".join(A + C), b, ", ".join(rets))


def _tape_lines(g):
    """The replay's tape recorder for triton_kernels.seq_step."""
    d = g.d

    def tape(kind: str, ind: str) -> list[str]:
        if kind == "spike":
            mask, D = "spike", "tsp - tc"
            kd = (f"tl.where(Dst == 0.0, tl.where(SS > tc, {SPIKE_REF}, {SPIKE_NOW}), {SPIKE})")
            aux = "tl.where(rec, cnt, -1)"
        else:
            mask, D, kd = "live", "te - tc", f"tl.zeros([BN], dtype=tl.int32) + {PROP}"
            aux = "tl.where(isev, eidx, -1)"
        L = [f"{ind}eidx = _ev_index(kv, isev, b, j, PERM, s_pb, s_pj)"] if kind == "prop" else []
        L += [
            f"{ind}rmask = {mask} & (rpos < KT)",
            f"{ind}rbase = (lane * KT + rpos) * {d + 1}",
        ]
        L += [f"{ind}tl.store(TF + rbase + {q}, x{q}, mask=rmask)" for q in range(d)]
        L += [
            f"{ind}tl.store(TF + rbase + {d}, {D}, mask=rmask)",
            f"{ind}tl.store(TI + (lane * KT + rpos) * 2, {kd}, mask=rmask)",
            f"{ind}tl.store(TI + (lane * KT + rpos) * 2 + 1, {aux}, mask=rmask)",
            f"{ind}rpos = rpos + ({mask}).to(tl.int32)",
        ]
        return L

    return tape


EV_INDEX = '''

@triton.jit
def _ev_index(idx, isev, b, j, PERM, s_pb, s_pj):
    # the original (unsorted) index of the lane's event number idx
    return tl.load(PERM + b * s_pb + j * s_pj + idx, mask=isev, other=0)
'''

BW_ARGS = (ARGS + ", GOUT, CKF, CKI, TF, TI, GT, GW, GD, GP, s_gwb, NCH, KC")


def _ckpt_store(g, ind: str) -> list[str]:
    d = g.d
    L = [f"{ind}cm = live & ((tl.zeros([BN], dtype=tl.int32) + k) % KC == 0)", f"{ind}cb = (lane * NCH + k // KC) * {d + 2}"]
    L += [f"{ind}tl.store(CKF + cb + {q}, x{q}, mask=cm)" for q in range(d)]
    L += [
        f"{ind}tl.store(CKF + cb + {d}, tc, mask=cm)",
        f"{ind}tl.store(CKF + cb + {d + 1}, ref_end, mask=cm)",
        f"{ind}ci = (lane * NCH + k // KC) * 3",
        f"{ind}tl.store(CKI + ci, cnt, mask=cm)",
        f"{ind}tl.store(CKI + ci + 1, ovf, mask=cm)",
        f"{ind}tl.store(CKI + ci + 2, dead.to(tl.int32), mask=cm)",
    ]
    return L


def _ckpt_load(g, ind: str) -> list[str]:
    d = g.d
    L = [f"{ind}cm = jm & (k0 <= nev)", f"{ind}cb = (lane * NCH + c) * {d + 2}"]
    L += [f"{ind}x{q} = tl.load(CKF + cb + {q}, mask=cm, other=0.0)" for q in range(d)]
    L += [
        f"{ind}tc = tl.load(CKF + cb + {d}, mask=cm, other=0.0)",
        f"{ind}ref_end = tl.load(CKF + cb + {d + 1}, mask=cm, other=0.0)",
        f"{ind}ci = (lane * NCH + c) * 3",
        f"{ind}cnt = tl.load(CKI + ci, mask=cm, other=0)",
        f"{ind}ovf = tl.load(CKI + ci + 1, mask=cm, other=0)",
        f"{ind}dead = (tl.load(CKI + ci + 2, mask=cm, other=1) != 0) | ~cm",
    ]
    return L


def _row_prep(g, port: str, ind: str, sfx: str, rows: str, valid: str) -> list[str]:
    """Load tape rows `rows` ([BN, KT] indices) and precompute their adjoint-map quantities;
    names get suffix `sfx`."""
    d = g.d
    TP = ", ".join("t" + n for n in g.pnames)
    M = ", ".join(f"m{i}_{j}{sfx}" for i, j in g.nz)
    L = [f"{ind}rb{sfx} = (lane2 * KT + {rows}) * {d + 1}"]
    L += [f"{ind}x{q}{sfx} = tl.load(TF + rb{sfx} + {q}, mask={valid}, other=0.0)" for q in range(d)]
    L += [
        f"{ind}D{sfx} = tl.load(TF + rb{sfx} + {d}, mask={valid}, other=0.0)",
        f"{ind}kind{sfx} = tl.load(TI + (lane2 * KT + {rows}) * 2, mask={valid}, other={PROP})",
        f"{ind}aux{sfx} = tl.load(TI + (lane2 * KT + {rows}) * 2 + 1, mask={valid}, other=-1)",
        f"{ind}isprop{sfx} = kind{sfx} == {PROP}",
        f"{ind}has{sfx} = aux{sfx} >= 0",
        f"{ind}normal{sfx} = kind{sfx} == {SPIKE}",
        f"{ind}atref{sfx} = kind{sfx} == {SPIKE_REF}",
        f"{ind}{M}, {_v('ph', d, sfx)} = maps_{port}(D{sfx}, D{sfx} * 0.0, {TP})",
        f"{ind}{_v('xn', d, sfx)} = apply_map({M}, {_v('ph', d, sfx)}, {_v('x', d, sfx)})",
        f"{ind}{_v('y', d, sfx)} = deriv({_v('xn', d, sfx)}, {TP})",
        f"{ind}{_v('cp', d, sfx)} = apply_T({M}, {_v('cv', d)})",
        f"{ind}up{sfx} = potential({_v('y', d, sfx)}, {TP})",
        f"{ind}sg{sfx} = {valid} & ~isprop{sfx} & has{sfx}",
        f"{ind}gg{sfx} = tl.load(GOUT + lane2 * S + tl.where(sg{sfx}, aux{sfx}, 0), mask=sg{sfx}, other=0.0)",
    ]
    return L


def _lin_call(g, sfx: str, lam: list[str], gg: str, outs: str) -> str:
    d = g.d
    TP = ", ".join("t" + n for n in g.pnames)
    M = ", ".join(f"m{i}_{j}{sfx}" for i, j in g.nz)
    return (f"{outs} = adj_lin({', '.join(lam)}, {gg}, isprop{sfx}, normal{sfx}, atref{sfx}, "
            f"has{sfx}, {M}, {_v('y', d, sfx)}, {_v('cp', d, sfx)}, up{sfx}, {TP})")


def _adj_kernel(g, port: str, dt: str) -> list[str]:
    d, P = g.d, g.P
    m = d + 2
    npar = len(g.pnames)
    TP = ", ".join("t" + n for n in g.pnames)
    i8, i12 = " " * 8, " " * 12
    L = ["", "", "@triton.jit",
         f"def adj_kernel_{port}({BW_ARGS}, KT: tl.constexpr, BN: tl.constexpr,",
         "                     HAS_DELAY: tl.constexpr, AUTO_END: tl.constexpr, WITH_PARAMS: tl.constexpr):"]
    L += _prologue(g, dt)
    L += [
        "    lane = b * N + j",
        "    rpos = tl.zeros([BN], dtype=tl.int32)",
        "    nmax = tl.max(tl.where(jm, nev, 0))",
        "    # ---- phase A: replay the forward, checkpoint the lane state every KC events (with",
        "    # one chunk, the checkpoint is the initial state: stored without a replay)",
        "    if NCH > 1:",
        "        for k in range(0, nmax + 1):",
    ]
    step = seq_step(g, port, i12)  # its first line defines `live`; checkpoint right after
    L += step[:1] + _ckpt_store(g, i12) + step[1:]
    L += [
        "    else:",
        "        k = 0",
        "        live = jm",
    ] + _ckpt_store(g, i8) + [
        "    # ---- phase B: chunks in reverse; replay with a tape, reverse adjoint scan",
    ]
    L += [f"    t{n} = {n}[:, None]" for n in g.pnames]
    L += [
        f"    {_v('cv', d)} = cvec(ref[:, None], {TP})",
        "    rr = tl.arange(0, KT)[None, :]",
        "    lane2 = lane[:, None]",
        "    jt = j[:, None]",
    ]
    L += [f"    lam{q} = ref" for q in range(m)]
    L += [f"    gpa{q} = ref" for q in range(npar)]
    L += [
        "    for cc in range(0, NCH):",
        "        c = NCH - 1 - cc",
        "        k0 = c * KC",
    ]
    L += _ckpt_load(g, i8)
    L += [
        "        rpos = tl.zeros([BN], dtype=tl.int32)",
        "        for k in range(k0, tl.minimum(k0 + KC, nmax + 1)):",
    ]
    L += seq_step(g, port, i12, tape=_tape_lines(g))
    L += [
        "        rp = rpos[:, None]",
        "        # maps of rows r + 1 at position r: the reverse scan is then exclusive",
        "        vs = (rr + 1 < rp) & jm[:, None]",
    ]
    L += _row_prep(g, port, i8, "_s", "rr + 1", "vs")
    zero, one = "D_s * 0.0", "D_s * 0.0 + 1.0"
    # columns of the linear part (unit vectors), then the constant part
    F = [[None] * m for _ in range(m)]
    for q in range(m):
        lam = [one if i == q else zero for i in range(m)]
        outs = ", ".join(f"e{q}_{i}" for i in range(m)) + ", _a, _b, _c" + "".join(f", _u{i}" for i in range(d))
        L.append(i8 + _lin_call(g, "_s", lam, zero, outs))
        for i in range(m):
            F[i][q] = f"e{q}_{i}"
    outs = ", ".join(f"f_{i}" for i in range(m)) + ", _a, _b, _c" + "".join(f", _u{i}" for i in range(d))
    L.append(i8 + _lin_call(g, "_s", [zero] * m, "gg_s", outs))
    Fl = []
    for i in range(m):
        for q in range(m):
            ident = "1.0" if i == q else "0.0"
            L.append(f"{i8}F{i}_{q} = tl.where(vs, {F[i][q]}, {ident})")
            Fl.append(f"F{i}_{q}")
    for i in range(m):
        L.append(f"{i8}Ff{i} = tl.where(vs, f_{i}, 0.0)")
        Fl.append(f"Ff{i}")
    Fs = ", ".join(Fl)
    L.append(f"{i8}{Fs} = tl.associative_scan(({Fs}), 1, adj_combine, reverse=True)")
    # adjoint entering each row: the composition of the later rows applied to the carried lam
    for i in range(m):
        L.append(f"{i8}li{i} = " + " + ".join(f"F{i}_{q} * lam{q}[:, None]" for q in range(m)) + f" + Ff{i}")
    L += [
        "        # every row's own map and gradient terms, in parallel",
        "        vr = (rr < rp) & jm[:, None]",
    ]
    L += _row_prep(g, port, i8, "_r", "rr", "vr")
    lam = [f"li{i}" for i in range(m)]
    outs = (", ".join(f"lo{i}" for i in range(m)) + ", lDp, kk, lri, " + _v("lu", d))
    L.append(i8 + _lin_call(g, "_r", lam, "gg_r", outs))
    L += [
        "        pv = vr & isprop_r & has_r",
        "        e = tl.where(pv, aux_r, 0)",
        "        che = tl.load(CH + b * s_chb + e, mask=pv, other=0)",
        f"        {_v('bv', d)} = bvec_{port}(ref[:, None], {TP})",
        "        gw = " + " + ".join(f"bv{i} * li{i}" for i in range(d)),
        f"        garr = li{d} + lDp",
        "        tl.atomic_add(GW + b * s_gwb + che * N + jt, gw, mask=pv)",
        "        tl.atomic_add(GT + b * s_tb + e, garr, mask=pv)",
        "        if HAS_DELAY:",
        "            tl.atomic_add(GD + che * N + jt, garr, mask=pv)",
    ]
    if npar:
        q = ", ".join(f"q{k}" for k in range(npar))
        L += [
            "        if WITH_PARAMS:",
            "            we = tl.load(W + b * s_wb + che * N + jt, mask=pv, other=0.0)",
            f"            {q} = gpf_prop_{port}({_v('x', d, '_r')}, {_v('lu', d)}, D_r, {TP})",
            f"            {_v('qj', npar)} = gpf_jump_{port}({_v('li', d)}, {TP})",
            f"            {_v('qr', npar)} = gpf_reset_{port}({_v('xn', d, '_r')}, {_v('li', d)}, {TP})",
            f"            {_v('qt', npar)} = gpf_tref_{port}(ref[:, None], {TP})",
            f"            {_v('qu', npar)} = gpf_u_{port}({_v('x', d, '_r')}, D_r, {TP})",
        ]
        for k in range(npar):
            L += [
                f"            tot{k} = q{k} + tl.where(isprop_r, tl.where(has_r, we * qj{k}, 0.0), "
                f"lri * qt{k} + qr{k} + kk * qu{k})",
                f"            gpa{k} = gpa{k} + tl.sum(tl.where(vr, tot{k}, 0.0), axis=1)",
            ]
    for i in range(m):
        L.append(f"{i8}lam{i} = tl.where(rpos > 0, tl.sum(tl.where(rr == 0, lo{i}, 0.0), axis=1), lam{i})")
    L += [
        "        # the replayed spike count after the lane's last event, checked by the host",
        "        tl.store(CNT + lane, cnt, mask=jm & (k0 <= nev) & (nev < k0 + KC))",
    ]
    if npar:
        L += [
            "    if WITH_PARAMS:",
            f"        {_v('qi', npar)} = gpf_init_{port}({_v('lam', d)}, {P})",
        ]
        for k in range(npar):
            L.append(f"        tl.atomic_add(GP + {k} * N + j, gpa{k} + qi{k}, mask=jm)")
    return L


def adjoint_source(g) -> list[str]:
    """Backward helpers + one adj_kernel_<port> per input port (spiking neurons only)."""
    if not g.spiking:
        return []
    emit_adjoint_helpers(g)
    _lin_fn(g)
    _comb_fn(g)
    L = EV_INDEX.splitlines()
    for port in g.ir.ports:
        L += _adj_kernel(g, port, g.cfg["tl"])
    return L
