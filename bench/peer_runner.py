"""Times one discrete-time framework on a saved SHD-like problem; run in a subprocess by
bench/peer_compare.py, with the Python of the environment the framework is installed in
(e.g. /work/peers-venv/bin/python: the peers pin other torch/triton versions than spikescan).

    python bench/peer_runner.py --framework snntorch --problem problem.pt --dtype f32 \
        --threads 1 --repeats 5 --max-seconds 60 [--device cpu]

Needs only torch and the framework (not spikescan). The problem file holds the events, weights
and labels of the parent's run (torch.save; loaded with weights_only=True, so it runs no code).
Prints one JSON object per pass (forward, forward+backward) on stdout, or one object with
"skipped": reason when the framework cannot be imported or run. Exit status 0 in both cases.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from bench.common import bin_events, peak_memory, time_fn  # noqa: E402
from bench.peer_models import DT, FRAMEWORKS, MODULE  # noqa: E402


def _version(framework: str) -> str:
    mod = MODULE.get(framework)
    if mod is None:
        return torch.__version__
    try:
        from importlib.metadata import version

        return version(mod)
    except Exception:  # noqa: BLE001
        return "unknown"


def _print(**fields) -> None:
    fields.update(peer_python=sys.executable, peer_python_version=platform.python_version(),
                  peer_torch=torch.__version__, peer_torch_threads=torch.get_num_threads())
    print(json.dumps(fields), flush=True)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--framework", required=True, choices=sorted(FRAMEWORKS))
    p.add_argument("--problem", required=True)
    p.add_argument("--dtype", default="f32", choices=["f32", "f64"])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--max-seconds", type=float, default=60.0)
    p.add_argument("--device", default="cpu")
    args = p.parse_args(argv)
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    dtype = torch.float64 if args.dtype == "f64" else torch.float32
    tag = dict(framework=args.framework, dtype=args.dtype, version=_version(args.framework))
    try:
        pb = torch.load(args.problem, weights_only=True)
        n_steps = int(round(float(pb["duration_ms"]) / DT))
        x = bin_events(pb["times"], pb["channels"], int(pb["n_inputs"]), DT, n_steps, dtype=dtype)
        x = x.to(args.device)
        labels = pb["labels"].to(args.device)
        step = FRAMEWORKS[args.framework](pb["W1"], pb["W2"], args.device, dtype)
        loss, spikes = step(x, labels, False)  # also the import and device check
    except Exception as e:  # noqa: BLE001 - missing framework, wrong device: a skip with the reason
        _print(skipped="peer", reason=f"{args.framework} unavailable: {type(e).__name__}: {e}",
               trace=traceback.format_exc(limit=3)[-600:], **tag)
        return 0
    rate = spikes / (float(pb["duration_ms"]) / 1000.0)
    for mode, backward in (("forward", False), ("forward+backward", True)):
        fn = lambda b=backward: step(x, labels, b)  # noqa: E731
        try:
            tm = time_fn(fn, args.device, repeats=args.repeats, warmup=1, max_seconds=args.max_seconds)
            mem = peak_memory(fn, args.device)
        except Exception as e:  # noqa: BLE001
            _print(skipped=mode, reason=f"{type(e).__name__}: {e}", **tag)
            continue
        _print(kind="timing", mode=mode, dt_ms=DT, exact=False, hidden_rate_hz=rate, loss=float(loss),
               peak_bytes=mem["peak_bytes"], memory=mem, **tm, **tag)
    return 0


if __name__ == "__main__":
    sys.exit(main())
