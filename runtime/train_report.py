"""What `spikescan train` says about a run: the start-up summary (network, parameters, engine,
device, data sizes, hyperparameters) and the per-layer spike rates of an epoch."""

from __future__ import annotations

import os
from dataclasses import asdict, fields
from typing import Optional

import torch


def parameter_count(net) -> tuple[int, int]:
    """(trainable, total) number of parameter entries."""
    params = list(net.parameters())
    return sum(p.numel() for p in params if p.requires_grad), sum(p.numel() for p in params)


def _device(net) -> str:
    """"cpu (f64)": where the network runs and in which precision."""
    p = next((t for t in net.parameters() if t.is_floating_point()), None)
    if p is None:
        return "cpu"
    return f"{p.device} ({'f32' if p.dtype == torch.float32 else 'f64'})"


def _size(x) -> str:
    from spikescan.runtime.train_data import size

    n = size(x)
    return "?" if n is None else f"{n:,}"


def _short(path) -> str:
    """`path` relative to the working directory when it lies below it."""
    rel = os.path.relpath(str(path))
    return str(path) if rel.startswith("..") else rel


def _loss_text(loss) -> str:
    defaults = {f.name: f.default for f in fields(loss)}
    changed = {k: v for k, v in asdict(loss).items() if v != defaults[k]}
    return ", ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in changed.items()) or "defaults"


def summary_lines(net, engine: str, threads: Optional[int], splits: dict, notes: dict, model_path=None, *,
                  epochs: int, batch_size: int, lr: float, schedule: str, seed: int, t_end: float, loss,
                  out) -> list[str]:
    """The start-up summary, a few lines."""
    trainable, _ = parameter_count(net)
    layers = " -> ".join([f"{n} {s}" for n, s in net.ir.inputs.items()] +
                         [f"{name} {lay.size}" for name, lay in net.layers.items()])
    src = f" ({_short(model_path)})" if model_path else ""
    from spikescan.runtime.engines import parallel

    n = parallel.threads()  # what train() set up: samples in parallel on the compiled engines
    thr = f", {n} thread{'s' if n != 1 else ''}"
    data = "; ".join(f"{split} {_size(x)}" + (f" [{notes[split]}]" if notes.get(split) and not
                                               notes[split].endswith(split) else "")
                     for split, x in splits.items())
    return [
        f"network {net.ir.name}{src}: {layers}, readout {net.readout_kind} on {net.readout_layer}; "
        f"{trainable:,} trainable parameters",
        f"engine {engine} on {_device(net)}{thr}",
        f"data: {data} samples; trial length t_end {t_end:g} ms",
        f"{epochs} epoch{'s' if epochs != 1 else ''}, batch {batch_size}, lr {lr:g} ({schedule}), seed {seed}; loss {_loss_text(loss)}; "
        f"outputs in {out}",
    ]


def layer_rates(acc: Optional[dict], outp) -> dict:
    """Accumulate per-layer spike counts: name -> [sum of spikes per neuron over samples, samples]."""
    acc = {} if acc is None else acc
    for name, c in zip(outp.layer_names, outp.counts):
        tot = acc.setdefault(name, [0.0, 0])
        tot[0] += float(c.detach().float().mean(1).sum()) if c.numel() else 0.0
        tot[1] += int(c.shape[0])
    return acc


def mean_rates(acc: Optional[dict]) -> dict:
    """name -> mean spikes per neuron per sample over the epoch."""
    return {name: s / max(n, 1) for name, (s, n) in (acc or {}).items()}
