"""`spikescan report RUN_DIR`: a one-page PNG summary of a training run (runtime/report.py);
the last line names the file written."""

from __future__ import annotations

import argparse


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("run_dir", metavar="RUN_DIR", help="output folder of `spikescan train` (metrics.jsonl, best.pt)")
    p.add_argument("-o", "--out", default=None, metavar="PNG", help="output file (default RUN_DIR/report.png)")
    p.add_argument("--checkpoint", default="best.pt", metavar="NAME",
                   help="checkpoint in RUN_DIR for the confusion matrix (default best.pt)")
    p.add_argument("--split", default="test", choices=("train", "val", "test"),
                   help="split for the confusion matrix (default test)")
    p.add_argument("--data-root", default=None, metavar="DIR",
                   help="folder with the recorded datasets' files (default: the training run's)")
    p.add_argument("--limit", type=int, default=None, metavar="N",
                   help="confusion matrix on a seeded, class-stratified subset of N samples")
    p.add_argument("--engine", default=None, help="engine (default: the training engine)")


def run(args: argparse.Namespace) -> int:
    from spikescan.runtime.report import write_report

    if args.limit is not None and args.limit <= 0:
        raise ValueError(f"--limit must be a positive number of samples, got {args.limit}")
    path = write_report(args.run_dir, args.out, checkpoint=args.checkpoint, data_root=args.data_root,
                        split=args.split, limit=args.limit, engine=args.engine)
    print(f"wrote {path}")
    return 0
