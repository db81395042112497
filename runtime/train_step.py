"""One training step of `spikescan.train` on this process's part of a batch (runtime/train.py):
move the batch to the network's device, forward with spike-cap re-runs, loss, guarded optimiser
step (gradients reduced across processes under --ddp)."""

from __future__ import annotations

from typing import Optional

import torch

from spikescan.runtime import losses, spike_cap
from spikescan.runtime.devices import to_device
from spikescan.runtime.train_guard import step as guarded_step


def train_batch(net, opt, batch, dist, *, t_end: float, need_vmax: bool, max_spikes: int, cap, loss_cfg, theta,
                clip_grad: Optional[float], run, where: str, watch) -> tuple[float, int, int, Optional[object]]:
    """(sum of losses, correct, samples, NetworkOutput or None) of this process's samples. A None
    batch is an empty shard (--ddp, a last batch smaller than the number of processes): it takes
    part in the step's all-reduce with no samples."""
    like = net.float_like()
    if batch is None:
        outp, labels, loss_v = None, None, torch.zeros((), dtype=like.dtype, device=like.device)
    else:
        times, channels, labels = to_device(batch, like.device)
        outp = spike_cap.forward(net, times, channels, t_end=t_end, observe_vmax=need_vmax, max_spikes=max_spikes,
                                 stats=cap)
        loss_v = losses.readout_loss(outp, labels, loss_cfg, t_end, theta)
    n = 0 if labels is None else len(labels)
    guarded_step(net, opt, outp, loss_v, clip_grad, run, where, watch, dist=dist, n_local=n)
    if outp is None:
        return 0.0, 0, 0, None
    correct = int((losses.predict(outp.readout_kind, outp.readout.detach()) == labels).sum())
    return float(loss_v.detach()) * n, correct, n, outp
