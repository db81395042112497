"""Child process of test_pipeline_fuzz.py: seeded mutations of the shipped models through
`spikescan check`, `spikescan compile` and a tiny forward, for at most BUDGET seconds.

Prints one JSON line: {"cases": n, "checked_ok": k, "compiled": c, "ran": r, "internal": [...]}.
An internal error is a CLI exit code 70 or an exception in the forward that the CLI would not
report as a user error; a crash of the JIT kills this process (the parent sees the signal)."""

from __future__ import annotations

import contextlib
import io
import json
import random
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path

import torch

from spikescan import cli

ROOT = Path(__file__).resolve().parents[2]
SEEDS = ["lif.snn", "cuba_lif.snn", "alpha_lif.snn", "adaptive_lif.snn", "yinyang.snn"]
NUMBERS = ["0", "-1", "1e308", "1e-300", "1e400", "0.0 ms", "-5 ms", "10 ^ 10 ^ 10", "2.5", "1e9"]
TOKENS = ["{", "}", "(", ")", "=", "+=", "/", "*", " ms", "exp(", "dv/dt", "\x00", "é", "on",
          "spike", 'import "nope.snn"', "params", "state", "\n", "refractory 1 ms", "port = exc"]
NUM = re.compile(r"(?<![A-Za-z_])\d+(\.\d+)?(e-?\d+)?")
IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def mutate(text: str, rng: random.Random) -> str:
    for _ in range(rng.randint(1, 3)):
        op = rng.randrange(6)
        lines = text.split("\n")
        if op == 0:
            nums = list(NUM.finditer(text))
            if nums:
                m = rng.choice(nums)
                text = text[:m.start()] + rng.choice(NUMBERS) + text[m.end():]
        elif op == 1 and len(text) > 30:
            a = rng.randrange(len(text) - 20)
            text = text[:a] + text[a + rng.randint(1, 20):]
        elif op == 2:
            k = rng.randrange(len(lines))
            lines.insert(k, lines[k])
            text = "\n".join(lines)
        elif op == 3:
            a = rng.randrange(len(text) + 1)
            text = text[:a] + rng.choice(TOKENS) + text[a:]
        elif op == 4 and len(lines) > 2:
            i, j = rng.sample(range(len(lines)), 2)
            lines[i], lines[j] = lines[j], lines[i]
            text = "\n".join(lines)
        else:
            ids = list(IDENT.finditer(text))
            if ids:
                m = rng.choice(ids)
                text = text[:m.start()] + rng.choice(ids).group() + text[m.end():]
    return text


def run_cli(argv: list[str]) -> int:
    with contextlib.redirect_stderr(io.StringIO()), contextlib.redirect_stdout(io.StringIO()):
        return cli.main(argv)


def tiny_forward(path: Path) -> None:
    from spikescan.compiler.driver import load_model
    from spikescan.runtime.network import SpikingNetwork
    from spikescan.runtime.simulate import simulate

    model = load_model(path)
    if getattr(model, "networks", None):
        net = SpikingNetwork.from_file(path)
        n_in = sum(net.ir.inputs.values()) if hasattr(net, "ir") else 1
        t = torch.tensor([[1.0, 2.0, 5.0]], dtype=torch.float64)
        c = torch.tensor([[0, min(1, n_in - 1), 0]])
        net(t, c, t_end=20.0)
        return
    for name in model.neurons:
        for engine in ("sequential-cpu", "torch"):
            simulate(model.neurons[name], times=[1.0, 2.0, 3.0], weights=[0.8, 0.8, 0.8], engine=engine,
                     t_end=20.0, max_spikes=64)


def main(budget: float, seed: int) -> dict:
    rng = random.Random(seed)
    work = Path(tempfile.mkdtemp(prefix="spikescan-fuzz-"))
    for f in (ROOT / "models").glob("*.snn"):
        shutil.copy(f, work / f.name)
    sources = {s: (ROOT / "models" / s).read_text() for s in SEEDS}
    stats = {"cases": 0, "checked_ok": 0, "compiled": 0, "ran": 0, "internal": []}
    user_errors = None
    t0 = time.monotonic()
    while time.monotonic() - t0 < budget:
        seed_name = rng.choice(SEEDS)
        text = mutate(sources[seed_name], rng)
        path = work / f"m{stats['cases']}_{seed_name}"
        path.write_text(text, errors="surrogateescape")
        stats["cases"] += 1
        case = {"case": stats["cases"], "seed": seed_name}
        passed = True
        for stage, argv, counter in (("check", ["check", str(path)], "checked_ok"),
                                     ("compile", ["compile", str(path), "-o", str(work / "build")], "compiled")):
            rc = run_cli(argv)
            if rc == 70:  # the CLI's exit code for an internal error
                stats["internal"].append(dict(case, stage=stage))
            if rc != 0:
                passed = False
                break
            stats[counter] += 1
        if not passed:
            continue
        try:
            tiny_forward(path)
            stats["ran"] += 1
        except Exception as e:  # noqa: BLE001 - classified as the CLI would
            user_errors = user_errors or cli._user_error_types()
            if not isinstance(e, user_errors):
                stats["internal"].append(dict(case, stage="forward", error=f"{type(e).__name__}: {e}"[:300]))
    shutil.rmtree(work, ignore_errors=True)
    return stats


if __name__ == "__main__":
    print(json.dumps(main(float(sys.argv[1]), int(sys.argv[2]))))
