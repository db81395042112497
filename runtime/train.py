"""The training loop: `spikescan.train(model, data=..., ...)`.

Adam on exact event-based gradients, validation every epoch, atomic checkpoints (out/last.pt,
out/best.pt; runtime/checkpoint.py), metrics as JSON lines (out/metrics.jsonl, a final object
with test_accuracy), curves (out/curves.png), resume from last.pt.

Before the first epoch every option, the output folder, every dataset split (train, val, test)
and, on resume, both checkpoints are checked, so a mistake fails in seconds, not after training.
A non-finite loss, a non-finite gradient or one above GRAD_BOUND stops training before the
update; parameters that become non-finite or exceed PARAM_BOUND after an update stop it before
anything is saved. The message names the last checkpoint written, which is intact.
Deterministic for a given seed: the shuffling order of epoch e depends only on (seed, e), and
the learning rate is a closed form of (epoch, epochs), so a resumed run (even with a larger
--epochs: the schedule is re-planned) sees the same batches and rates as an uninterrupted one.
"""

from __future__ import annotations

import math
import os
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

import torch

from spikescan.runtime import spike_cap
from spikescan.runtime.engines import parallel
from spikescan.runtime import devices, distributed
from spikescan.runtime.checkpoint import CheckpointError, load_embedded_model, load_state, model_reference, save_checkpoint
from spikescan.runtime.losses import LossConfig
from spikescan.runtime.network import SpikingNetwork
from spikescan.runtime.progress import Progress
from spikescan.runtime.train_data import DataLike, batches, guess_t_end, is_named, open_splits
from spikescan.runtime.train_guard import (GRAD_BOUND, PARAM_BOUND, STALL_PATIENCE, StallWatch,  # noqa: F401
                                           TrainingDiverged, TrainingStalled)
from spikescan.runtime.train_run import Run, plot, prepare_out, resume as resume_run, write_metrics
from spikescan.runtime.train_step import train_batch
from spikescan.runtime.train_auto import first_batch_auto_init, restore_cap, resumed_line, wants_auto_init
from spikescan.runtime.train_report import layer_rates, mean_rates, summary_lines
from spikescan.runtime.train_setup import (check_options, evaluate, loader as _loader, loss_config,
                                           resolve_engine, subset as _subset)

__all__ = ["train", "evaluate", "network_from_checkpoint", "resolve_engine", "TrainingDiverged", "TrainingStalled",
           "TrainResult", "DATASET_DEFAULTS", "PARAM_BOUND", "GRAD_BOUND", "_subset", "_loader"]

