"""A time-stepped (discrete-time) simulator of one linear hybrid neuron type, vectorised in torch.

This is what clock-driven frameworks (snnTorch, Norse, SpikingJelly, Brian2 with a fixed step)
do, and it is the baseline the exact engines are compared against in bench/precision.py:

- input events are moved to the nearest grid point k*dt (their jumps x += B w applied there);
- the threshold is checked only at grid points (after that step's inputs), the spike time is
  the grid time, the reset is applied there;
- between grid points the state moves by either the exact propagator exp(A dt) ("exact", the
  exact-decay scheme) or one forward-Euler step x += dt (A x + a0) ("euler").

It takes plain numeric matrices (A, a0, B, c, theta, R, r, t_ref), so it is independent of the
compiler; `cuba_lif_matrices` writes CubaLIF by hand for the workload calibration.
"""

from __future__ import annotations

import math

import torch


def cuba_lif_matrices(tau_m=20.0, tau_s=5.0, v_th=1.0, v_reset=0.0, t_ref=0.0) -> dict:
    """CubaLIF of DESIGN.md section 2, state (v, i): dv/dt = (i - v)/tau_m, di/dt = -i/tau_s."""
    return dict(A=[[-1.0 / tau_m, 1.0 / tau_m], [0.0, -1.0 / tau_s]], a0=[0.0, 0.0],
                B=[0.0, 1.0], c=[1.0, 0.0], theta=v_th, R=[[0.0, 0.0], [0.0, 1.0]],
                r=[v_reset, 0.0], t_ref=t_ref, x0=[0.0, 0.0])


def _as_t(x, dtype):
    if isinstance(x, torch.Tensor):
        return x.to(dtype)
    return torch.tensor([[float(v) for v in row] for row in x] if isinstance(x[0], (list, tuple))
                        else [float(v) for v in x], dtype=dtype)


def _flatten_matrix(m):
    """Accepts lists, tensors, numpy, sympy or mpmath matrices -> nested float lists."""
    if hasattr(m, "tolist"):
        m = m.tolist()
    out = []
    for row in m:
        if isinstance(row, (list, tuple)):
            out.append([float(v) for v in row])
        else:
            out.append(float(row))
    return out


def _vec(m) -> list[float]:
    v = _flatten_matrix(m)
    return [x[0] if isinstance(x, list) else x for x in v]


def simulate_discrete(mats: dict, times: torch.Tensor, channels: torch.Tensor,
                      weight: torch.Tensor, dt: float, t_end: float, method: str = "exact",
                      dtype=torch.float64, max_spikes: int | None = None) -> list[list[list[float]]]:
    """Spike times per sample and neuron, [B][N] lists, of the time-stepped simulation.

    times [B, n] (+inf padding), channels [B, n], weight [C, N]; every neuron sees every event
    (one input port, B in `mats`). Steps 0..ceil(t_end/dt).
    """
    if method not in ("exact", "euler"):
        raise ValueError(f"method must be 'exact' or 'euler', got {method!r}")
    A = torch.tensor(_flatten_matrix(mats["A"]), dtype=torch.float64)
    d = A.shape[0]
    a0 = torch.tensor(_vec(mats["a0"]), dtype=torch.float64)
    Bv = torch.tensor(_vec(mats["B"]), dtype=torch.float64)
    c = torch.tensor(_vec(mats["c"]), dtype=torch.float64)
    R = torch.tensor(_flatten_matrix(mats["R"]), dtype=torch.float64)
    r = torch.tensor(_vec(mats["r"]), dtype=torch.float64)
    theta = float(mats["theta"])
    t_ref = float(mats.get("t_ref", 0.0))
    x0 = torch.tensor(_vec(mats.get("x0", [0.0] * d)), dtype=torch.float64)

    if method == "exact":
        # exp of the augmented matrix [[A, a0], [0, 0]] gives Phi(dt) and phi(dt) at once
        aug = torch.zeros(d + 1, d + 1, dtype=torch.float64)
        aug[:d, :d] = A * dt
        aug[:d, d] = a0 * dt
        E = torch.linalg.matrix_exp(aug)
        Phi, phi = E[:d, :d], E[:d, d]
    else:
        Phi = torch.eye(d, dtype=torch.float64) + dt * A
        phi = dt * a0
    Phi, phi, Bv, c, R, r = (t.to(dtype) for t in (Phi, phi, Bv, c, R, r))

    Bsz = times.shape[0]
    N = weight.shape[1]
    n_steps = int(math.ceil(t_end / dt - 1e-9)) + 1
    # per-step summed input weight of every neuron: [n_steps, B, N]
    ok = torch.isfinite(times) & (times <= t_end)
    k = torch.where(ok, torch.round(times / dt), torch.zeros_like(times)).long().clamp_(0, n_steps - 1)
    drive = torch.zeros(n_steps * Bsz, N, dtype=dtype)
    bidx = torch.arange(Bsz)[:, None].expand_as(k)
    flat = (k * Bsz + bidx)[ok]
    drive.index_add_(0, flat, weight.to(dtype)[channels[ok]])
    drive = drive.view(n_steps, Bsz, N)

    x = x0.to(dtype).expand(Bsz, N, d).clone()
    ref_until = torch.full((Bsz, N), -math.inf, dtype=torch.float64)
    spikes = torch.zeros(n_steps, Bsz, N, dtype=torch.bool)
    for step in range(n_steps):
        t = step * dt
        x = x + drive[step][..., None] * Bv
        u = x @ c
        fire = (u >= theta) & (t >= ref_until)
        if bool(fire.any()):
            spikes[step] = fire
            x = torch.where(fire[..., None], x @ R.T + r, x)
            ref_until = torch.where(fire, torch.full_like(ref_until, t + t_ref), ref_until)
        x = x @ Phi.T + phi
    out: list[list[list[float]]] = [[[] for _ in range(N)] for _ in range(Bsz)]
    for s, b, j in spikes.nonzero().tolist():
        if max_spikes is None or len(out[b][j]) < max_spikes:
            out[b][j].append(s * dt)
    return out
