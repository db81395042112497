"""Training throughput of models/nmnist.snn (issue 10 target: at least 100 samples/s) on the
shared N-MNIST recordings, through `spikescan.train` exactly as `spikescan train models/nmnist.snn
--data nmnist` runs it (full resolution: 2312 channels, ~5,600 events per sample, t_end 640 ms).

Two variants in the same run, on the same samples:
- "auto": models/nmnist.snn as it is (`init = auto(...)`: the hidden layer scaled to 10 Hz and
  the output layer to 50 Hz on the first batch, the spike cap sized to 4x the output's count);
- "explicit": the same network with the explicit inits models/nmnist.snn had before
  (hidden normal(0.02, 0.05), out normal(0.2, 0.3)): the output layer fired ~315 spikes per
  neuron at init, so most samples hit the spike cap and were re-run up to 4 times.

One JSON line per (variant, epoch): samples/s from the epoch's wall time, the process CPU time of
the epoch with its validation pass, spikes per neuron per layer, spike-cap re-runs, validation accuracy; the auto variant also
records the auto-init time and factors. On a machine shared with other jobs, compare the
variants of one run (and the CPU-time figures), not runs.

    python bench/nmnist_train.py [--quick] [--samples 800] [--epochs 2] [--threads 1]
"""

from __future__ import annotations

import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import REPO, base_parser, make_emitter  # noqa: E402

EXPLICIT = {"dense(x)": "dense(x, init = normal(0.02, 0.05))",
            "dense(hidden, init = auto(rate = 50 Hz))": "dense(hidden, init = normal(0.2, 0.3))"}


def variant_file(folder: Path, name: str) -> Path:
    """models/nmnist.snn (auto) or its explicit-init variant, next to a copy of its import."""
    text = (REPO / "models" / "nmnist.snn").read_text()
    if name == "explicit":
        for old, new in EXPLICIT.items():
            if old not in text:
                raise SystemExit(f"models/nmnist.snn has no `{old}`: update bench/nmnist_train.py")
            text = text.replace(old, new)
    shutil.copy(REPO / "models" / "cuba_lif.snn", folder / "cuba_lif.snn")
    path = folder / f"nmnist_{name}.snn"
    path.write_text(text)
    return path


class _CpuClock:
    """Process CPU time at each epoch boundary, read through train()'s `log` callback."""

    def __init__(self):
        self.marks = [time.process_time()]

    def log(self, line: str) -> None:
        if line.startswith("epoch "):
            self.marks.append(time.process_time())
        elif len(self.marks) == 1:  # start-up lines (summary, auto init): epoch 1 starts after them
            self.marks[0] = time.process_time()


def run_variant(em, path: Path, name: str, args, out_dir: Path) -> None:
    from spikescan.runtime import auto_init as auto_mod
    from spikescan.runtime.train import train

    timed = {}
    real = auto_mod.auto_init

    def timed_auto_init(*a, **k):
        t0 = time.perf_counter()
        rec = real(*a, **k)
        timed["s"] = time.perf_counter() - t0
        return rec

    auto_mod.auto_init = timed_auto_init
    clock = _CpuClock()
    try:
        res = train(str(path), data="nmnist", epochs=args.epochs, limit_train=args.samples, limit_eval=args.eval,
                    seed=args.seed, threads=args.threads, progress=False, out=str(out_dir / name), log=clock.log)
    finally:
        auto_mod.auto_init = real
    for k, h in enumerate(res.history):
        cpu = clock.marks[k + 1] - clock.marks[k] if len(clock.marks) > k + 1 else float("nan")
        em.emit(variant=name, epoch=h["epoch"], samples=args.samples, threads=args.threads,
                train_s=h["train_s"], samples_per_s=args.samples / h["train_s"],
                cpu_s_train_and_val=cpu, spikes_per_neuron=h["spikes_per_neuron"],
                spike_cap_reruns=h["spike_cap_reruns"], overflow=h["overflow"], val_accuracy=h["val_accuracy"],
                auto_init_s=timed.get("s") if k == 0 else None,
                auto_init=h.get("auto_init") if k == 0 else None)


def main(argv=None):
    p = base_parser(__doc__, "nmnist_train")
    p.add_argument("--samples", type=int, default=None, help="training samples (default 800, quick 64)")
    p.add_argument("--eval", type=int, default=None, help="validation samples (default 100, quick 16)")
    p.add_argument("--epochs", type=int, default=None, help="epochs (default 2, quick 1)")
    p.add_argument("--variants", default="explicit,auto")
    args = p.parse_args(argv)
    em = make_emitter(args, "nmnist_train")
    args.samples = args.samples or (64 if args.quick else 800)
    args.eval = args.eval or (16 if args.quick else 100)
    args.epochs = args.epochs or (1 if args.quick else 2)
    with tempfile.TemporaryDirectory(prefix="nmnist_train_") as tmp:
        folder = Path(tmp)
        for name in args.variants.split(","):
            run_variant(em, variant_file(folder, name), name, args, folder)


if __name__ == "__main__":
    main()
