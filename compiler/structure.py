"""Structure of a linear hybrid neuron that the exact engines exploit (DESIGN.md sections 3-5, 9).

- reset_invariant: state variables that neither the reset touches nor depend (through A) on a
  touched variable; they evolve the same with or without spikes (CubaLIF: i).
- chain (IsolationChain): rows l_0 = c^T, l_k = l_{k-1} (A - lam_k I) over the rates of the
  variables u = c^T x depends on (its "modes"). The rates are eliminated downstream-first, so the
  last row sees only the most upstream mode: l_m y = const * exp(lam D), of constant sign.
  `rates` has one entry per row: rates[k] takes rows[k] to rows[k+1]; the last entry is the mode
  of the last row, so rows[-1] (A - rates[-1] I) = 0 (Cayley-Hamilton on the modes of u).
- no_cross_rows: a max-principle test. If every variable x_k upstream of the threshold relaxes
  toward a convex combination of other variables and a constant q_k
  (dx_k/dt = alpha_k (sum_j beta_kj x_j + (1 - s_k) q_k - x_k), alpha_k > 0, beta >= 0,
  s_k = sum beta_kj <= 1), then max (and min) over that set cannot grow (shrink) between events,
  so u(t) <= sum_k max_{s in S_k} c_k s(0); the rows enumerate those combinations.
  Neurons without threshold get the chain of their readout potential (ir.potential).
- solver: "none" (no threshold), "linear" (one mode: monotone), "peak2" (two modes: at most one
  stationary point), "isolate" (more).
Sign facts assume time parameters (ParamIR.dim == 1) are positive, which the dsl checks (E034).
"""

from __future__ import annotations

import itertools

import sympy

from .ir import IsolationChain, NeuronIR

MAX_NO_CROSS_ROWS = 64


def upstream(A: sympy.Matrix, nodes) -> set[int]:
    """Nodes the given ones depend on through A (closure, including themselves)."""
    out, todo = set(), list(nodes)
    while todo:
        k = todo.pop()
        if k in out:
            continue
        out.add(k)
        todo += [j for j in range(A.shape[1]) if j != k and A[k, j] != 0]
    return out


def _positive_subs(ir: NeuronIR) -> dict:
    return {p.symbol: sympy.Symbol(p.symbol.name, positive=True) for p in ir.params if p.dim == 1}


def _sign_true(expr, subs, test: str) -> bool:
    val = sympy.simplify(sympy.sympify(expr).subs(subs))
    return bool(getattr(val, test))


def reset_invariant(ir: NeuronIR) -> tuple[int, ...]:
    d = ir.d
    touched = [i for i in range(d) if ir.R.row(i) != sympy.eye(d).row(i) or ir.r[i] != 0]
    return tuple(i for i in range(d) if not (upstream(ir.A, [i]) & set(touched)))


def isolation_chain(ir: NeuronIR, functional=None) -> IsolationChain:
    """Chain for u = functional^T x (default: the threshold functional c)."""
    c = ir.c if functional is None else functional
    support = [i for i in range(ir.d) if c[i] != 0]
    modes = sorted(upstream(ir.A, support), reverse=True)  # downstream first
    rows, rates = [c.T], []
    for k, idx in enumerate(modes):
        lam = ir.A[idx, idx]
        rates.append(lam)
        nxt = (rows[-1] * (ir.A - lam * sympy.eye(ir.d))).applyfunc(sympy.simplify)
        if k == len(modes) - 1 or all(v == 0 for v in nxt):
            break
        rows.append(nxt)
    return IsolationChain(rows=rows, rates=rates)


