"""bench/peers.py and bench/engines.py at --quick sizes (CI smoke: no peer is installed there),
the ratio bookkeeping of bench/peer_compare.py, and the report's peers sections.

The scripts run once per module at tiny sizes (batch 1, 16 hidden, 100 ms: the hidden layer
fires, so every backward has a path), with a peer Python that does not exist: the peers must come
back as "skipped" records, while the PyTorch loop (run with this Python) and the C floor are timed.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from bench import peer_compare  # noqa: E402

TINY = ["--quick", "--batch", "1", "--hidden", "16", "--duration", "100", "--repeats", "1",
        "--peer-dtypes", "f32", "--peer-python", "/nonexistent/peer/python"]
ENV_KEYS = ("bench", "quick", "date", "torch", "python", "cpu", "cpu_count", "host", "torch_threads",
            "loadavg", "device")
SIZE_KEYS = ("batch", "inputs", "hidden", "readout", "duration_ms", "events_per_sample")


def _run(name: str, args: list[str], tmp: Path) -> list[dict]:
    out = tmp / f"{name}.jsonl"
    r = subprocess.run([sys.executable, str(REPO / "bench" / f"{name}.py"), *TINY, "--out", str(out), *args],
                       capture_output=True, text=True, timeout=600, cwd=REPO)
    assert r.returncode == 0, r.stderr[-3000:]
    recs = [json.loads(line) for line in out.read_text().splitlines() if line.strip()]
    assert len([ln for ln in r.stdout.splitlines() if ln.startswith("{")]) == len(recs)
    return recs


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("peers")
    peers = _run("peers", ["--spikescan-engines", "torch", "--spikescan-dtypes", "f64",
                           "--peers", "snntorch,norse,spikingjelly,torch-loop"], tmp)
    engines = _run("engines", ["--engines", "torch,triton-scan", "--chunks", "32",
                               "--peers", "snntorch,torch-loop", "--no-c-floor"], tmp)
    return tmp, peers, engines


def _check_common(recs, bench):
    for r in recs:
        assert all(k in r for k in ENV_KEYS), sorted(set(ENV_KEYS) - set(r))
        assert r["bench"] == bench and r["quick"] is True and r["torch_threads"] == 1
        assert all(k in r for k in SIZE_KEYS) and r["batch"] == 1 and r["hidden"] == 16
        assert r["inputs"] == 700 and r["duration_ms"] == 100.0 and r["events_per_sample"] > 500


def _check_ratios(timing):
    """Each ratio field equals spikescan median / peer median of the same pass, both ways."""
    by_label = {(r["label"], r["mode"]): r for r in timing}
    n = 0
    for (label, mode), r in by_label.items():
        assert r["ratio_definition"].startswith("spikescan time / peer time")
        assert set(r["hidden_rate_hz_by_framework"]) == {lb for lb, _ in by_label}
        for other, x in r["spikescan_over_peer"].items():
            o = by_label[(other, mode)]
            s, q = (r, o) if label.startswith("spikescan") else (o, r)
            assert x == pytest.approx(s["median_s"] / q["median_s"], rel=1e-12)
            assert o["spikescan_over_peer"][label] == x
            n += 1
    return n


def test_peers_quick_records(runs):
    _, recs, _ = runs
    _check_common(recs, "peers")
    timing = [r for r in recs if r.get("kind") == "timing"]
    ss = {r["mode"]: r for r in timing if r["label"] == "spikescan:torch:f64"}
    assert set(ss) == {"hidden-forward", "forward", "forward+backward"}
    assert all(r["exact"] and r["hidden_spikes"] > 0 and r["median_s"] > 0 and r["dtype"] == "f64"
               for r in ss.values())
    loop = {r["mode"]: r for r in timing if r["label"] == "torch-loop:f32"}
    assert set(loop) == {"forward", "forward+backward"}
    for r in loop.values():
        assert r["dt_ms"] == 1.0 and not r["exact"] and r["dtype"] == "f32" and r["peer_torch_threads"] == 1
        assert r["hidden_rate_hz"] > 0 and r["median_s"] > 0 and r["peak_bytes"] >= 0
    for mode in ("forward", "forward+backward"):
        assert "torch-loop:f32" in ss[mode]["spikescan_over_peer"]
    c = [r for r in recs if r.get("framework") == "C floor"]
    assert len(c) == 1
    if "skipped" not in c[0]:  # no C compiler: a skip record naming why
        assert c[0]["mode"] == "hidden-forward" and "C floor:f64" in ss["hidden-forward"]["spikescan_over_peer"]
    assert _check_ratios(timing) >= 3
    flat = [r for r in recs if r.get("kind") == "ratio"]
    assert {(r["spikescan"], r["peer"], r["mode"]) for r in flat} >= {
        ("spikescan:torch:f64", "torch-loop:f32", "forward"),
        ("spikescan:torch:f64", "torch-loop:f32", "forward+backward")}


def test_missing_peers_are_skipped_not_fatal(runs):
    _, peers, engines = runs
    for recs, names in ((peers, {"snntorch", "norse", "spikingjelly"}), (engines, {"snntorch"})):
        sk = {r["framework"]: r for r in recs if r.get("skipped") == "peer"}
        assert set(sk) == names
        assert all("/nonexistent/peer/python not found" in r["reason"] and r["dtype"] == "f32"
                   for r in sk.values())


def test_engines_quick_records_carry_peer_ratios(runs):
    _, _, recs = runs
    _check_common(recs, "engines")
    timing = [r for r in recs if r.get("kind") == "timing"]
    assert {r["mode"] for r in timing} == {"hidden-forward", "hidden-forward+backward", "forward",
                                           "forward+backward"}
    assert all(r["engine"] == "torch" and r["label"] == "spikescan:torch:chunk32:f64" for r in timing)
    peer = [r for r in recs if r.get("kind") == "peer_timing"]
    assert {r["label"] for r in peer} >= {"torch-loop:f32"}
    n = _check_ratios(timing + peer)
    assert n >= 2 and all("torch-loop:f32" in r["spikescan_over_peer"] for r in timing
                          if r["mode"] in ("forward", "forward+backward"))
    assert any(r.get("kind") == "peer_ratio" for r in recs)
    assert any(r.get("skipped") == "engine" and r.get("engine") == "triton-scan" for r in recs)


def test_report_renders_the_runs(runs):
    from bench.report import load, render

    tmp, _, _ = runs
    text = render(load(sorted(tmp.glob("*.jsonl"))), tmp / "docs" / "benchmarks.md")
    peers = text[text.index("## spikescan vs discrete-time frameworks"):]
    assert "| spikescan:torch:f64 | spikescan | exact |" in peers
    assert "| torch-loop:f32 |" in peers and "spikescan time / peer time" in peers
    assert "skipped peer snntorch f32: peer Python /nonexistent/peer/python not found" in peers
    eng = text[text.index("## Engines on the SHD-like workload"):text.index("## spikescan vs")]
    assert "Engine time / peer time" in eng and "| spikescan:torch:chunk32:f64 | forward |" in eng


def test_report_leaves_quick_timing_files_out(tmp_path, monkeypatch):
    import bench.report as report

    for stem in ("peers-quick", "engines-quick", "precision-quick", "peers", "scaling-quick"):
        (tmp_path / f"{stem}.jsonl").write_text("{}\n")
    monkeypatch.setattr(report, "RESULTS", tmp_path)
    assert [Path(f).stem for f in report.default_files()] == ["peers", "precision-quick"]


def test_a_python_without_the_peer_gives_a_skip():
    missing = [m for m in peer_compare.PEERS if importlib.util.find_spec(m) is None]
    if not missing:
        pytest.skip("every peer is installed for this Python")
    recs = peer_compare.run_discrete({}, missing[:1], ["f32"], python=sys.executable, threads=1, repeats=1,
                                     max_seconds=1.0, device="cpu", timeout=60)
    assert len(recs) == 1 and recs[0]["skipped"] == "peer"
    assert recs[0]["reason"] == f"{missing[0]} is not installed for {sys.executable}"


def test_attach_ratios_pairs_only_the_same_pass():
    recs = [dict(kind="timing", label="spikescan:x:f64", mode="forward", median_s=2.0, hidden_rate_hz=4.0),
            dict(kind="timing", label="spikescan:x:f64", mode="hidden-forward", median_s=1.0),
            dict(kind="timing", label="snntorch:f32", mode="forward", median_s=0.5, hidden_rate_hz=9.0),
            dict(kind="timing", label="C floor:f64", mode="hidden-forward", median_s=0.25),
            dict(skipped="peer", label="norse:f32", reason="absent")]
    flat = peer_compare.attach_ratios(recs)
    assert recs[0]["spikescan_over_peer"] == {"snntorch:f32": 4.0}
    assert recs[1]["spikescan_over_peer"] == {"C floor:f64": 4.0}
    assert recs[2]["spikescan_over_peer"] == {"spikescan:x:f64": 4.0}
    assert recs[3]["hidden_rate_hz_by_framework"] == {"spikescan:x:f64": 4.0, "snntorch:f32": 9.0,
                                                      "C floor:f64": None}
    assert "spikescan_over_peer" not in recs[4]
    assert sorted((r["peer"], r["spikescan_over_peer"]) for r in flat) == [("C floor:f64", 4.0),
                                                                           ("snntorch:f32", 4.0)]
