"""`spikescan train model.snn --data NAME ...`: train a network and print the test accuracy."""

from __future__ import annotations

import argparse
import json

DATASETS = ("yinyang", "randman", "digits", "shd", "ssc", "nmnist", "dvsgesture")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", help=".snn file defining the network")
    p.add_argument("--data", required=True, choices=DATASETS, help="dataset to train on")
    p.add_argument("--data-root", default=None, help="folder with the dataset files (tonic datasets)")
    p.add_argument("--data-opt", action="append", default=[], metavar="KEY=VALUE",
                   help="dataset option, repeatable, e.g. --data-opt downsample=2 --data-opt "
                        "merge_polarity=true --data-opt max_events=400 (see runtime/data/)")
    p.add_argument("--network", default=None, help="network name, when the file defines several")
    p.add_argument("--epochs", type=int, default=None, help="epochs (default: per dataset)")
    p.add_argument("--batch-size", type=int, default=None, help="batch size (default: per dataset, 32)")
    p.add_argument("--lr", type=float, default=None, help="Adam learning rate (default: per dataset)")
    p.add_argument("--engine", default="auto", help="engine: auto (default: the compiled sequential-cpu; torch when torch-mlir is "
                        "missing), sequential-cpu, torch, torch-sequential (docs/engines.md); "
                        "training runs on the CPU")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None, help="output folder (default runs/<network>)")
    p.add_argument("--resume", action="store_true", help="continue from OUT/last.pt")
    p.add_argument("--clip-grad", type=float, default=None, help="clip the gradient norm to this value")
    p.add_argument("--limit-train", type=int, default=None,
                   help="train on a seeded (--seed), class-stratified subset of N training samples")
    p.add_argument("--limit-eval", type=int, default=None,
                   help="validate and test on seeded (--seed), class-stratified subsets of N samples")
    p.add_argument("--max-spikes", type=int, default=None,
                   help="largest spike cap per neuron and sample (default 1024): a sample that hits the "
                        "networks' cap of 64 is re-run with the cap doubled up to this; samples over it are "
                        "truncated, counted in every metrics record and warned about (docs/engines.md)")
    p.add_argument("--loss", default=None, help='loss options as JSON, e.g. \'{"tau": 2.0, "alpha": 0.003}\'')
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--threads", type=int, default=1,
                   help="torch intra-op threads (default 1: the engines run many small ops, "
                        "where more threads are slower; 0 keeps torch's default)")


def run(args: argparse.Namespace) -> int:
    """Errors (bad options, a bad .snn, corrupt checkpoints, unwritable --out) propagate to
    spikescan/cli.py, which prints them as one line."""
    from spikescan.runtime.train import train

    try:
        loss = json.loads(args.loss) if args.loss else None
    except json.JSONDecodeError as e:
        raise ValueError(f"--loss is not valid JSON: {e}") from None
    res = train(
        args.model, data=args.data, data_root=args.data_root, epochs=args.epochs, batch_size=args.batch_size,
        lr=args.lr, engine=args.engine, seed=args.seed, out=args.out, resume=args.resume,
        progress=not args.no_progress, network=args.network, loss=loss, clip_grad=args.clip_grad,
        limit_train=args.limit_train, limit_eval=args.limit_eval, threads=args.threads,
        data_opts=parse_data_opts(args.data_opt), max_spikes=args.max_spikes,
    )
    print(f"test accuracy: {res.test_accuracy:.4f} (best val {res.best_val_accuracy:.4f} at epoch {res.best_epoch}; "
          f"{res.wall_s:.1f} s; outputs in {res.out})")
    return 0


def parse_data_opts(items: list[str]) -> dict:
    """`KEY=VALUE` strings -> dataset keyword arguments (JSON values, true/false, or strings)."""
    opts = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key.isidentifier():
            raise ValueError(f"--data-opt expects KEY=VALUE, got {item!r}")
        low = raw.strip().lower()
        if low in ("true", "false"):
            opts[key] = low == "true"
            continue
        try:
            opts[key] = json.loads(raw)
        except json.JSONDecodeError:
            opts[key] = raw
    return opts

