"""Run-time validation shared by every engine, so that no engine returns a plausible but wrong
spike train for inputs the equations do not define. The rules mirror the `.snn` checks (E034
positive time constants, E036 non-negative refractory period, E037 finite values) and
docs/engines.md ("Common semantics"):

- input times are >= 0 ms, or +inf (padding); NaN, -inf and negative times are errors;
- weights and delays are finite (delays >= 0);
- t_end, when given, is a finite number >= 0 (a run covers the closed interval [0, t_end]);
- parameters are finite, time constants used by the dynamics are > 0, t_ref >= 0;
- t_end=None needs a horizon after which nothing can happen: refused for a neuron with a constant
  drive that does not settle below threshold (a mode that does not decay, or an equilibrium at or
  above theta), where the run would otherwise be cut at an arbitrary time.
"""

from __future__ import annotations

import math
from typing import Optional

import numpy as np
import sympy
import torch

Tensor = torch.Tensor


def check_inputs(times: Tensor, weight: Tensor, delays: Optional[Tensor], t_end,
                 channels: Optional[Tensor] = None) -> None:
    """Raise ValueError for inputs on which the model is undefined (see the module docstring),
    and for a zero-padded batch (fake events at t = 0 on channel 0, runtime/data/padding.py)."""
    check_t_end(t_end)
    if channels is not None:
        from spikescan.runtime.data.padding import check_not_zero_padded

        check_not_zero_padded(times, channels)
    with torch.no_grad():
        tt = times.detach()
        ok = bool((tt >= 0).all())  # one pass: False for NaN and for negative times (-inf too)
        if not ok and bool(torch.isnan(tt).any()):
            raise ValueError("event times contain NaN; use +inf to pad samples with fewer events")
        if not ok and bool((tt < 0).any()):
            bad = float(tt[tt < 0].min())
            raise ValueError(f"event times must be >= 0 ms or +inf (padding); got {bad:g} "
                             "(neurons start at t = 0)")
        if weight.is_floating_point() and not bool(torch.isfinite(weight.detach()).all()):
            raise ValueError("weights must be finite; got NaN or inf (check the learning rate or "
                             "the initialisation)")
        if delays is not None:
            dl = delays.detach()
            if not bool(torch.isfinite(dl).all()):
                raise ValueError("delays must be finite; got NaN or inf")
            if bool((dl < 0).any()):
                raise ValueError(f"delays must be >= 0 ms; got {float(dl.min()):g}")


def check_t_end(t_end) -> None:
    if t_end is None:
        return
    try:
        v = float(t_end)
    except (TypeError, ValueError):
        raise ValueError(f"t_end must be a number of ms or None, got {t_end!r}") from None
    if not math.isfinite(v) or v < 0:
        raise ValueError(f"t_end must be a finite time >= 0 ms (or None for an automatic "
                         f"horizon), got {t_end!r}")


def _values(p) -> Tensor:
    return torch.as_tensor(p, dtype=torch.float64).detach().reshape(-1)


def _dynamics_params(kern) -> frozenset:
    """Names of the parameters that appear in A or a0 (cached on the kernels object)."""
    dyn = getattr(kern, "_validate_dyn", None)
    if dyn is None:
        dyn = frozenset(s.name for M in (kern.ir.A, kern.ir.a0) for s in sympy.Matrix(M).free_symbols)
        kern._validate_dyn = dyn
    return dyn


def check_params(kern, P: tuple) -> None:
    """P: parameter tensors in IR order (0-d or [N]), as from NeuronKernels.param_tensors."""
    ir = kern.ir
    dyn = _dynamics_params(kern)
    for spec, p in zip(ir.params, P):
        v = _values(p)
        if not bool(torch.isfinite(v).all()):
            raise ValueError(f"neuron {ir.name!r}: parameter {spec.name!r} must be finite, got "
                             f"{float(v[~torch.isfinite(v)][0])}")
        if spec.dim == 1 and spec.symbol.name in dyn and bool((v <= 0).any()):
            raise ValueError(f"neuron {ir.name!r}: time constant {spec.name!r} must be positive, got "
                             f"{float(v.min()):g} ms (as the .snn check E034)")
    if kern.spiking:
        tr = kern.t_ref(P)
        if tr is not None:
            v = _values(tr)
            if not bool(torch.isfinite(v).all()) or bool((v < 0).any()):
                raise ValueError(f"neuron {ir.name!r}: the refractory period must be a finite time "
                                 f">= 0 ms, got {float(v.min()):g} ms (as the .snn check E036)")


def check_auto_horizon(kern, P: tuple) -> None:
    """t_end=None: the run ends 60 slowest time constants after the last input. That is exact only
    if, without inputs, the neuron settles below threshold; refuse (ask for t_end) otherwise."""
    ir = kern.ir
    if not kern.spiking or all(sympy.sympify(e) == 0 for e in ir.a0):
        return  # no drive: without inputs the state decays (or stays), nothing new can cross
    vals = [_values(p) for p in P]
    n = max([1] + [v.numel() for v in vals])
    # distinct parameter sets only (a layer usually shares them), each analysed once per kernels
    rows = {tuple(float(v[min(j, v.numel() - 1)]) for v in vals) for j in range(n)}
    seen = kern.__dict__.setdefault("_validate_horizon_ok", set())
    for row in rows - seen:
        _check_settles(ir, {spec.symbol: x for spec, x in zip(ir.params, row)})
        seen.add(row)


def _check_settles(ir, subs: dict) -> None:
    def num(M):
        return np.array(sympy.Matrix(M).subs(subs).evalf(), dtype=float)

    A, a0 = num(ir.A), num(ir.a0).reshape(-1)
    if np.any(np.linalg.eigvals(A).real >= 0):
        raise ValueError(f"neuron {ir.name!r} has a constant drive and a mode that does not decay, so it "
                         "can spike at any later time: pass t_end (the trial length in ms)")
    u_eq = float(num(ir.c).reshape(-1) @ np.linalg.solve(A, -a0))
    theta = float(sympy.sympify(ir.theta).subs(subs))
    if u_eq >= theta:
        raise ValueError(f"neuron {ir.name!r} settles at potential {u_eq:g} >= threshold {theta:g} under its "
                         "constant drive, so it fires forever: pass t_end (the trial length in ms)")


def validate_layer(ir, params, times: Tensor, weight: Tensor, delays: Optional[Tensor], t_end, N: int,
                   dtype, channels: Optional[Tensor] = None) -> None:
    """Every check above for one run_layer call, for engines that do not go through
    common.setup (which makes the same checks on its own parameter tensors)."""
    from spikescan.runtime.kernels import NeuronKernels

    check_inputs(times, weight, delays, t_end, channels)
    kern = NeuronKernels.from_ir(ir)
    P = kern.param_tensors(params, N, dtype, "cpu")  # runs check_params
    if t_end is None:
        check_auto_horizon(kern, P)
