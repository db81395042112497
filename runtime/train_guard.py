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
# Batches without any gradient in a row (at most one epoch) before TrainingStalled: a few silent
# batches are skipped, a silent network stops early.
STALL_PATIENCE = 20


class TrainingDiverged(RuntimeError):
    """Loss, gradients or parameters became non-finite or overflowed; the message says where and
    which checkpoint is intact."""


class TrainingStalled(RuntimeError):
    """The loss has had no gradient for many batches in a row (a silent network); the message says
    which layers are silent and what to change for this readout."""


def _any_gradient(net) -> bool:
    return any(p.grad is not None and bool(p.grad.ne(0).any()) for p in net.parameters())


def _stalled(outp, where: str, batches: int = 1, silent_slope: float = 0.0,
             readout: Optional[str] = None) -> "TrainingStalled":
    """The message says which layers are silent and gives the fix that applies to this readout."""
    names = list(outp.layer_names)
    mean = [float(c.float().mean()) for c in outp.counts]
    counts = ", ".join(f"{name}: {m:.2f}" for name, m in zip(names, mean))
    silent = [n for n, c in zip(names, outp.counts) if not bool(c.gt(0).any())]
    kind = outp.readout_kind
    readout = readout or (names[-1] if names else "the readout")
    hints = []
    hidden = [n for n in silent if n != readout]
    if hidden:
        hints.append(f"increase the weight init of {', '.join(hidden)} in the .snn file (e.g. `dense(x, init = "
                     "normal(MEAN, STD))` with a larger MEAN, or `init = auto(rate = 20 Hz)`, which scales the weights "
                     "to that rate on the first batch)")
    if kind == "first_spike" and readout in silent:
        if silent_slope <= 0:
            hints.append("give silent label neurons a gradient through their max potential with --loss "
                         "'{\"silent_slope\": 10}' (Python: loss={\"silent_slope\": 10.0}), or use a max_potential "
                         "readout")
        else:
            hints.append(f"increase the weight init of {readout} (silent_slope {silent_slope:g} is on, but no input "
                         "reaches it)")
    elif kind == "spike_count" and readout in silent:
        hints.append(f"increase the weight init of {readout}, or use a max_potential readout (a spike count of "
                     "silent neurons has no gradient)")
    if not hints:
        hints.append("check that the inputs reach the network (channels, times within t_end) and the weight init")
    what = "this batch" if batches == 1 else f"{batches} batches in a row (up to {where})"
    return TrainingStalled(
        f"the loss has no gradient at {where}: no spike of {what} carries one to the weights "
        f"(mean spikes per neuron {counts}; silent layers: {', '.join(silent) or 'none'}). Exact event-based "
        f"gradients need spikes; {'; '.join(hints)}."
    )


class StallWatch:
    """Batches without any gradient are skipped (no update); training stops with TrainingStalled
    after `patience` of them in a row (one epoch at most), not on the first."""

    def __init__(self, patience: int, silent_slope: float = 0.0, readout: Optional[str] = None):
        self.patience, self.silent_slope, self.readout = max(int(patience), 1), float(silent_slope), readout
        self.in_a_row, self.skipped = 0, 0

    def stalled(self, outp, where: str) -> None:
        self.in_a_row += 1
        self.skipped += 1
        if self.in_a_row >= self.patience:
            raise _stalled(outp, where, self.in_a_row, self.silent_slope, self.readout)

    def ok(self) -> None:
        self.in_a_row = 0


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


def step(net, opt, outp, loss_v, clip_grad, run, where: str, watch: Optional[StallWatch] = None, dist=None,
         n_local: int = 0) -> bool:
    """One optimiser step, refused (TrainingDiverged, TrainingStalled) before it can spoil the
    weights that the next checkpoint would save. A batch without gradient is skipped (returns
    False) while `watch` allows it; without a watch it raises TrainingStalled at once. `dist`
    (runtime/distributed.py, --ddp): every process agrees on the loss check and the gradients are
    those of the global batch (n_local samples here), so all processes decide alike."""
    finite = bool(torch.isfinite(loss_v))
    if dist is not None and dist.active:
        finite = dist.all_true(finite)
    if not finite:
        raise TrainingDiverged(f"loss is {float(loss_v.detach())} at {where}; training stopped. {run.intact()}. "
                               "Try a smaller --lr or check the input data.")
    opt.zero_grad(set_to_none=True)
    if loss_v.requires_grad:
        loss_v.backward()
    if dist is not None:
        dist.reduce_grads(net, n_local)
    if not _any_gradient(net):
        if watch is None:
            raise _stalled(outp, where, readout=getattr(net, "readout_layer", None))
        watch.stalled(outp, where)
        return False
    if watch is not None:
        watch.ok()
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
    return True
