"""Spike rasters of one sample through a network, as a matplotlib Figure: the input events, every
layer's spikes (exact times), and the readout per output neuron with the label and the
prediction.

    fig = spikescan.plot_raster(net, times, channels, label, t_end=60.0)      # one sample [n] or a batch
    fig = raster_from_checkpoint("runs/yy/best.pt", data="yinyang", sample=3)

`spikescan plot raster runs/yy/best.pt --data yinyang --sample 3 -o raster.png` is the same
from the shell.
"""

from __future__ import annotations

import math
from typing import Optional

import torch

from spikescan.runtime.plots import pyplot


def _one(x, sample: int):
    x = torch.as_tensor(x)
    return x[None] if x.dim() == 1 else x[sample: sample + 1]


@torch.no_grad()
def plot_raster(net, times, channels, label: Optional[int] = None, *, t_end: Optional[float] = None,
                sample: int = 0, title: Optional[str] = None):
    """Run `net` (a spikescan.Network) on one sample (times/channels [n], or sample `sample` of a
    batch [B, n]; ms, +inf padding) and draw input, hidden and output rasters and the readout.
    `t_end` (ms) is the trial length (needed by potential readouts; default: the latest spike).
    Returns the matplotlib Figure."""
    plt = pyplot()
    t_in, c_in = _one(times, sample).to(torch.float64), _one(channels, sample).long()
    if label is not None and torch.is_tensor(label) and label.dim() > 0:
        label = int(label[0] if label.numel() == 1 else label[sample])
    was_training = net.training
    net.eval()
    try:
        out = net(t_in, c_in, t_end=t_end)
    finally:
        net.train(was_training)
    fin = torch.isfinite(t_in[0])
    spikes = [s[0] for s in out.spikes]
    latest = max([float(t_in[0][fin].max()) if bool(fin.any()) else 0.0] +
                 [float(s[torch.isfinite(s)].max()) for s in spikes if bool(torch.isfinite(s).any())])
    t_hi = float(t_end) if t_end is not None else latest * 1.05 + 1.0
    rows = 1 + len(spikes)
    fig = plt.figure(figsize=(10, 1.8 + 1.6 * rows))
    grid = fig.add_gridspec(rows, 2, width_ratios=[4, 1.3])
    ax_in = fig.add_subplot(grid[0, 0])
    ax_in.plot(t_in[0][fin].numpy(), c_in[0][fin].numpy(), "|", color="k", ms=6)
    ax_in.set_ylabel(f"input\n({net.n_inputs} ch)")
    ax_in.set_ylim(-0.5, net.n_inputs - 0.5)
    ax_in.set_title(title or f"network {net.ir.name}: {int(fin.sum())} input events")
    axes = [ax_in]
    for k, (name, s) in enumerate(zip(out.layer_names, spikes)):
        a = fig.add_subplot(grid[k + 1, 0], sharex=ax_in)
        n_neurons = s.shape[0]
        ok = torch.isfinite(s)
        idx = torch.arange(n_neurons)[:, None].expand_as(s)[ok]
        a.plot(s[ok].numpy(), idx.numpy(), "|" if n_neurons > 1 else "v", color=f"C{k}", ms=5 if n_neurons > 20 else 9)
        rate = float(ok.sum()) / max(n_neurons, 1)
        a.set_ylabel(f"{name}\n({n_neurons})")
        a.set_ylim(-0.5, n_neurons - 0.5)
        a.text(0.99, 0.92, f"{int(ok.sum())} spikes, {rate:.2f}/neuron", transform=a.transAxes, ha="right",
               va="top", fontsize=8)
        axes.append(a)
    for a in axes[:-1]:
        plt.setp(a.get_xticklabels(), visible=False)
    axes[-1].set_xlabel("time (ms)")
    ax_in.set_xlim(0.0, t_hi)
    _readout_panel(fig.add_subplot(grid[1:, 1]), out, label, t_hi)
    fig.tight_layout()
    return fig


def _readout_panel(a, out, label, t_hi: float) -> None:
    from spikescan.runtime.losses import predict

    r = out.readout[0].detach()
    pred = int(predict(out.readout_kind, out.readout.detach())[0])
    n = r.shape[0]
    silent = ~torch.isfinite(r)
    shown = torch.where(silent, torch.full_like(r, t_hi), r).numpy()
    colors = ["C2" if i == label else "0.6" for i in range(n)]
    a.barh(range(n), shown, color=colors)
    for i in range(n):
        a.text(shown[i], i, " silent" if bool(silent[i]) else f" {float(r[i]):.4g}", va="center",
               fontsize=7 if n > 12 else 8)
    a.set_yticks(range(n))
    a.set_yticklabels([f"{i}{' *' if i == pred else ''}" for i in range(n)], fontsize=8 if n > 12 else 10)
    a.invert_yaxis()
    unit = {"first_spike": "first spike (ms)", "spike_count": "spike count"}.get(out.readout_kind, out.readout_kind)
    a.set_xlabel(f"{unit}\ngreen: label, *: predicted", fontsize=8)
    verdict = "" if label is None else (" (right)" if pred == label else " (wrong)")
    a.set_title(f"readout: label {label if label is not None else '?'}, "
                f"predicted {pred if pred >= 0 else 'none'}{verdict}", fontsize=9)
    if out.readout_kind == "first_spike" and math.isfinite(t_hi):
        a.set_xlim(0.0, t_hi * 1.15)


def raster_from_checkpoint(checkpoint, data: Optional[str] = None, split: str = "test", sample: int = 0,
                           data_root: Optional[str] = None, engine: Optional[str] = None):
    """plot_raster for sample `sample` of a dataset split, with the network of a checkpoint
    written by `spikescan train` (its dataset, options and trial length unless `data` is given)."""
    from spikescan.runtime.checkpoint import load_checkpoint
    from spikescan.runtime.train_data import load_network
    from spikescan.runtime.train_setup import check_channels, open_dataset, t_max_of

    ck = load_checkpoint(checkpoint)
    cfg = ck["config"]
    name = data or cfg.get("data")
    if name is None:
        raise ValueError("the checkpoint does not name its dataset: pass --data")
    same = name == cfg.get("data")
    ds = open_dataset(name, split, data_root if data_root is not None else (cfg.get("data_root") if same else None),
                      cfg.get("data_opts", {}) if same else {})
    if not 0 <= int(sample) < len(ds):
        raise ValueError(f"--sample {sample} is outside the {name} {split} split (0..{len(ds) - 1})")
    net = load_network(ck, engine=engine)
    check_channels(ds, net)
    from spikescan.runtime.data import pad_collate

    times, channels, labels = pad_collate([ds[int(sample)]])
    t_end = cfg.get("t_end") or 2.0 * (t_max_of(ds) or 0.0) or None
    return plot_raster(net, times, channels, int(labels[0]), t_end=t_end,
                       title=f"{name} {split} sample {sample} through {net.ir.name} (epoch {ck['epoch']})")
