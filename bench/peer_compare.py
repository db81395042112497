"""The discrete-time side of a benchmark run, shared by bench/peers.py and bench/engines.py.

- `add_arguments`: --peers, --peer-dtypes, --peer-python, --peer-timeout, --no-c-floor.
- `run_discrete`: each framework (snnTorch, Norse, SpikingJelly, a plain PyTorch loop) in its own
  subprocess (bench/peer_runner.py) on the parent's batch, saved to a temporary file. The peers
  run with the Python of `--peer-python`, else $SPIKESCAN_PEER_PYTHON, else this Python: their
  pins (CUDA torch, older triton) clash with spikescan's, so they live in their own venv. The
  PyTorch loop runs with this Python (same torch). A framework that is missing gives a record
  with "skipped": reason, never an exception.
- `c_floor`: the plain C loop of bench/cpu_step.py (exact forward state updates, no root solves)
  on the same batch.
- `attach_ratios`: every timing record gets `spikescan_over_peer` {counterpart label: spikescan
  time / peer time, same pass, same run} and `hidden_rate_hz_by_framework` {label: Hz}; flat
  kind="ratio" records are returned as well.
"""

from __future__ import annotations

import ctypes
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

from bench.common import REPO, time_fn
from bench.peer_models import TAU_M, TAU_S  # the workload's (models/cuba_lif.snn defaults)

PEERS = ("snntorch", "norse", "spikingjelly")
DISCRETE = PEERS + ("torch-loop",)
C_FLOOR = "C floor"
RATIO_DEFINITION = "spikescan time / peer time, same pass, same run (< 1: spikescan faster)"


def add_arguments(p, peers_default: str = ",".join(DISCRETE)) -> None:
    p.add_argument("--peers", default=peers_default,
                   help=f"discrete-time frameworks at dt = 1 ms, from {', '.join(DISCRETE)} ('' for none)")
    p.add_argument("--peer-dtypes", default=None,
                   help="dtypes of the discrete-time runs (default f32,f64; f32 with --quick; f32 is "
                        "how the peers normally run)")
    p.add_argument("--peer-python", default=None,
                   help="Python of the environment with the peers installed (default: "
                        "$SPIKESCAN_PEER_PYTHON, else this Python), e.g. /work/peers-venv/bin/python")
    p.add_argument("--peer-timeout", type=float, default=None,
                   help="seconds per framework subprocess (default 300 with --quick, else 1800)")
    p.add_argument("--no-c-floor", action="store_true", help="do not compile and time the C loop")


def peer_dtypes(args) -> list[str]:
    spec = args.peer_dtypes if args.peer_dtypes is not None else ("f32" if args.quick else "f32,f64")
    return [d for d in spec.split(",") if d]


def flush_on_sigterm() -> None:
    """SIGTERM (e.g. from `timeout`) raises SystemExit, so a script's `finally` still writes the
    records measured so far."""
    import signal

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))


def peer_python(arg: str | None) -> str:
    return arg or os.environ.get("SPIKESCAN_PEER_PYTHON") or sys.executable


_PROBE = ("import importlib.util, json, sys\n"
          "print(json.dumps({m: importlib.util.find_spec(m) is not None for m in sys.argv[1:]}))")


def probe(python: str, modules: list[str]) -> tuple[dict, str | None]:
    """({module: installed?}, None) or ({}, why the Python cannot be used); imports nothing."""
    if not Path(python).exists():
        return {}, (f"peer Python {python} not found (install the peers in a venv and pass "
                    f"--peer-python or set SPIKESCAN_PEER_PYTHON; see docs/benchmarks.md)")
    try:
        r = subprocess.run([python, "-c", _PROBE, "torch", *modules], capture_output=True, text=True,
                           timeout=120)
        found = json.loads(r.stdout.strip().splitlines()[-1])
    except (OSError, subprocess.SubprocessError, ValueError, IndexError) as e:
        return {}, f"peer Python {python} unusable: {type(e).__name__}: {e}"
    if not found.get("torch"):
        return {}, f"torch is not installed for {python}"
    return found, None


