"""`spikescan run MODEL.snn [--network NAME] --duration 1000ms [--seed S] --out spikes.npz`:
simulate a sparse autonomous network exactly (docs/sparse.md), with a progress bar on stderr;
writes times (ms), neurons (global index) and population (layer index) to an .npz (no pickle)
and prints one JSON summary line."""

from __future__ import annotations

import json
import sys
import time


def add_arguments(p) -> None:
    p.add_argument("model", help="the .snn file")
    p.add_argument("--network", default=None, help="the sparse network to run (default: the file's only one)")
    p.add_argument("--duration", default="1000ms", help="simulated time, e.g. 1000ms, 2s (default 1000ms)")
    p.add_argument("--seed", type=int, default=0, help="seed of the initial state (default 0); the "
                   "connectivity comes from each connection's `seed` in the file")
    p.add_argument("--out", default=None, help="write the spikes to this .npz (times, neurons, population)")
    p.add_argument("--engine", choices=("compiled", "reference"), default="compiled",
                   help="compiled: O(log N) per spike (default); reference: the plain O(N) loop")
    p.add_argument("--max-spikes", type=int, default=None, help="stop after this many spikes")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args) -> int:
    from . import run_sparse, parse_duration
    from .model import SparseModel

    if args.seed < 0:
        raise ValueError(f"--seed must be >= 0, got {args.seed}")
    if args.max_spikes is not None and args.max_spikes < 0:
        raise ValueError(f"--max-spikes must be >= 0, got {args.max_spikes}")
    ms = parse_duration(args.duration)
    if args.out is not None:
        with open(args.out, "ab"):  # fail before simulating when the file cannot be written
            pass
    t0 = time.perf_counter()
    model = SparseModel.load(args.model, args.network, args.seed)
    t_build = time.perf_counter() - t0
    bar = _Bar(ms, enabled=not args.no_progress)
    try:
        train = run_sparse(model, duration=ms, engine=args.engine, max_spikes=args.max_spikes,
                           progress=bar.update)
    finally:
        bar.close()
    if args.out is not None:
        train.save_npz(args.out)
    wall = train.wall_s
    summary = {"network": model.name, "engine": args.engine, "neurons": model.n,
               "synapses": model.n_synapses, "duration_ms": train.t_end, "spikes": len(train),
               "wall_s": round(wall, 4), "spikes_per_s": round(len(train) / wall, 1) if wall > 0 else None,
               "build_s": round(t_build, 4), "complete": train.complete,
               "rates_hz": {n: round(float(r), 3) for n, r in zip(model.layers, train.rates_hz())}}
    if args.out is not None:
        summary["out"] = str(args.out)
    print(json.dumps(summary))
    return 0


class _Bar:
    """Simulated time as a tqdm bar (a plain \\r line without tqdm)."""

    def __init__(self, total_ms: float, enabled: bool):
        self.total, self.enabled, self.bar, self.last = total_ms, enabled, None, 0.0
        if enabled:
            try:
                from tqdm import tqdm

                self.bar = tqdm(total=round(total_ms, 3), desc="simulating", unit="ms", file=sys.stderr,
                                leave=False, dynamic_ncols=True)
            except ImportError:
                pass

    def update(self, t_ms: float, spikes: int) -> None:
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.update(round(max(t_ms - self.last, 0.0), 3))
            self.bar.set_postfix_str(f"spikes={spikes}", refresh=False)
        else:
            sys.stderr.write(f"\rsimulating {t_ms:.1f}/{self.total:.1f} ms, {spikes} spikes")
            sys.stderr.flush()
        self.last = t_ms

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        elif self.enabled:
            sys.stderr.write("\n")