def no_cross_rows(ir: NeuronIR) -> tuple[list, str]:
    """(rows, reason) where rows is [] when no test could be derived and reason says why."""
    subs = _positive_subs(ir)
    A, a0, d = ir.A, ir.a0, ir.d
    support = [i for i in range(d) if ir.c[i] != 0]
    consts: dict[int, sympy.Expr] = {}
    for k in upstream(A, support):
        akk = A[k, k]
        if not _sign_true(akk, subs, "is_negative"):
            return [], f"{ir.state[k]} does not provably decay (rate {akk})"
        off = [j for j in range(d) if j != k and A[k, j] != 0]
        if not all(_sign_true(A[k, j], subs, "is_positive") for j in off):
            return [], f"{ir.state[k]} has a coupling of unknown or negative sign"
        s = sum((A[k, j] for j in off), sympy.Integer(0)) / (-akk)
        if not _sign_true(1 - s, subs, "is_nonnegative"):
            return [], f"{ir.state[k]} does not relax toward a convex combination of its inputs"
        if sympy.simplify(1 - s) == 0:
            if sympy.simplify(a0[k]) != 0:
                return [], f"{ir.state[k]} has a constant drive with no leak to balance it"
        else:
            consts[k] = sympy.simplify(a0[k] / (-akk * (1 - s)))
    choices = []
    for k in support:
        ck = ir.c[k]
        if not (_sign_true(ck, subs, "is_positive") or _sign_true(ck, subs, "is_negative")):
            return [], f"the threshold coefficient of {ir.state[k]} has an unknown sign"
        ups = sorted(upstream(A, [k]))
        opts = [(ck * sympy.eye(d).row(j), sympy.Integer(0)) for j in ups]
        opts += [(sympy.zeros(1, d), ck * consts[j]) for j in ups if j in consts]
        choices.append(opts)
    if sympy.prod([len(o) for o in choices]) > MAX_NO_CROSS_ROWS:
        return [], "too many combinations for the max-principle test"
    rows, seen = [], set()
    for combo in itertools.product(*choices):
        row = sum((r for r, _ in combo), sympy.zeros(1, d)).applyfunc(sympy.simplify)
        off = sympy.simplify(sum((o for _, o in combo), sympy.Integer(0)))
        key = (tuple(row), off)
        if key not in seen:
            seen.add(key)
            rows.append((row, off))
    return rows, "max principle"


def _fmt_row(row, names) -> str:
    terms = [f"{'' if v == 1 else '-' if v == -1 else str(v) + '*'}{n}" for v, n in zip(row, names) if v != 0]
    return " + ".join(terms).replace("+ -", "- ") or "0"


def _fmt_affine(row, off, names) -> str:
    if all(v == 0 for v in row):
        return str(off)
    return _fmt_row(row, names) + (f" + {off}" if off != 0 else "")


def derive_structure(ir: NeuronIR) -> None:
    """Fill reset_invariant, chain, no_cross_rows, solver and notes of an IR with A, c, R set."""
    names = ir.state
    ir.reset_invariant = reset_invariant(ir)
    if ir.reset_invariant:
        ir.notes.append("reset-invariant state: " + ", ".join(names[i] for i in ir.reset_invariant)
                        + " (computed once per event sequence, outside the restart loop)")
    if ir.c is None:
        ir.solver = "none"
        ir.notes.append("no threshold: the neuron never spikes (solver none)")
        if ir.potential is not None:  # still useful to isolate the max of the readout potential
            ir.chain = isolation_chain(ir, ir.potential)
            ir.notes.append("isolation chain built on the readout potential (for max_potential)")
        return
    ir.chain = isolation_chain(ir)
    n_modes = len(ir.chain.rates)
    ir.solver = {1: "linear", 2: "peak2"}.get(n_modes, "isolate")
    ir.notes.append(f"potential u = {_fmt_row(ir.c, names)} has {n_modes} mode(s) "
                    f"(rates {', '.join(map(str, ir.chain.rates))}): solver {ir.solver}")
    rows, why = no_cross_rows(ir)
    ir.no_cross_rows = rows
    if rows:
        tests = " and ".join(f"{_fmt_affine(r, o, names)} < {ir.theta}" for r, o in rows)
        ir.notes.append(f"no-crossing test ({why}): {tests} at the interval start => no spike in it")
    else:
        ir.notes.append(f"no cheap no-crossing test: {why}")
