"""Losses, regularisers and accuracy for the network readouts.

All losses are functions of quantities that the exact engines differentiate exactly (spike
times, max potentials, leaky integrals). Nothing here uses surrogate gradients of the spiking
non-linearity: the only smoothing is in `soft_count`, which is an explicit, documented function
of the (exact) spike times.

Conventions: times in ms, +inf marks "no spike". `t_end` is the trial length used for silent
neurons.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor


def fill_silent(t_first: Tensor, t_end: float) -> Tensor:
    """Replace +inf (silent neuron) by t_end. The replacement carries no gradient (a silent
    neuron's spike time does not depend on the parameters), so silent neurons need the
    `silent_potential` extension below (or a regulariser) to be pushed into firing."""
    return torch.where(torch.isfinite(t_first), t_first, torch.full_like(t_first, float(t_end)))


def effective_first_spike(
    t_first: Tensor,
    t_end: float,
    vmax: Optional[Tensor] = None,
    theta: float | Tensor = 1.0,
    slope: float = 0.0,
    labels: Optional[Tensor] = None,
) -> Tensor:
    """First-spike times with a differentiable extension for silent label neurons.

    For a neuron that spiked: t. For a silent one: t_end, and for a silent *label* neuron
    t_end + slope * (theta - vmax), where vmax is the (exact, differentiable) maximum of its
    potential over the trial: a neuron that barely misses threshold sits at t_end, and the label
    neuron gets a gradient towards firing. Only the label neuron is extended: extending every
    silent output would let the loss be minimised by ranking sub-threshold potentials of silent
    outputs (which the first-spike accuracy counts as wrong). With slope = 0, vmax None or labels
    None it is `fill_silent`.
    """
    t = fill_silent(t_first, t_end)
    if vmax is None or slope == 0.0 or labels is None:
        return t
    gap = (theta - vmax).clamp(min=0.0)
    is_label = torch.zeros_like(t, dtype=torch.bool).scatter_(1, labels[:, None], True)
    return torch.where(torch.isfinite(t_first) | ~is_label, t, t + slope * gap)


def first_spike_ce(
    t_first: Tensor,
    labels: Tensor,
    *,
    tau: float = 0.5,
    t_end: float,
    alpha: float = 0.0,
    beta: float = 1.0,
    vmax: Optional[Tensor] = None,
    theta: float | Tensor = 1.0,
    silent_slope: float = 0.0,
) -> Tensor:
    """Time-to-first-spike cross-entropy (Goeltz et al. 2021, Fast & Deep):

        L = -log softmax(-t / tau)[label] + alpha * (exp(t_label / beta) - 1)

    averaged over the batch. The second term keeps the label neuron's spike early and present.
    Silent neurons get t = t_end (plus, for the label neuron, the optional max-potential
    extension, see `effective_first_spike`)."""
    t = effective_first_spike(t_first, t_end, vmax, theta, silent_slope, labels)
    ce = F.cross_entropy(-t / tau, labels)
    if alpha == 0.0:
        return ce
    t_label = t.gather(1, labels[:, None])[:, 0]
    return ce + alpha * torch.expm1(t_label / beta).mean()


def value_ce(values: Tensor, labels: Tensor, *, scale: float = 1.0) -> Tensor:
    """Cross-entropy with logits = scale * values (li_integral, max_potential readouts: the
    largest value wins)."""
    return F.cross_entropy(scale * values, labels)


def soft_count(spike_times: Tensor, t_end: float, width: float = 1.0) -> Tensor:
    """Differentiable spike count over [0, t_end]: sum_k sigmoid((t_end - t_k) / width).

    spike_times [..., S] (+inf padded). For spikes well inside the window this equals the count;
    its gradient moves the spike times (it is a smooth function of exact spike times, not a
    surrogate of the threshold)."""
    finite = torch.isfinite(spike_times)
    safe = torch.where(finite, spike_times, torch.full_like(spike_times, float(t_end)))
    s = torch.sigmoid((t_end - safe) / width)
    return torch.where(finite, s, torch.zeros_like(s)).sum(-1)


def count_ce(spike_times: Tensor, labels: Tensor, *, t_end: float, scale: float = 1.0, width: float = 1.0) -> Tensor:
    """Cross-entropy on (soft) spike counts of the readout layer: logits = scale * soft count."""
    return F.cross_entropy(scale * soft_count(spike_times, t_end, width), labels)


def count_regulariser(
    spike_times: Tensor, *, t_end: float, target: float = 1.0, width: float = 1.0, mode: str = "upper"
) -> Tensor:
    """Hidden-layer spike-count regulariser on the per-neuron soft count (mean over batch and
    neurons). mode "upper": penalise counts above target, (relu(n - target))^2; "lower": counts
    below target; "both": (n - target)^2."""
    n = soft_count(spike_times, t_end, width)
    if mode == "upper":
        d = F.relu(n - target)
    elif mode == "lower":
        d = F.relu(target - n)
    elif mode == "both":
        d = n - target
    else:
        raise ValueError(f"count_regulariser: unknown mode {mode!r} (upper|lower|both)")
    return (d * d).mean()


# ----------------------------------------------------------------------------- accuracy


def predict_first_spike(t_first: Tensor) -> Tensor:
    """Predicted class = earliest output spike; -1 when all outputs are silent or when the
    earliest time is shared by several outputs (ties count as wrong)."""
    tmin, idx = t_first.min(dim=1)
    ties = (t_first == tmin[:, None]).sum(dim=1) > 1
    bad = ~torch.isfinite(tmin) | ties
    return torch.where(bad, torch.full_like(idx, -1), idx)


def predict_max(values: Tensor) -> Tensor:
    """Predicted class = largest value (counts, li integrals, max potentials); ties -> -1."""
    vmax, idx = values.max(dim=1)
    ties = (values == vmax[:, None]).sum(dim=1) > 1
    return torch.where(ties, torch.full_like(idx, -1), idx)


def predict(readout_kind: str, readout: Tensor) -> Tensor:
    if readout_kind == "first_spike":
        return predict_first_spike(readout)
    return predict_max(readout)


def accuracy(readout_kind: str, readout: Tensor, labels: Tensor) -> float:
    """Fraction correct (ties and all-silent count as wrong)."""
    if labels.numel() == 0:
        return float("nan")
    return (predict(readout_kind, readout) == labels).double().mean().item()


# ----------------------------------------------------------------------------- configuration


@dataclass
class LossConfig:
    """Hyperparameters of the readout loss and the hidden regulariser (ms for times)."""

    tau: float = 0.5  # first-spike softmax temperature (ms)
    alpha: float = 0.0  # Goeltz early-spike regulariser weight
    beta: float = 10.0  # Goeltz regulariser time scale (ms)
    silent_slope: float = 0.0  # ms per unit potential gap for silent outputs (0 = off)
    value_scale: float = 1.0  # logit scale for li_integral / max_potential / count readouts
    count_width: float = 1.0  # sigmoid width of soft counts (ms)
    hidden_reg: float = 0.0  # weight of the hidden spike-count regulariser
    hidden_target: float = 1.0  # target spikes per hidden neuron per sample
    hidden_mode: str = "upper"


def readout_loss(out, labels: Tensor, cfg: LossConfig, t_end: float, theta: float | Tensor = 1.0) -> Tensor:
    """Loss for a NetworkOutput (runtime/network.py) by its readout kind, plus the hidden
    regulariser."""
    if getattr(out, "bin_counts", None):
        return _discrete_loss(out, labels, cfg)
    kind = out.readout_kind
    if kind == "first_spike":
        loss = first_spike_ce(
            out.readout, labels, tau=cfg.tau, t_end=t_end, alpha=cfg.alpha, beta=cfg.beta,
            vmax=out.vmax, theta=theta, silent_slope=cfg.silent_slope,
        )
    elif kind in ("li_integral", "max_potential"):
        loss = value_ce(out.readout, labels, scale=cfg.value_scale)
    elif kind == "spike_count":
        loss = count_ce(out.spikes[-1], labels, t_end=t_end, scale=cfg.value_scale, width=cfg.count_width)
    else:
        raise ValueError(f"unknown readout kind {kind!r}")
    if cfg.hidden_reg:
        for s in out.spikes[:-1]:
            loss = loss + cfg.hidden_reg * count_regulariser(
                s, t_end=t_end, target=cfg.hidden_target, width=cfg.count_width, mode=cfg.hidden_mode
            )
    return loss


def _discrete_loss(out, labels: Tensor, cfg: LossConfig) -> Tensor:
    """Discrete-time (psn) networks: cross-entropy on the readout (spike counts over bins, or the
    max potential), and the hidden regulariser on their spike counts. Both are differentiable
    through the surrogate derivative of the step, not exact (runtime/psn.py)."""
    loss = value_ce(out.readout, labels, scale=cfg.value_scale)
    if cfg.hidden_reg:
        for n in out.bin_counts[:-1]:
            d = {"upper": F.relu(n - cfg.hidden_target), "lower": F.relu(cfg.hidden_target - n),
                 "both": n - cfg.hidden_target}[cfg.hidden_mode]
            loss = loss + cfg.hidden_reg * (d * d).mean()
    return loss