def problem_dict(pb) -> dict:
    """The batch every framework sees: events, weights (float64) and labels of a ShdProblem."""
    return dict(times=pb.times.detach().double().cpu(), channels=pb.channels.cpu(),
                W1=pb.W1.detach().double().cpu(), W2=pb.W2.detach().double().cpu(),
                labels=pb.labels.cpu(), duration_ms=float(pb.t_end), n_inputs=int(pb.workload.n_inputs))


def _skip(name: str, dtype: str, reason: str, python: str) -> dict:
    return dict(skipped="peer", framework=name, label=f"{name}:{dtype}", dtype=dtype, reason=reason,
                peer_python=python)


def run_discrete(problem: dict, frameworks: list[str], dtypes: list[str], *, python: str, threads: int,
                 repeats: int, max_seconds: float, device: str, timeout: float) -> list[dict]:
    """Records (timing or skipped, without the environment fields) of every framework x dtype."""
    frameworks = [f for f in frameworks if f]
    unknown = [f for f in frameworks if f not in DISCRETE]
    out = [_skip(f, d, f"unknown framework (known: {', '.join(DISCRETE)})", python)
           for f in unknown for d in dtypes]
    peers = [f for f in frameworks if f in PEERS]
    found, why = probe(python, peers) if peers else ({}, None)
    env = dict(os.environ, OMP_NUM_THREADS=str(max(threads, 1)), MKL_NUM_THREADS=str(max(threads, 1)))
    with tempfile.TemporaryDirectory(prefix="spikescan-peers-") as d:
        path = Path(d) / "problem.pt"
        torch.save(problem, path)
        for name in frameworks:
            if name in unknown:
                continue
            py = sys.executable if name == "torch-loop" else python
            for dt in dtypes:
                if name in PEERS and (why or not found.get(name)):
                    out.append(_skip(name, dt, why or f"{name} is not installed for {python}", py))
                    continue
                cmd = [py, str(REPO / "bench" / "peer_runner.py"), "--framework", name, "--problem",
                       str(path), "--dtype", dt, "--threads", str(threads), "--repeats", str(repeats),
                       "--max-seconds", str(max_seconds), "--device", device]
                try:
                    r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env,
                                       cwd=REPO)
                except subprocess.TimeoutExpired:
                    out.append(_skip(name, dt, f"no result within --peer-timeout {timeout:g} s", py))
                    continue
                recs = [json.loads(ln) for ln in r.stdout.splitlines() if ln.startswith("{")]
                if r.returncode != 0 or not recs:
                    tail = (r.stderr.strip().splitlines() or ["no output"])[-1][:300]
                    out.append(_skip(name, dt, f"runner exit {r.returncode}: {tail}", py))
                    continue
                for rec in recs:
                    rec["label"] = f"{name}:{dt}"
                    out.append(rec)
    return out


