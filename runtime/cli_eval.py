"""`spikescan eval CHECKPOINT --data NAME [--split test]`: print {"accuracy", "loss", ...} as JSON.

The checkpoint is validated and its network compiled from the sources embedded in it (so it
still evaluates after the model folder moved); errors are one-line messages (spikescan/cli.py)."""

from __future__ import annotations

import argparse
import json

from spikescan.runtime.cli_train import DATASETS


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("checkpoint", help="a checkpoint written by `spikescan train` (last.pt or best.pt)")
    p.add_argument("--data", default=None, choices=DATASETS, metavar="NAME",
                   help=f"dataset: {', '.join(DATASETS)} (default: the one it was trained on)")
    p.add_argument("--data-root", default=None, metavar="DIR",
                   help="folder with the recorded datasets' files (default: the training run's, for the same "
                        "dataset, else $SPIKESCAN_DATA)")
    p.add_argument("--split", default="test", choices=("train", "val", "test"),
                   help="which split to evaluate (default test)")
    p.add_argument("--batch-size", type=int, default=None,
                   help="samples per engine call (default: the training batch size); does not change the result")
    p.add_argument("--engine", default=None,
                   help="engine (default: the training engine where it runs on --device, else auto)")
    p.add_argument("--device", default=None, metavar="DEV",
                   help="where to evaluate: cpu (default), cuda, cuda:N or auto (cuda when a GPU is visible)")
    p.add_argument("--dtype", default=None, choices=("f64", "f32"),
                   help="floating-point type (default: the checkpoint's)")
    p.add_argument("--limit", type=int, default=None,
                   help="evaluate a seeded, class-stratified subset of N samples (seeded with the training "
                        "--seed, so it is the subset that training's --limit-eval N used)")
    p.add_argument("--max-spikes", type=int, default=None,
                   help="largest per-neuron spike cap (default: the training run's); samples over it are "
                        "truncated and counted (docs/engines.md, Spike caps)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar (stderr)")
    p.add_argument("-q", "--quiet", action="store_true", help="print only warnings, errors and the JSON result")


def run(args: argparse.Namespace) -> int:
    import sys

    from spikescan.runtime.checkpoint import load_checkpoint
    from spikescan.runtime.train_setup import (check_channels, check_options, evaluate, loader, loss_config,
                                               open_dataset, subset, t_max_of)
    from spikescan.runtime.train import network_from_checkpoint

    ck = load_checkpoint(args.checkpoint)
    cfg = ck["config"]
    data = args.data or cfg.get("data")
    if data is None:
        raise ValueError("the checkpoint does not name its dataset: pass --data")
    batch = args.batch_size if args.batch_size is not None else cfg.get("batch_size", 32)
    max_spikes = args.max_spikes if args.max_spikes is not None else cfg.get("max_spikes")
    check_options(epochs=1, batch_size=batch, lr=1.0, limit_eval=args.limit, max_spikes=max_spikes,
                  t_end=cfg.get("t_end"))
    same = data == cfg.get("data")
    root = args.data_root if args.data_root is not None else (cfg.get("data_root") if same else None)
    net = network_from_checkpoint(ck, engine=args.engine, path=args.checkpoint, device=args.device,
                                  dtype=args.dtype)
    ds = open_dataset(data, args.split, root, cfg.get("data_opts", {}) if same else {})
    check_channels(ds, net)
    ds = subset(ds, args.limit, int(cfg.get("seed", 0)))
    loss_cfg = loss_config({}, cfg.get("loss", {}))
    t_end = cfg.get("t_end") or 2.0 * (t_max_of(ds) or 0.0)
    res = evaluate(net, loader(ds, batch, False, 0), loss_cfg, t_end, max_spikes,
                   progress=not (args.no_progress or args.quiet), desc=f"eval {data} {args.split}")
    warning = res["cap"].warning(f"{data} {args.split}")
    if warning:
        print(warning, file=sys.stderr)
    print(json.dumps(dict(accuracy=res["accuracy"], loss=res["loss"], n=res["n"], split=args.split, data=data,
                          epoch=ck["epoch"], **res["cap"].record())))
    return 0
