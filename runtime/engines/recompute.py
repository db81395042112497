"""Recompute-in-backward for one chunk of an engine (DESIGN.md section 6: memory must not grow
with events x chunks).

`recompute(run, states, leaves)` runs `run(states, leaves) -> (outs, extra)` once WITHOUT
autograd and returns `outs` as the outputs of a single autograd node. That node keeps only its
inputs (the chunk-start states, and the layer's differentiable tensors, which every chunk shares);
its backward reruns `run` on detached copies with autograd on and backpropagates through that
graph, which lives only while the chunk's backward runs.

Compared with torch.utils.checkpoint (non-reentrant), the first run records no graph at all and
no saved-tensor hook fires per op: on the engines' many small ops that saved about a third of the
fwd+bwd time. Like checkpointing it needs `run` to be deterministic (the engine replays its
no-grad decisions, see torch_scan._chunk's memo), and unlike reentrant checkpointing it supports
torch.autograd.grad and gradients to non-leaf inputs, because the leaves are explicit inputs.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch.autograd.function import once_differentiable

Tensor = torch.Tensor


class _Job:
    def __init__(self, run: Callable, n_states: int):
        self.run, self.n_states = run, n_states
        self.extra = None
        self.req: list = []


class _Recompute(torch.autograd.Function):
    @staticmethod
    def forward(ctx, job: _Job, *flat):
        ctx.set_materialize_grads(False)
        job.req = [t.requires_grad for t in flat]
        outs, job.extra = job.run(list(flat[:job.n_states]), list(flat[job.n_states:]))
        ctx.job = job
        ctx.save_for_backward(*flat)
        # an input handed back unchanged would alias it: return a copy (O(state), rare)
        return tuple(o.clone() if any(o is f for f in flat) else o for o in outs)

    @staticmethod
    @once_differentiable
    def backward(ctx, *gouts):
        job = ctx.job
        flat = [t.detach().requires_grad_(r) for t, r in zip(ctx.saved_tensors, job.req)]
        with torch.enable_grad():
            outs, _ = job.run(flat[:job.n_states], flat[job.n_states:])
        pairs = [(o, g) for o, g in zip(outs, gouts) if g is not None and o.requires_grad]
        wrt = [t for t in flat if t.requires_grad]
        grads = iter([None] * len(wrt))
        if pairs and wrt:
            grads = iter(torch.autograd.grad([o for o, _ in pairs], wrt, [g for _, g in pairs],
                                             allow_unused=True))
        return (None, *[next(grads) if t.requires_grad else None for t in flat])


def recompute(run: Callable, states: list, leaves: list):
    """(outs, extra) of run(states, leaves); outs carry a backward that recomputes run.

    run: pure function of (states, leaves) -> (list of tensors, anything). states: the chunk's
    start state (tensors); leaves: every other tensor run depends on with autograd (it must not
    close over any such tensor: its gradient would be lost)."""
    job = _Job(run, len(states))
    outs = _Recompute.apply(job, *states, *leaves)
    return list(outs), job.extra