def c_floor(pb, repeats: int) -> dict:
    """Timing record of the C floor on the hidden layer of `pb` (float64), or a skipped record."""
    try:
        from bench.cpu_step import build_c_loop  # the loop is defined there once
    except Exception as e:  # noqa: BLE001
        return dict(skipped="C floor", framework=C_FLOOR, reason=f"{type(e).__name__}: {e}")
    f, why = build_c_loop()
    if f is None:
        return dict(skipped="C floor", framework=C_FLOOR, reason=why)
    times = pb.times.detach().double().cpu()
    order = torch.argsort(times, 1)
    ts = torch.gather(times, 1, order).contiguous()
    cs = torch.gather(pb.channels.cpu(), 1, order).contiguous()
    nvalid = torch.isfinite(ts).sum(1).to(torch.int64).contiguous()
    W = pb.W1.detach().double().cpu().contiguous()
    B, H = ts.shape[0], W.shape[1]
    v, i = torch.empty(H, dtype=torch.float64), torch.empty(H, dtype=torch.float64)
    ptr = lambda x: ctypes.c_void_p(x.data_ptr())  # noqa: E731
    call = lambda: f(ptr(ts), ptr(cs), ptr(nvalid), B, ts.shape[1], ptr(W), H,  # noqa: E731
                     ctypes.c_double(TAU_M), ctypes.c_double(TAU_S), ptr(v), ptr(i))
    spikes = call()
    tm = time_fn(call, "cpu", repeats=repeats, warmup=1)
    return dict(kind="timing", framework=C_FLOOR, label=f"{C_FLOOR}:f64", mode="hidden-forward", dtype="f64",
                exact=True, version="cc -O3 -march=native", **tm,
                hidden_rate_hz=spikes / (B * H) / (float(pb.t_end) / 1000.0),
                note="bench/cpu_step.py C_LOOP: the exact state updates of the hidden layer with the "
                     "shared propagator, threshold tested at input events only (no root solves)")


def attach_ratios(records: list[dict], flat_kind: str = "ratio") -> list[dict]:
    """Fill `spikescan_over_peer` and `hidden_rate_hz_by_framework` into every timing record (in
    place); return the flat kind="ratio" records. Spikescan records have label 'spikescan:...'."""
    timing = [r for r in records if r.get("kind") == "timing" and "skipped" not in r]
    rates = {}  # label -> the first rate its records give
    for r in timing:
        if rates.get(r["label"]) is None:
            rates[r["label"]] = r.get("hidden_rate_hz")
    ss = [r for r in timing if r["label"].startswith("spikescan")]
    peers = [r for r in timing if not r["label"].startswith("spikescan")]
    flat = []
    for r in timing:
        r.setdefault("spikescan_over_peer", {})
        r["ratio_definition"] = RATIO_DEFINITION
        r["hidden_rate_hz_by_framework"] = rates
    for s in ss:
        for q in peers:
            if s["mode"] != q["mode"] or not q["median_s"]:
                continue
            x = s["median_s"] / q["median_s"]
            s["spikescan_over_peer"][q["label"]] = x
            q["spikescan_over_peer"][s["label"]] = x
            flat.append(dict(kind=flat_kind, mode=s["mode"], spikescan=s["label"], peer=q["label"],
                             spikescan_s=s["median_s"], peer_s=q["median_s"], spikescan_over_peer=x,
                             spikescan_hidden_rate_hz=s.get("hidden_rate_hz"),
                             peer_hidden_rate_hz=q.get("hidden_rate_hz"), ratio_definition=RATIO_DEFINITION))
    return flat


class Buffer:
    """Collects a run's records (emit / skip, like bench.common.Emitter); `flush` attaches the
    ratios and writes everything through the emitter, also after an error (call it in finally)."""

    def __init__(self, em, flat_kind: str = "ratio", peer_kind: str = "timing"):
        # bench/engines.py writes the peers' timings and ratios under other kinds than its
        # engines' "timing" and scan/sequential "ratio" records
        self.em, self.flat_kind, self.peer_kind, self.records = em, flat_kind, peer_kind, []

    def emit(self, **fields) -> None:
        self.records.append(fields)

    def skip(self, reason: str, **fields) -> None:
        fields["skipped"] = fields.pop("what", True)
        self.records.append(dict(fields, reason=reason))

    def flush(self, sizes: dict) -> None:
        flat = attach_ratios(self.records, self.flat_kind)
        for r in self.records + flat:
            r = {**sizes, **r}
            if r.get("kind") == "timing" and not str(r.get("label", "")).startswith("spikescan"):
                r["kind"] = self.peer_kind
            if "skipped" in r:
                self.em.skip(r.pop("reason"), what=r.pop("skipped"), **r)
            else:
                self.em.emit(**r)
        self.records = []
