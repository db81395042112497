"""The training loop: `spikescan.train(model, data=..., ...)`.

Adam on exact event-based gradients, validation every epoch, atomic checkpoints (out/last.pt,
out/best.pt), metrics as JSON lines (out/metrics.jsonl, a final object with test_accuracy),
curves (out/curves.png), resume from last.pt. A non-finite loss or gradient stops training with
TrainingDiverged before the optimiser touches the weights, so last.pt stays the last good state.
Deterministic for a given seed: the shuffling order of epoch e depends only on (seed, e), so a
resumed run sees the same batches as an uninterrupted one.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Optional

import torch
from torch.utils.data import DataLoader, Subset

from spikescan.runtime import losses
from spikescan.runtime.checkpoint import load_checkpoint, model_reference, save_checkpoint
from spikescan.runtime.losses import LossConfig
from spikescan.runtime.network import SpikingNetwork
from spikescan.runtime.progress import Progress


class TrainingDiverged(RuntimeError):
    """Loss or gradients became NaN/inf; the message says where and which checkpoint is intact."""


class TrainingStalled(RuntimeError):
    """The loss has no gradient (a silent network); the message says which layers are silent."""


# Per-dataset defaults (ms for times). Yin-Yang follows DATASETS.md's reference settings.
DATASET_DEFAULTS: dict[str, dict[str, Any]] = {
    # EventProp's Yin-Yang loss settings (tau0 = 0.5 ms, tau1 = 6.4 ms, alpha = 3e-3); measured
    # 95.6% test in 15 epochs (about 7 minutes on 2 cores).
    "yinyang": dict(epochs=15, lr=5e-3, batch_size=32, t_end=60.0, schedule="cosine",
                    loss=dict(tau=0.5, alpha=3e-3, beta=6.4, silent_slope=10.0)),
    "randman": dict(epochs=20, lr=5e-3, batch_size=32, loss=dict(tau=2.0, alpha=1e-3, beta=20.0, silent_slope=10.0)),
    # measured with models/digits.snn: 93.3% test (best val 95.5%) in 30 epochs, ~8 min on 2 cores
    # (tau 2 / beta 20 gave 67%).
    "digits": dict(epochs=30, lr=5e-3, batch_size=32, loss=dict(tau=0.5, alpha=3e-3, beta=6.4, silent_slope=10.0)),
}
GENERIC_DEFAULTS: dict[str, Any] = dict(epochs=10, lr=5e-3, batch_size=32, schedule="cosine", loss={})


@dataclass
class TrainResult:
    test_accuracy: float
    test_loss: float
    best_val_accuracy: float
    best_epoch: int
    epochs_run: int
    wall_s: float
    out: str
    history: list[dict] = field(default_factory=list)
    model: Optional[SpikingNetwork] = None


def _check_channels(ds, net) -> None:
    """The dataset's channels must fit the network's input populations: say how to fix it."""
    if ds.n_channels > net.n_inputs:
        raise ValueError(
            f"dataset {getattr(ds, 'name', '?')} has {ds.n_channels} input channels but network "
            f"'{net.ir.name}' takes {net.n_inputs} (input {dict(net.ir.inputs)}); change the input "
            "size in the .snn file or reduce the data (e.g. --data-opt downsample=2 --data-opt "
            "merge_polarity=true for the event cameras)")


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


def resolve_engine(name: str) -> str:
    """"auto" for training on the CPU: the MLIR-compiled "sequential-cpu" engine (compiled
    forward and adjoint event loops; readout observables replayed from the known spikes,
    runtime/engines/observe_replay.py), measured ~3x faster per Yin-Yang batch than the torch
    chunked scan; "torch" when the MLIR JIT (torch-mlir) is not importable."""
    if not isinstance(name, str) or name != "auto":
        return name
    try:
        from spikescan.runtime.engines import get_engine

        get_engine("sequential-cpu")
        import spikescan.compiler.backends.cpu_jit  # noqa: F401  (needs torch_mlir)

        return "sequential-cpu"
    except Exception:  # no MLIR JIT here: the PyTorch scan engine
        pass
    return "torch"


def _subset(ds, limit: Optional[int]):
    if limit is None or limit >= len(ds):
        return ds
    return Subset(ds, list(range(limit)))


def _loader(ds, batch_size: int, shuffle: bool, seed: int):
    from spikescan.runtime.data import pad_collate

    gen = torch.Generator().manual_seed(seed)
    return DataLoader(ds, batch_size=batch_size, shuffle=shuffle, generator=gen, collate_fn=pad_collate, num_workers=0)


def _t_end(ds, t_end: Optional[float]) -> float:
    if t_end is not None:
        return float(t_end)
    base = getattr(ds, "t_max", None)
    if base is None and isinstance(ds, Subset):
        base = getattr(ds.dataset, "t_max", None)
    if base is None:
        raise ValueError("the dataset has no t_max; pass t_end= (trial length in ms)")
    return 2.0 * float(base)


def evaluate(net: SpikingNetwork, loader, loss_cfg: LossConfig, t_end: float) -> dict[str, float]:
    """Loss and accuracy of `net` over a loader (no gradients)."""
    net.eval()
    theta = net.readout_theta()
    need_vmax = net.readout_kind == "first_spike" and loss_cfg.silent_slope > 0
    tot_loss, correct, n, events, overflow = 0.0, 0, 0, 0, 0
    with torch.no_grad():
        for times, channels, labels in loader:
            out = net(times, channels, t_end=t_end, observe_vmax=need_vmax)
            tot_loss += float(losses.readout_loss(out, labels, loss_cfg, t_end, theta)) * len(labels)
            correct += int((losses.predict(out.readout_kind, out.readout) == labels).sum())
            n += len(labels)
            events += out.events
            overflow += int(out.overflow.sum())
    return {"loss": tot_loss / max(n, 1), "accuracy": correct / max(n, 1), "n": n, "events": events, "overflow": overflow}


def _grads_finite(net: torch.nn.Module) -> bool:
    return all(p.grad is None or bool(torch.isfinite(p.grad).all()) for p in net.parameters())


def _build_network(model, network, engine, seed, net_opts) -> tuple[SpikingNetwork, dict]:
    if isinstance(model, SpikingNetwork):
        return model, {}
    if isinstance(model, (str, os.PathLike)):
        ref = model_reference(model)
        from spikescan.compiler.driver import load_model

        compiled = load_model(ref["model_path"])
        return SpikingNetwork(compiled, network, engine=engine, seed=seed, **net_opts), ref
    return SpikingNetwork(model, network, engine=engine, seed=seed, **net_opts), {}


def train(
    model,
    data: str = "yinyang",
    data_root: Optional[str] = None,
    epochs: Optional[int] = None,
    batch_size: Optional[int] = None,
    lr: Optional[float] = None,
    engine: str = "auto",
    seed: int = 0,
    out: Optional[str] = None,
    resume: bool = False,
    progress: bool = True,
    *,
    network: Optional[str] = None,
    loss: Optional[dict | LossConfig] = None,
    t_end: Optional[float] = None,
    schedule: Optional[str] = None,
    clip_grad: Optional[float] = None,
    data_opts: Optional[dict] = None,
    limit_train: Optional[int] = None,
    limit_eval: Optional[int] = None,
    net_opts: Optional[dict] = None,
    log=None,
    threads: Optional[int] = 1,
) -> TrainResult:
    """Train `model` (a .snn path, a CompiledModel or a SpikingNetwork) on a built-in dataset.

    Unset hyperparameters take the dataset's defaults (DATASET_DEFAULTS). Returns a TrainResult
    whose test_accuracy is measured with the best-validation weights (out/best.pt)."""
    t_start = time.perf_counter()
    if threads:
        # The event engines issue many small tensor ops; intra-op threads only add
        # synchronisation (measured: Yin-Yang batches ~10x slower with 2 threads on 2 cores).
        torch.set_num_threads(int(threads))
    log = log or (lambda msg: print(msg, file=sys.stderr))
    d = {**GENERIC_DEFAULTS, **DATASET_DEFAULTS.get(data, {})}
    epochs = d["epochs"] if epochs is None else int(epochs)
    batch_size = d["batch_size"] if batch_size is None else int(batch_size)
    lr = d["lr"] if lr is None else float(lr)
    schedule = schedule or d.get("schedule", "none")
    if isinstance(loss, LossConfig):
        loss_cfg = loss
    else:
        loss_cfg = LossConfig(**{**d.get("loss", {}), **(loss or {})})
    t_end = d.get("t_end") if t_end is None else t_end
    net_opts = dict(net_opts or {})
    data_opts = dict(data_opts or {})
    if isinstance(model, SpikingNetwork) and engine == "auto":
        engine = model.engine_name  # keep the engine the caller built the network with
    engine = resolve_engine(engine)

    torch.manual_seed(seed)
    net, ref = _build_network(model, network, engine, seed, net_opts)
    net.engine_name = engine
    engine_label = engine if isinstance(engine, str) else "auto"  # engine objects (tests) are not saved
    out_dir = Path(out or os.path.join("runs", net.ir.name))
    out_dir.mkdir(parents=True, exist_ok=True)

    from spikescan.runtime.data import get_dataset

    train_ds = _subset(get_dataset(data, "train", root=data_root, **data_opts), limit_train)
    val_ds = _subset(get_dataset(data, "val", root=data_root, **data_opts), limit_eval)
    _check_channels(get_dataset(data, "train", root=data_root, **data_opts), net)
    t_end = _t_end(train_ds, t_end)
    theta = net.readout_theta()
    need_vmax = net.readout_kind == "first_spike" and loss_cfg.silent_slope > 0

    opt = torch.optim.Adam([p for p in net.parameters() if p.requires_grad], lr=lr)
    if schedule == "cosine":
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(epochs, 1), eta_min=lr * 0.05)
    elif schedule == "none":
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda e: 1.0)
    else:
        raise ValueError(f"unknown schedule {schedule!r} (cosine|none)")

    config = dict(
        data=data, data_root=data_root, epochs=epochs, batch_size=batch_size, lr=lr, engine=engine_label, seed=seed,
        network=net.ir.name, loss=asdict(loss_cfg), t_end=t_end, schedule=schedule, clip_grad=clip_grad,
        data_opts=data_opts, limit_train=limit_train, limit_eval=limit_eval, net_opts=net_opts,
    )
    history: list[dict] = []
    start_epoch, best_acc, best_epoch = 0, -1.0, -1
    metrics_path = out_dir / "metrics.jsonl"
    if resume:
        ck = load_checkpoint(out_dir / "last.pt")
        if ref and ck.get("model_sha256") not in (None, ref["model_sha256"]):
            log(f"warning: {ref['model_path']} changed since {out_dir / 'last.pt'} was written; resuming anyway")
        net.load_state_dict(ck["state_dict"])
        opt.load_state_dict(ck["optimizer"])
        sched.load_state_dict(ck["scheduler"])
        start_epoch = int(ck["epoch"])
        history = list(ck.get("history", []))
        best_acc, best_epoch = ck.get("best_val_accuracy", -1.0), ck.get("best_epoch", -1)
        # keep metrics.jsonl consistent with the checkpoint (drop lines of epochs after it)
        with open(metrics_path, "w") as f:
            for h in history:
                f.write(json.dumps(h) + "\n")
        log(f"resuming from {out_dir / 'last.pt'} at epoch {start_epoch}")
    else:
        metrics_path.write_text("")

    def payload(epoch: int) -> dict:
        return dict(
            ref, network=net.ir.name, state_dict=net.state_dict(), optimizer=opt.state_dict(),
            scheduler=sched.state_dict(), epoch=epoch, metrics=history[-1] if history else {}, history=history,
            seed=seed, config=config, best_val_accuracy=best_acc, best_epoch=best_epoch,
            net_kwargs=dict(engine=engine_label, chunk=net.chunk, max_spikes=net.max_spikes, on_overflow=net.on_overflow,
                            learn_time_constants=any(l.learned for l in net.layers.values())),
        )

    val_loader = _loader(val_ds, max(batch_size, 250), False, seed)  # big batches: fewer engine calls
    for epoch in range(start_epoch, epochs):
        net.train()
        loader = _loader(train_ds, batch_size, True, seed * 1_000_003 + epoch)
        bar = Progress(len(loader), f"epoch {epoch + 1}/{epochs}", enabled=progress)
        t0 = time.perf_counter()
        tot_loss, correct, n, events, overflow = 0.0, 0, 0, 0, 0
        for step, (times, channels, labels) in enumerate(loader):
            tb = time.perf_counter()
            outp = net(times, channels, t_end=t_end, observe_vmax=need_vmax)
            loss_v = losses.readout_loss(outp, labels, loss_cfg, t_end, theta)
            where = f"epoch {epoch + 1}, step {step + 1}"
            intact = f"{out_dir / 'last.pt'} (epoch {start_epoch if not history else history[-1]['epoch']})"
            if not bool(torch.isfinite(loss_v)):
                bar.close()
                raise TrainingDiverged(
                    f"loss is {float(loss_v.detach())} at {where}; training stopped. The last good checkpoint is {intact}. "
                    "Try a smaller --lr or check the input data."
                )
            opt.zero_grad(set_to_none=True)
            if loss_v.requires_grad:
                loss_v.backward()
            if not _any_gradient(net):
                bar.close()
                raise _stalled(outp, where)
            if not _grads_finite(net):
                bar.close()
                raise TrainingDiverged(
                    f"non-finite gradient at {where}; training stopped before the update. The last good checkpoint "
                    f"is {intact}. Try a smaller --lr or --clip-grad."
                )
            if clip_grad:
                torch.nn.utils.clip_grad_norm_(net.parameters(), clip_grad)
            opt.step()
            net.clamp_()
            tot_loss += float(loss_v.detach()) * len(labels)
            correct += int((losses.predict(outp.readout_kind, outp.readout.detach()) == labels).sum())
            n += len(labels)
            events += outp.events
            overflow += int(outp.overflow.sum())
            bar.update(tot_loss / n, correct / n, outp.events / max(time.perf_counter() - tb, 1e-9))
        bar.close()
        sched.step()
        train_s = time.perf_counter() - t0
        val = evaluate(net, val_loader, loss_cfg, t_end)
        rec = dict(
            epoch=epoch + 1, train_loss=tot_loss / max(n, 1), train_accuracy=correct / max(n, 1),
            val_loss=val["loss"], val_accuracy=val["accuracy"], train_s=train_s,
            events_per_s=events / max(train_s, 1e-9), overflow=overflow + val["overflow"],
            lr=opt.param_groups[0]["lr"],
        )
        history.append(rec)
        if val["accuracy"] > best_acc:
            best_acc, best_epoch = val["accuracy"], epoch + 1
            save_checkpoint(out_dir / "best.pt", payload(epoch + 1))
        save_checkpoint(out_dir / "last.pt", payload(epoch + 1))
        with open(metrics_path, "a") as f:
            f.write(json.dumps(rec) + "\n")
        try:
            from spikescan.runtime.plots import plot_curves

            plot_curves(history, out_dir / "curves.png")
        except Exception as e:  # plotting must never stop training
            log(f"warning: could not write curves.png: {e}")
        if progress:
            log(
                f"epoch {epoch + 1}/{epochs}: loss {rec['train_loss']:.4f} acc {rec['train_accuracy']:.4f} | "
                f"val loss {rec['val_loss']:.4f} acc {rec['val_accuracy']:.4f} | {train_s:.1f} s, "
                f"{rec['events_per_s']:.3g} ev/s"
            )

    # test with the best-validation weights
    if (out_dir / "best.pt").is_file():
        net.load_state_dict(load_checkpoint(out_dir / "best.pt")["state_dict"])
    test_ds = _subset(get_dataset(data, "test", root=data_root, **data_opts), limit_eval)
    test = evaluate(net, _loader(test_ds, max(batch_size, 250), False, seed), loss_cfg, t_end)
    wall = time.perf_counter() - t_start
    final = dict(final=True, test_accuracy=test["accuracy"], test_loss=test["loss"], best_val_accuracy=best_acc,
                 best_epoch=best_epoch, epochs=epochs, wall_s=wall)
    with open(metrics_path, "a") as f:
        f.write(json.dumps(final) + "\n")
    return TrainResult(
        test_accuracy=test["accuracy"], test_loss=test["loss"], best_val_accuracy=best_acc, best_epoch=best_epoch,
        epochs_run=epochs - start_epoch, wall_s=wall, out=str(out_dir), history=history, model=net,
    )


def network_from_checkpoint(ck: dict, engine: Optional[str] = None) -> SpikingNetwork:
    """Rebuild the trained network from a checkpoint dict (see runtime/checkpoint.py)."""
    from spikescan.compiler.driver import load_model
    from spikescan.runtime.checkpoint import resolve_model_path

    kw = dict(ck.get("net_kwargs", {}))
    if engine:
        kw["engine"] = engine
    kw["engine"] = resolve_engine(kw.get("engine", "auto"))
    net = SpikingNetwork(load_model(resolve_model_path(ck)), ck.get("network"), seed=ck.get("seed", 0), **kw)
    net.load_state_dict(ck["state_dict"])
    return net
