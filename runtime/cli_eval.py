"""`spikescan eval CHECKPOINT --data NAME [--split test]`: print {"accuracy", "loss", ...} as JSON."""

from __future__ import annotations

import argparse
import json
import sys

from spikescan.runtime.cli_train import DATASETS


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("checkpoint", help="a checkpoint written by `spikescan train` (last.pt or best.pt)")
    p.add_argument("--data", default=None, choices=DATASETS, help="dataset (default: the one it was trained on)")
    p.add_argument("--data-root", default=None)
    p.add_argument("--split", default="test", choices=("train", "val", "test"))
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--engine", default=None, help="engine (default: the training engine)")
    p.add_argument("--limit", type=int, default=None, help="evaluate only the first N samples")


def run(args: argparse.Namespace) -> int:
    from spikescan.runtime.checkpoint import load_checkpoint
    from spikescan.runtime.data import get_dataset
    from spikescan.runtime.losses import LossConfig
    from spikescan.runtime.train import _loader, _subset, evaluate, network_from_checkpoint

    try:
        ck = load_checkpoint(args.checkpoint)
        cfg = ck.get("config", {})
        data = args.data or cfg.get("data")
        if data is None:
            raise ValueError("the checkpoint does not name its dataset: pass --data")
        root = args.data_root if args.data_root is not None else (cfg.get("data_root") if data == cfg.get("data") else None)
        net = network_from_checkpoint(ck, engine=args.engine)
        opts = cfg.get("data_opts", {}) if data == cfg.get("data") else {}
        ds = _subset(get_dataset(data, args.split, root=root, **opts), args.limit)
        loss_cfg = LossConfig(**cfg.get("loss", {}))
        t_end = cfg.get("t_end") or 2.0 * float(getattr(ds, "t_max", getattr(getattr(ds, "dataset", None), "t_max", 0.0)))
        res = evaluate(net, _loader(ds, args.batch_size or cfg.get("batch_size", 32), False, 0), loss_cfg, t_end)
    except (FileNotFoundError, ValueError, NotImplementedError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(json.dumps(dict(accuracy=res["accuracy"], loss=res["loss"], n=res["n"], split=args.split, data=data,
                          epoch=ck.get("epoch"), overflow=res["overflow"])))
    return 0
