"""Guards of the training step: a step is refused (TrainingDiverged, TrainingStalled) before it
can spoil the weights that the next checkpoint would save."""

from __future__ import annotations

import math
from typing import Optional

import torch

# Divergence bounds. Adam's step is about lr whatever the gradient's size, so a gradient only
# has to keep g^2 finite in float64 (|g| < 1e154); parameters (weights, delays, log time
# constants) of a working network are O(1)-O(100), and 1e8 is far outside any of them.
PARAM_BOUND = 1e8
GRAD_BOUND = 1e100


class TrainingDiverged(RuntimeError):
    """Loss, gradients or parameters became non-finite or overflowed; the message says where and
    which checkpoint is intact."""


class TrainingStalled(RuntimeError):
    """The loss has no gradient (a silent network); the message says which layers are silent."""


def _any_gradient(net) -> bool:
    return any(p.grad is not None and bool(p.grad.ne(0).any()) for p in net.parameters())


def _stalled(outp, where: str) -> "TrainingStalled":
    counts = ", ".join(f"{name}: {float(c.float().mean()):.2f}" for name, c in zip(outp.layer_names, outp.counts))
    return TrainingStalled(
        f"the loss has no gradient at {where}: no spike of this batch carries one to the weights "
        f"(mean spikes per neuron {counts}). Exact event-based gradients need spikes; increase the "
        "weight init of the silent layer in the .snn file (e.g. `dense(x, init = normal(MEAN, STD))`) "
        "or use a max_potential readout."
    )


def _overflow(net, grads: bool) -> Optional[str]:
    """The first parameter (or gradient) that is non-finite or above its bound, described."""
    for name, p in net.named_parameters():
        x = p.grad if grads else p
        if x is None:
            continue
        bound = GRAD_BOUND if grads else (700.0 if name.rsplit(".", 1)[-1].startswith("log_") else PARAM_BOUND)
        peak = float(x.detach().abs().max()) if x.numel() else 0.0
        if not math.isfinite(peak) or peak > bound:
            what = "the gradient of " + name if grads else name
            return f"{what} {'is not finite' if not math.isfinite(peak) else f'reaches {peak:.3g}'} (bound {bound:g})"
    return None


def step(net, opt, outp, loss_v, clip_grad, run, where: str) -> None:
    """One optimiser step, refused (TrainingDiverged, TrainingStalled) before it can spoil the
    weights that the next checkpoint would save."""
    if not bool(torch.isfinite(loss_v)):
        raise TrainingDiverged(f"loss is {float(loss_v.detach())} at {where}; training stopped. {run.intact()}. "
                               "Try a smaller --lr or check the input data.")
    opt.zero_grad(set_to_none=True)
    if loss_v.requires_grad:
        loss_v.backward()
    if not _any_gradient(net):
        raise _stalled(outp, where)
    bad = _overflow(net, grads=True)
    if bad:
        raise TrainingDiverged(f"{bad} at {where}; training stopped before the update. {run.intact()}. "
                               "Try a smaller --lr or --clip-grad.")
    if clip_grad:
        torch.nn.utils.clip_grad_norm_(net.parameters(), clip_grad)
    opt.step()
    net.clamp_()
    bad = _overflow(net, grads=False)
    if bad:
        raise TrainingDiverged(f"after the update at {where}, {bad}: the parameters overflow; training stopped and "
                               f"nothing was saved. {run.intact()}. Try a smaller --lr.")