# Per-dataset defaults (ms for times). Yin-Yang follows DATASETS.md's reference settings.
DATASET_DEFAULTS: dict[str, dict[str, Any]] = {
    # EventProp's Yin-Yang loss settings (tau0 = 0.5 ms, tau1 = 6.4 ms, alpha = 3e-3); the
    # measured accuracy and time of this default run are in README.md (one place only).
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
    test: dict = field(default_factory=dict)  # the final metrics record


def lr_at(epoch: int, epochs: int, lr: float, schedule: str) -> float:
    """Learning rate of epoch `epoch` (0-based): constant, or cosine from lr to 0.05 lr over
    `epochs` (CosineAnnealingLR's closed form, eta_min = 0.05 lr)."""
    if schedule == "none":
        return lr
    lo = 0.05 * lr
    return lo + (lr - lo) * (1.0 + math.cos(math.pi * epoch / max(epochs, 1))) / 2.0


def _build_network(model, network, engine, seed, net_opts) -> tuple[SpikingNetwork, dict]:
    if isinstance(model, SpikingNetwork):
        return model, {}
    if isinstance(model, (str, os.PathLike)):
        from spikescan.compiler.driver import load_model

        model = load_model(str(model))
    ref = model_reference(model) if getattr(model, "sources", None) else {}
    return SpikingNetwork(model, network, engine=engine, seed=seed, **net_opts), ref


def train(
    model,
    data: DataLike = "yinyang",
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
    val_data: Optional[DataLike] = None,
    test_data: Optional[DataLike] = None,
    quiet: bool = False,
    network: Optional[str] = None,
    loss: Optional[dict | LossConfig] = None,
    t_end: Optional[float] = None,
    schedule: Optional[str] = None,
    clip_grad: Optional[float] = None,
    data_opts: Optional[dict] = None,
    limit_train: Optional[int] = None,
    limit_eval: Optional[int] = None,
    net_opts: Optional[dict] = None,
    log: Optional[Callable[[str], None]] = None,
    threads: Optional[int] = None,
    max_spikes: Optional[int] = None,
    device: Optional[str] = None,
    dtype: Optional[str] = None,
    ddp: bool = False,
) -> TrainResult:
    """Train `model` with Adam on exact event-based gradients; returns a TrainResult.

    model: a .snn path, a CompiledModel or a spikescan.Network (trained in place).
    data: a built-in dataset name (spikescan.DATASETS; `data_root`, `data_opts` go to it), a
        torch Dataset of (times, channels, label) samples (batched with pad_collate), a DataLoader
        of (times [B, n], channels [B, n], labels [B]) batches (+inf padded), or a dict
        {"train", "val", "test"} of those. `val_data` / `test_data` give the other splits of custom
        data; without them 10% of a Dataset is held out for validation and the test split is the
        validation split (the start-up summary says so). Custom data needs `t_end` (ms) unless
        it has a `t_max` attribute.
    Unset hyperparameters take the dataset's defaults (DATASET_DEFAULTS, else GENERIC_DEFAULTS);
    `loss` is a LossConfig or a dict of its fields (docs/training.md, "Losses").
    Output: `out` (default runs/<network>) gets last.pt, best.pt, metrics.jsonl and curves.png;
    `resume=True` continues from out/last.pt.
    progress: progress bars (train, val, test) on stderr; quiet: no output at all but warnings
    and errors (`progress=False` alone keeps the start-up summary and the per-epoch lines). `log`
    replaces printing to stderr.
    threads: cores for the compiled CPU engines (samples of a batch in parallel, the same results for
    any number; default every core; torch ops keep one intra-op thread; 0: torch's default for both).
    `max_spikes` bounds the per-neuron spike cap that runtime/spike_cap.py grows to (default
    DEFAULT_MAX_SPIKES); `limit_train`/`limit_eval` take seeded, class-stratified subsets.
    The returned test_accuracy is measured with the best-validation weights (out/best.pt).
    device: "auto" (CUDA when available; the default, or the network's own device for a given
    spikescan.Network), "cpu", "cuda", "cuda:N"; the data stay on the CPU and each batch moves.
    dtype: "f64" (default) or "f32". ddp: data-parallel under torchrun (runtime/distributed.py)."""
    t_start = time.perf_counter()
    log = log or (lambda msg: print(msg, file=sys.stderr))
    info = (lambda msg: None) if quiet else log  # warnings and errors always go to `log`
    progress = bool(progress) and not quiet
    named = is_named(data)
    d = {**GENERIC_DEFAULTS, **(DATASET_DEFAULTS.get(data, {}) if named else {})}
    epochs = d["epochs"] if epochs is None else epochs
    batch_size = d["batch_size"] if batch_size is None else batch_size
    lr = d["lr"] if lr is None else lr
    schedule = schedule or d.get("schedule", "none")
    max_spikes = spike_cap.DEFAULT_MAX_SPIKES if max_spikes is None else max_spikes
    t_end = d.get("t_end") if t_end is None else t_end
    check_options(epochs=epochs, batch_size=batch_size, lr=lr, clip_grad=clip_grad, threads=threads,
                  limit_train=limit_train, limit_eval=limit_eval, max_spikes=max_spikes, t_end=t_end, schedule=schedule)
    epochs, batch_size, lr, max_spikes = int(epochs), int(batch_size), float(lr), int(max_spikes)
    loss_cfg = loss_config(d.get("loss", {}), loss)
    net_opts, data_opts = dict(net_opts or {}), dict(data_opts or {})
    if isinstance(model, SpikingNetwork) and engine == "auto":
        engine = model.engine_name  # keep the engine the caller built the network with
    dist, device = distributed.init(ddp, device)
    if not dist.main:  # rank 0 alone prints, writes checkpoints, metrics and plots
        log = info = (lambda msg: None)
        progress = False
    dev, dt = _device_dtype(model, device, dtype)
    engine = resolve_engine(engine, dev, dt)
    if threads != 0:
        # The torch engines issue many small tensor ops; intra-op threads only add
        # synchronisation (measured: Yin-Yang batches ~10x slower with 2 threads on 2 cores).
        # The compiled CPU engines run samples on `threads` cores instead (engines/parallel.py).
        torch.set_num_threads(1)
        parallel.set_threads(int(threads) if threads else parallel.cores())
    else:  # 0: torch's own default, which the compiled engines follow
        parallel.set_threads(None)

    torch.manual_seed(seed)
    net, ref = _build_network(model, network, engine, seed, net_opts)
    net.engine_name = engine
    net.to(device=dev, dtype=dt)
    dist.broadcast_state(net)
    engine_label = engine if isinstance(engine, str) else "auto"  # engine objects (tests) are not saved
    run = Run(dist.from_main(lambda: prepare_out(Path(out or os.path.join("runs", net.ir.name)))))
    splits, notes = open_splits(data, val_data=val_data, test_data=test_data, data_root=data_root,
                                data_opts=data_opts, limit_train=limit_train, limit_eval=limit_eval, seed=seed, net=net)
    distributed.check_splits(splits, dist)
    t_end = guess_t_end(splits, t_end)
    theta = net.readout_theta()
    need_vmax = net.readout_kind == "first_spike" and loss_cfg.silent_slope > 0
    opt = torch.optim.Adam([p for p in net.parameters() if p.requires_grad], lr=lr)
    config = dict(
        data=data if named else None, data_root=data_root if named else None, epochs=epochs, batch_size=batch_size,
        lr=lr, engine=engine_label, seed=seed,
        network=net.ir.name, loss=asdict(loss_cfg), t_end=t_end, schedule=schedule, clip_grad=clip_grad,
        data_opts=data_opts, limit_train=limit_train, limit_eval=limit_eval, net_opts=net_opts, max_spikes=max_spikes,
        device=str(dev), dtype=devices.dtype_name(dt), processes=dist.world,
    )
    metrics_path = run.out_dir / "metrics.jsonl"
    said: list[str] = []  # what resuming says, printed after the summary (errors come before both)
    if resume:
        resume_run(run, net, opt, ref, epochs, schedule, said.append, dist)
    for line in summary_lines(net, engine_label if isinstance(engine, str) else "custom", threads, splits, notes,
                              ref.get("model_path") or getattr(model, "path", None), epochs=epochs,
                              batch_size=batch_size, lr=lr, schedule=schedule, seed=seed, t_end=t_end,
                              loss=loss_cfg, out=run.out_dir):
        info(line)
    for msg in said:
        (log if msg.startswith("warning") else info)(msg)
    if dist.main:  # keep metrics.jsonl consistent with the checkpoint (drop lines of epochs after it)
        write_metrics(metrics_path, run.history)
    # `init = auto(...)`: a new run built from a file scales on its first batch; a resumed run or a
    # network the caller built (they call net.auto_init themselves) is not scaled here.
    if resume:
        if wants_auto_init(net):
            restore_cap(net, run.auto_init, max_spikes)
            info(resumed_line(run.auto_init))
    elif not isinstance(model, SpikingNetwork):
        run.auto_init = first_batch_auto_init(net, splits["train"], batch_size, seed, t_end, info)

    def payload(epoch: int) -> dict:
        return dict(
            {"model_path": "", "model_sources": {}, "model_roots": [], **ref}, network=net.ir.name,
            state_dict=devices.cpu_tree(net.state_dict()),
            optimizer=devices.cpu_tree(opt.state_dict()), epoch=epoch, metrics=run.history[-1] if run.history else {},
            history=run.history, seed=seed, config=config, best_val_accuracy=run.best_acc, best_epoch=run.best_epoch,
            auto_init=run.auto_init,
            net_kwargs=dict(engine=engine_label, chunk=net.chunk, max_spikes=net.max_spikes, on_overflow=net.on_overflow,
                            learn_time_constants=any(l.learned for l in net.layers.values())),
        )

    eval_batch = max(batch_size, 250)  # big batches: fewer engine calls
    val_loader = distributed.for_eval(batches(splits["val"], eval_batch, False, seed), dist)
    for epoch in range(run.start_epoch, epochs):
        net.train()
        for g in opt.param_groups:
            g["lr"] = lr_at(epoch, epochs, lr, schedule)
        train_batches = distributed.sharded(batches(splits["train"], batch_size, True, seed * 1_000_003 + epoch), dist)
        n_batches = len(train_batches)
        watch = StallWatch(min(STALL_PATIENCE, n_batches), loss_cfg.silent_slope, net.readout_layer)
        bar = Progress(n_batches, f"epoch {epoch + 1}/{epochs}", enabled=progress)
        t0 = time.perf_counter()
        cap = spike_cap.CapStats(cap=max_spikes)
        tot_loss, correct, n, events, rates = 0.0, 0, 0, 0, None
        try:
            for step, batch in enumerate(train_batches):
                tb = time.perf_counter()
                ls, c, k, outp = train_batch(net, opt, batch, dist, t_end=t_end, need_vmax=need_vmax,
                                             max_spikes=max_spikes, cap=cap, loss_cfg=loss_cfg, theta=theta,
                                             clip_grad=clip_grad, run=run, where=f"epoch {epoch + 1}, step {step + 1}",
                                             watch=watch)
                tot_loss, correct, n = tot_loss + ls, correct + c, n + k
                if outp is not None:
                    events += outp.events
                    rates = layer_rates(rates, outp)
                    bar.update(tot_loss / n, correct / n, outp.events / max(time.perf_counter() - tb, 1e-9))
        finally:
            bar.close()
        train_s = time.perf_counter() - t0
        tot_loss, correct, n, events = dist.sum([tot_loss, correct, n, events])
        rates, cap = dist.reduce_rates(rates, list(net.layers)), dist.reduce_cap(cap)
        val = dist.reduce_eval(evaluate(net, val_loader, loss_cfg, t_end, max_spikes, progress=progress, desc="val"))
        both = cap.merge(val["cap"])
        rec = dict(
            epoch=epoch + 1, train_loss=tot_loss / max(n, 1), train_accuracy=correct / max(n, 1),
            val_loss=val["loss"], val_accuracy=val["accuracy"], train_s=train_s,
            events_per_s=events / max(train_s, 1e-9), lr=opt.param_groups[0]["lr"], **both.record(),
            skipped_batches=watch.skipped, spikes_per_neuron=mean_rates(rates),
        )
        if epoch == 0 and run.auto_init is not None:
            rec["auto_init"] = run.auto_init
        run.history.append(rec)
        if val["accuracy"] > run.best_acc:
            run.best_acc, run.best_epoch = val["accuracy"], epoch + 1
            if dist.main:
                save_checkpoint(run.out_dir / "best.pt", payload(epoch + 1))
            run.best_state = {k: v.detach().clone() for k, v in net.state_dict().items()}
        if dist.main:
            save_checkpoint(run.out_dir / "last.pt", payload(epoch + 1))
            write_metrics(metrics_path, [rec], "a")
            plot(run, log)
        run.saved = epoch + 1
        if both.warning(f"epoch {epoch + 1} (train + val)"):
            log(both.warning(f"epoch {epoch + 1} (train + val)"))
        if watch.skipped:
            log(f"warning: epoch {epoch + 1}: {watch.skipped} of {n_batches} batches had no gradient (silent "
                "network) and were skipped")
        info(
            f"epoch {epoch + 1}/{epochs}: loss {rec['train_loss']:.4f} acc {rec['train_accuracy']:.4f} | "
            f"val loss {rec['val_loss']:.4f} acc {rec['val_accuracy']:.4f} | {train_s:.1f} s, "
            f"{rec['events_per_s']:.3g} ev/s"
        )

    # test with the best-validation weights (kept in memory: best.pt was validated up front)
    if run.best_state is not None:
        net.load_state_dict(run.best_state)
    test = dist.reduce_eval(evaluate(net, distributed.for_eval(batches(splits["test"], eval_batch, False, seed), dist),
                                     loss_cfg, t_end, max_spikes, progress=progress, desc="test"))
    if test["cap"].warning("test"):
        log(test["cap"].warning("test"))
    wall = time.perf_counter() - t_start
    final = dict(final=True, test_accuracy=test["accuracy"], test_loss=test["loss"], best_val_accuracy=run.best_acc,
                 best_epoch=run.best_epoch, epochs=epochs, wall_s=wall, **test["cap"].record())
    if dist.main:
        write_metrics(metrics_path, [final], "a")
        plot(run, log, final)
    dist.close()
    return TrainResult(
        test_accuracy=test["accuracy"], test_loss=test["loss"], best_val_accuracy=run.best_acc,
        best_epoch=run.best_epoch, epochs_run=epochs - run.start_epoch, wall_s=wall, out=str(run.out_dir),
        history=run.history, model=net, test=final,
    )


def _device_dtype(model, device, dtype) -> tuple[torch.device, torch.dtype]:
    """--device / --dtype; unset, a given spikescan.Network keeps its own, anything else gets
    "auto" (CUDA when available) and f64."""
    own = model.float_like() if isinstance(model, SpikingNetwork) else None
    dev = own.device if (device is None and own is not None) else devices.resolve_device(device or "auto")
    dt = own.dtype if (dtype is None and own is not None) else devices.resolve_dtype(dtype or "f64")
    return dev, dt


def network_from_checkpoint(ck: dict, engine: Optional[str] = None, path="checkpoint", *, device=None,
                            dtype=None) -> SpikingNetwork:
    """Rebuild the trained network from a checkpoint dict (see runtime/checkpoint.py), compiling
    the sources embedded in it (no file outside the checkpoint is read). On the CPU unless
    `device` says otherwise; in the checkpoint's dtype unless `dtype` ("f32"/"f64") says
    otherwise. The training engine is kept where it runs on `device`, else "auto" picks."""
    dev = devices.resolve_device(device or "cpu")
    kw = dict(ck.get("net_kwargs", {}))
    if engine:
        kw["engine"] = engine
    elif not devices.runs_on(kw.get("engine", "auto"), dev):
        kw["engine"] = "auto"
    kw["engine"] = resolve_engine(kw.get("engine", "auto"), dev, devices.resolve_dtype(dtype) if dtype else None)
    kw = _net_kwargs(kw, path)
    net = SpikingNetwork(load_embedded_model(ck, path), ck.get("network"), seed=ck.get("seed", 0), **kw)
    floats = [v.dtype for v in ck["state_dict"].values() if v.is_floating_point()]
    if floats and floats[0] in devices.DTYPES.values():
        net.to(floats[0])  # a --dtype f32 run's checkpoint builds an f32 network
    load_state(net, ck["state_dict"], path)
    return net.to(device=dev, dtype=devices.resolve_dtype(dtype) if dtype else None)


def _net_kwargs(kw: dict, path) -> dict:
    """The network options of a checkpoint, type-checked (the file is untrusted)."""
    checks = {"chunk": lambda v: isinstance(v, int) and v > 0, "max_spikes": lambda v: isinstance(v, int) and v > 0,
              "on_overflow": lambda v: v in ("flag", "raise"), "learn_time_constants": lambda v: isinstance(v, bool)}
    out = {"engine": kw["engine"]}
    for k, ok in checks.items():
        if k in kw:
            if isinstance(kw[k], bool) != (k == "learn_time_constants") or not ok(kw[k]):
                raise CheckpointError(f"checkpoint {path}: network option {k}={kw[k]!r} is invalid")
            out[k] = kw[k]
    return out
