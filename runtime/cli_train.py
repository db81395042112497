"""`spikescan train model.snn --data NAME ...`: train a network and print the test accuracy.

Output: a start-up summary (network, parameters, engine, device, dataset sizes), a progress bar
per epoch and for validation and test, one summary line per epoch, then the final line on
stdout. `--no-progress` drops the bars only; `--quiet` prints nothing but warnings, errors and
the final line."""

from __future__ import annotations

import argparse
import json
import os
import textwrap

DATASETS = ("yinyang", "randman", "digits", "shd", "ssc", "nmnist", "dvsgesture")

# --data-opt keys per dataset: the keyword arguments of its class in runtime/data/ (checked
# against the constructors by tests/runtime/test_cli_help.py).
DATASET_OPTIONS = {
    "yinyang": ("built in: 5 latency-coded inputs, 3 classes",
                "size seed t_min t_max bias bias_time r_small r_big"),
    "randman": ("built in: random manifolds",
                "n_classes n_units dim window samples_per_class alpha prec seed fractions t_max"),
    "digits": ("built in: sklearn 8x8 digits as latencies, 10 classes", "t_max seed fractions"),
    "shd": ("tonic files (--data-root): Heidelberg digits, 700 channels",
            "t_max time_bin max_events cap_mode downsample val_fraction split_seed cache"),
    "ssc": ("tonic files (--data-root): speech commands, 700 channels",
            "t_max time_bin max_events cap_mode downsample val_fraction split_seed cache"),
    "nmnist": ("tonic files (--data-root): N-MNIST, 34x34x2 = 2312 channels",
               "t_max time_bin max_events cap_mode downsample merge_polarity chw val_fraction test_fraction "
               "split_seed cache"),
    "dvsgesture": ("tonic files (--data-root): DVS Gesture, 128x128x2",
                   "t_max time_bin max_events cap_mode downsample merge_polarity chw val_fraction "
                   "test_fraction split_seed cache"),
}

# --loss keys: the fields of runtime/losses.py LossConfig (checked by the same test)
LOSS_KEYS = {
    "tau": "first-spike softmax temperature (ms)",
    "alpha": "weight of the early-spike term alpha*(exp(t_label/beta)-1)",
    "beta": "time scale of that term (ms)",
    "silent_slope": "ms per unit potential gap: gradient for silent label neurons (0 = off)",
    "value_scale": "logit scale of count, max_potential, li_integral readouts",
    "count_width": "sigmoid width of soft spike counts (ms)",
    "hidden_reg": "weight of the hidden spike-count regulariser",
    "hidden_target": "its target spikes per neuron and sample",
    "hidden_mode": "upper|lower|both",
}


def epilog() -> str:
    """The datasets with their --data-opt keys, and the --loss keys, for `--help`."""
    lines = ["datasets (--data NAME) and their --data-opt keys:"]
    for name, (what, keys) in DATASET_OPTIONS.items():
        lines.append(f"  {name:<11} {what}")
        lines += textwrap.wrap(keys, 88, initial_indent=f"  {'':<11}   keys: ", subsequent_indent=" " * 21)
    lines.append("")
    lines.append("--loss keys (JSON object; defaults per dataset, docs/training.md):")
    for k, v in LOSS_KEYS.items():
        lines.append(f"  {k:<14} {v}")
    lines.append("")
    lines.append("example: spikescan train models/yinyang.snn --data yinyang --epochs 5 --out runs/yy")
    return "\n".join(lines)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.formatter_class = argparse.RawDescriptionHelpFormatter
    p.epilog = epilog()
    p.add_argument("model", help=".snn file defining the network")
    p.add_argument("--data", required=True, choices=DATASETS, metavar="NAME",
                   help=f"dataset to train on: {', '.join(DATASETS)} (listed below)")
    p.add_argument("--data-root", default=None, metavar="DIR",
                   help="folder with the recorded datasets' files (tonic's save_to; default $SPIKESCAN_DATA); "
                        "the built-in datasets ignore it")
    p.add_argument("--data-opt", action="append", default=[], metavar="KEY=VALUE",
                   help="dataset option, repeatable, e.g. --data-opt downsample=2 --data-opt "
                        "merge_polarity=true --data-opt max_events=400 (keys per dataset below)")
    p.add_argument("--network", default=None, help="network name, when the file defines several")
    p.add_argument("--epochs", type=int, default=None, help="epochs (default: per dataset)")
    p.add_argument("--batch-size", type=int, default=None, help="batch size (default: per dataset, 32)")
    p.add_argument("--lr", type=float, default=None, help="Adam learning rate (default: per dataset)")
    p.add_argument("--engine", default="auto", help="engine: auto (default: the fastest differentiable engine for the device: "
                        "the compiled sequential-cpu on a CPU, torch when torch-mlir is missing; on CUDA the "
                        "engine measured fastest on this GPU by bench/gpu_check.sh, else torch), sequential-cpu, "
                        "torch, torch-sequential, triton-scan, triton-sequential (docs/engines.md)")
    p.add_argument("--device", default=None, metavar="DEV",
                   help="where to train: auto (default: cuda when a GPU is visible, else cpu), cpu, cuda or cuda:N; "
                        "the dataset stays on the CPU and each batch is moved")
    p.add_argument("--dtype", default="f64", choices=("f64", "f32"),
                   help="floating-point type of the simulation and the parameters (default f64; f32 moves spike "
                        "times by about 1e-4 ms on Yin-Yang, docs/training.md)")
    p.add_argument("--ddp", action="store_true",
                   help="data-parallel training under torchrun (gloo on CPU, nccl on CUDA): each process simulates "
                        "its part of every batch, gradients are summed; rank 0 writes the outputs "
                        "(docs/training.md, Several processes and machines)")
    p.add_argument("--seed", type=int, default=0,
                   help="seed of the weight init, the shuffling and the --limit-* subsets (default 0); a run is "
                        "deterministic for a given seed")
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
    p.add_argument("--loss", default=None, metavar="JSON",
                   help='loss options as a JSON object, e.g. \'{"tau": 2.0, "alpha": 0.003}\' (keys below)')
    p.add_argument("--no-progress", action="store_true",
                   help="no progress bars (the start-up summary and one line per epoch are still printed)")
    p.add_argument("-q", "--quiet", action="store_true",
                   help="print only warnings, errors and the final test-accuracy line")
    p.add_argument("--threads", type=int, default=None, metavar="N",
                   help="cores for the compiled CPU engines, which run the samples of a batch in parallel "
                        "(default: every core; results are the same for any N); torch ops keep one "
                        "intra-op thread (they are many and small); 0 keeps torch's default for both")


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
        progress=not args.no_progress, quiet=args.quiet, network=args.network, loss=loss, clip_grad=args.clip_grad,
        limit_train=args.limit_train, limit_eval=args.limit_eval, threads=args.threads,
        data_opts=parse_data_opts(args.data_opt), max_spikes=args.max_spikes, device=args.device, dtype=args.dtype,
        ddp=args.ddp,
    )
    if args.ddp and int(os.environ.get("RANK", "0")) != 0:
        return 0  # rank 0 reports
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
