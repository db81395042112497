"""Turn the benchmark JSON lines into docs/benchmarks.md and PNG plots in docs/img/.

    python bench/report.py [FILES...] [--out docs/benchmarks.md]

Without FILES it reads bench/results/*.jsonl. For each bench it uses the records of one file
(full runs preferred over --quick ones, CUDA files shown in their own section), so every table
comes from a single process run on a single machine, as stated in its header line.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import RESULTS, REPO  # noqa: E402


def load(files) -> dict[str, list[dict]]:
    """file stem -> records (blank or broken lines are reported and skipped)."""
    out = {}
    for f in files:
        recs = []
        for i, line in enumerate(Path(f).read_text().splitlines(), 1):
            if not line.strip():
                continue
            try:
                recs.append(json.loads(line))
            except json.JSONDecodeError as e:
                print(f"{f}:{i}: skipped unparsable line ({e})", file=sys.stderr)
        if recs:
            out[Path(f).stem] = recs
    return out


# ----------------------------------------------------------------------------- formatting


def fmt_s(x) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-"
    if x >= 1:
        return f"{x:.2f} s"
    if x >= 1e-3:
        return f"{x * 1e3:.1f} ms"
    return f"{x * 1e6:.0f} us"


def fmt_b(x) -> str:
    if x is None:
        return "-"
    for unit, f in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if x >= f:
            return f"{x / f:.1f} {unit}"
    return f"{x} B"


def fmt_g(x, digits=2) -> str:
    if x is None:
        return "-"
    if isinstance(x, (int,)) or (isinstance(x, float) and x.is_integer() and abs(x) < 1e6):
        return str(int(x))
    return f"{x:.{digits}g}" if abs(x) < 1e-2 or abs(x) >= 1e4 else f"{x:.{digits + 1}g}"


def table(headers, rows) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


def load_text(recs) -> str:
    """Range of the 1-minute load average over a run's records (a shared machine is slower)."""
    loads = [r["loadavg"][0] for r in recs if isinstance(r.get("loadavg"), list) and r["loadavg"]]
    if not loads:
        return "machine load not recorded"
    lo, hi = min(loads), max(loads)
    return f"1-min load average {lo:.1f}" + (f"-{hi:.1f}" if hi - lo >= 0.05 else "")


def date_range(recs) -> str:
    dates = sorted(r["date"] for r in recs if r.get("date"))
    if not dates:
        return "?"
    a, b = dates[0].replace("+00:00", ""), dates[-1].replace("+00:00", "")
    return f"{a} to {b[11:] if a[:10] == b[:10] else b} UTC"


def threads_text(recs) -> str:
    th = sorted({r["torch_threads"] for r in recs if r.get("torch_threads") is not None})
    return "/".join(str(t) for t in th) if th else "?"


def machine_line(recs) -> str:
    r = next((x for x in recs if "torch" in x), recs[0])
    dev = r.get("gpu") or r.get("device", "?")
    return (f"_Run {date_range(recs)} on {r.get('cpu', '?')} ({r.get('cpu_count', '?')} cores, "
            f"{threads_text(recs)} torch threads, {load_text(recs)}), device `{dev}`, torch "
            f"{r.get('torch', '?')}, Python {r.get('python', '?')}, commit {r.get('commit', '?')}"
            f"{', --quick sizes' if r.get('quick') else ''}._")


def skipped_lines(recs) -> list[str]:
    seen, out = set(), []
    for r in recs:
        if "skipped" in r:
            what = " ".join(str(r.get(k)) for k in ("skipped", "engine", "framework", "model", "dtype",
                                                     "chunk", "sweep") if r.get(k) not in (None, True))
            key = (what, r.get("reason"))
            if key not in seen:
                seen.add(key)
                out.append(f"- skipped {what or 'item'}: {r.get('reason')}")
    return out


def sections_for(groups: dict[str, list[dict]], bench: str) -> list[str]:
    """File stems of one bench (e.g. engines, engines-cuda, engines-quick-cuda-large), in order;
    a --quick file is left out when the full run of the same variant is present."""
    stems = sorted((s for s in groups if s == bench or s.startswith(bench + "-")),
                   key=lambda s: ("cuda" in s, s))  # CPU sections first, then CUDA
    return [s for s in stems if not ("-quick" in s and s.replace("-quick", "") in stems)]


# Facts about a result file that its records cannot state themselves (they were measured before
# a code change): shown under the section title. Keep in step with the files in bench/results/.
STALE_NOTES = {
    "engines-cuda": "Older measurement, kept as measured: taken before the torch engine became "
                    "~4x faster (closed-form crossing decisions, commit 4633067) and before "
                    "sequential-cpu got its backward (e330fa3); 16 torch threads; not re-run "
                    "since (no GPU time). Current torch-engine times on this GPU should be "
                    "lower than these.",
    "peers-cuda": "Older measurement, kept as measured: the spikescan rows use the torch engine "
                  "as it was before its ~4x speed-up (commit 4633067); 16 torch threads; not "
                  "re-run since (no GPU time).",
}


def section_title(bench_title: str, stem: str, recs) -> str:
    r = next((x for x in recs if "torch" in x), recs[0])
    if "cuda" in stem:
        where = f"CUDA ({r.get('gpu', 'GPU')})"
    else:
        where = f"CPU ({r.get('cpu', '?')}, {threads_text(recs)} torch thread(s))"
    size = "--quick sizes" if r.get("quick") else "full sizes"
    return f"{bench_title}: {where}, {size}, {str(r.get('date', '?'))[:10]}"


# ----------------------------------------------------------------------------- sections


def section_engines(recs, title) -> str:
    timing = [r for r in recs if r.get("kind") == "timing"]
    out = [f"## {title}", "", machine_line(recs), ""]
    if timing:
        r0 = timing[0]
        out.append(f"Sizes: batch {r0['batch']}, {r0['inputs']} inputs, "
                   f"{r0['events_per_sample']:.0f} events per sample over {r0['duration_ms']:.0f} ms, "
                   f"{r0['hidden']} hidden CubaLIF, {r0['readout']} LI readouts, {r0['dtype']}. "
                   f"Median of {runs_text(timing)} timed runs after one warm-up (slow engines "
                   f"stop repeating after a time budget). `hidden-*` passes: the hidden layer "
                   f"alone (backward of the sum of its spike times); the other passes: the whole "
                   f"network with the readout loss.")
        out.append("")
        rows = [[r["engine"], r["chunk"] if r["chunk"] is not None else "-", r["mode"],
                 fmt_s(r["median_s"]), fmt_b(r.get("peak_bytes")), f"{r['hidden_rate_hz']:.1f}",
                 "ref" if r.get("count_mismatch_vs_first") is None else r["count_mismatch_vs_first"],
                 "-" if r["mode"].startswith("hidden") else r.get("readout_engine") or r["engine"]]
                for r in timing]
        out.append(table(["engine", "chunk", "pass", "time (median)", "peak memory",
                          "hidden rate (Hz)", "count mismatches vs first", "readout layer run by"],
                         rows))
    out += engines_peer_block(recs)
    ratios = [r for r in recs if r.get("kind") == "ratio"]
    if ratios:
        out += ["", "Scan / sequential speed-up (same run):", ""]
        out.append(table(["scan engine", "chunk", "sequential engine", "pass", "speed-up"],
                         [[r["scan"], r["chunk"], r["sequential"], r["mode"], f"{r['speedup']:.2f}x"]
                          for r in ratios]))
    sk = skipped_lines(recs)
    if sk:
        out += [""] + sk
    return "\n".join(out) + "\n"


def section_recurrent(recs, title) -> str:
    out = [f"## {title}", "", machine_line(recs), ""]
    t = [r for r in recs if "seconds" in r]
    if t:
        r0 = t[0]
        out.append(f"Sizes: batch {r0['batch']}, {r0['events_per_sample']} input events per sample, "
                   f"{r0['inputs']} inputs -> {r0['hidden']} recurrent {r0['neuron']}, "
                   f"t_end {r0['t_end_ms']:.0f} ms, {r0['dtype']}, {r0['hidden_spikes']} hidden "
                   f"spikes. Compiled = runtime/engines/recurrent_cpu.py (MLIR JIT forward and "
                   f"adjoint); PyTorch = runtime/engines/recurrent.py.")
        out.append("")
        rows = [[r["engine"], r.get("impl") or "-", r["mode"], fmt_s(r["seconds"]),
                 f"{r['ns_per_neuron_step']:.0f}" if r.get("ns_per_neuron_step") else "-",
                 f"{r['speedup_vs_scalar']:.2f}x" if r.get("speedup_vs_scalar") else "-",
                 f"{r['speedup_compiled']:.0f}x" if r.get("speedup_compiled") else "-"] for r in t]
        out.append(table(["engine", "loop", "pass", "time", "ns per neuron-step",
                          "vector vs scalar (same run)",
                          "compiled scalar loop vs PyTorch loop (same run)"], rows))
        out += ["", "The PyTorch-loop rows come from an earlier run than the vector rows (their "
                "ratio is against the scalar compiled loop of that run); see the dates above."]
    return "\n".join(out) + "\n"


def section_cpu_forward(recs, title) -> str:
    out = [f"## {title}", "", machine_line(recs), ""]
    t = [r for r in recs if r.get("kind") == "timing"]
    if t:
        r0 = t[0]
        out.append(f"Sizes: batch {r0['batch']}, {r0['events_per_sample']:.0f} events per sample, "
                   f"{r0['inputs']} inputs -> {r0['hidden']} CubaLIF, shared time constants, "
                   f"{r0['dtype']}. `shd-like`: the SHD-like input (real crossings); "
                   f"`pure-update`: weights x 1e-3, no spike. Old = the scalar event-outer loop, "
                   f"new = the vectorised loop (compiler/backends/mlir/shared.py); interleaved runs.")
        out.append("")
        ratio = {r["workload"]: r for r in recs if r.get("kind") == "ratio"}
        rows = [[r["workload"], r["loop"], f"{r['ns_per_neuron_event_wall']:.2f}",
                 f"{r['ms_per_batch_wall']:.0f}", r.get("spikes", "-"),
                 "yes" if r.get("bitwise_equal_old_new") else "no",
                 f"{ratio[r['workload']]['speedup_wall']:.2f}x" if r["loop"] == "new" and r["workload"] in ratio else "-"]
                for r in t]
        out.append(table(["workload", "loop", "ns per neuron-event", "ms per batch", "spikes",
                          "bitwise equal", "speed-up (same run)"], rows))
    return "\n".join(out) + "\n"


RO_OLD = ("The engine threads run batch slices of the compiled loops; the readout layer's replay "
          "(runtime/engines/observe_replay.py, torch ops) stays on one thread, which bounds the whole "
          "step's 1 -> 2 thread ratio. ")
RO_NEW = ("The engine threads run batch slices of the compiled loops, the readout layer's included "
          "(compiled readout, generated MLIR: runtime/engines/readout_cpu.py). The readout layer is also "
          "timed alone on the hidden layer's spikes, compiled and replayed (runtime/engines/"
          "observe_replay.py, torch ops on one thread, the reference the compiled one is checked "
          "against), in the same run. ")


def section_cpu_step(recs, title) -> str:
    """bench/cpu_step.py: the full training step on sequential-cpu, both adjoints, 1 and 2 engine
    threads, and the C floor, with the same-run ratios."""
    out = [f"## {title}", "", machine_line(recs), ""]
    t = [r for r in recs if r.get("kind") == "timing"]
    if not t:
        return "\n".join(out + skipped_lines(recs)) + "\n"
    r0 = t[0]
    has_ro = any("readout_impl" in r for r in t)  # records from before the compiled readout lack it
    out.append(f"Sizes: batch {r0['batch']}, {r0['events_per_sample']:.0f} events per sample, {r0['inputs']} inputs "
               f"-> {r0['hidden']} CubaLIF -> {r0.get('readout', 20)} LI readouts (max potential), "
               f"{r0['dtype']}, {r0.get('hidden_rate_hz', 0):.1f} Hz hidden rate; median wall time. Adjoints: "
               "event-outer (runtime/engines/adjoint_events.py) and per-neuron (mlir/adjoint.py). " +
               (RO_NEW if has_ro else RO_OLD) +
               "The C floor does the same exact state updates without root solves. Discrete-time peers are "
               "in the peers sections, from their own runs.")
    out.append("")
    rows = [[r["engine"] + (f" ({r['readout_neuron']})" if "readout_neuron" in r else ""),
             r.get("adjoint", "-")] + ([r.get("readout_impl", "-")] if has_ro else [])
            + [r["engine_threads"], r["stage"], fmt_s(r["ms_wall"] / 1e3)] for r in t]
    out.append(table(["engine", "adjoint"] + (["readout"] if has_ro else [])
                     + ["engine threads", "pass", "time (median)"], rows))
    ratios = [r for r in recs if r.get("kind") == "ratio"]
    if ratios:
        out += ["", "Same-run ratios:", ""]
        rows = [[r["what"], f"{r['ratio']:.2f}x",
                 fmt_g(r["max_rel_grad_difference"]) if "max_rel_grad_difference" in r else "-"] for r in ratios]
        out.append(table(["ratio", "value", "max rel. gradient difference"], rows))
    out += skipped_lines(recs)
    return "\n".join(out) + "\n"


def section_shd_network(recs, title) -> str:
    """bench/shd_network.py: models/shd.snn's whole step (recurrent hidden layer) on 1 and 2
    engine threads."""
    out = [f"## {title}", "", machine_line(recs), ""]
    t = [r for r in recs if r.get("kind") == "timing"]
    if not t:
        return "\n".join(out + skipped_lines(recs)) + "\n"
    r0 = t[0]
    out.append(f"models/shd.snn ({r0['inputs']} inputs -> {r0['hidden']} recurrent CubaLIF -> {r0['readout']} LI, "
               f"max potential, cross-entropy) through SpikingNetwork, engine {r0['engine']}; batch {r0['batch']}, "
               f"{r0['events_per_sample']:.0f} events per sample over {r0['duration_ms']:g} ms, {r0['dtype']}; "
               "input and readout weights as bench/cpu_step.py, recurrent weights the model's init; "
               f"hidden rate {r0['hidden_rate_hz']:.1f} Hz ({r0['hidden_spikes_per_sample']:.0f} spikes per "
               "sample); median wall time.")
    out.append("")
    rows = [[r["engine_threads"], r["stage"], fmt_s(r["ms_wall"] / 1e3)] for r in t]
    out.append(table(["engine threads", "pass", "time (median)"], rows))
    ratios = [r for r in recs if r.get("kind") == "ratio"]
    if ratios:
        out += ["", table(["ratio", "value"], [[r["what"], f"{r['ratio']:.2f}x"] for r in ratios])]
    out += skipped_lines(recs)
    return "\n".join(out) + "\n"


def section_torch_memory(recs, title) -> str:
    out = [f"## {title}", "", machine_line(recs), "",
           "The torch engine's backward with per-chunk recompute (`checkpoint=True`) against "
           "keeping every chunk's autograd graph: memory saved for the backward (the reliable "
           "figure), peak extra resident memory of forward+backward, and the time ratio.", ""]
    rows = [[r.get("case", "-"), f"{r['batch']} x {r['neurons']}", r["events"], r["chunk"],
             f"{r['saved_mb_ckpt']:.1f} / {r['saved_mb_nockpt']:.1f}",
             f"{r['peak_mb_ckpt']:.0f} / {r['peak_mb_nockpt']:.0f}", f"{r['time_ratio']:.2f}"]
            for r in recs if "saved_mb_ckpt" in r]
    out.append(table(["case", "batch x neurons", "events", "chunk", "saved MB (ckpt / none)",
                      "peak MB (ckpt / none)", "fwd+bwd time ckpt / none"], rows))
    return "\n".join(out) + "\n"


def runs_text(timing) -> str:
    runs = sorted({r.get("runs", 1) for r in timing})
    return str(runs[0]) if len(runs) == 1 else f"{runs[0]}-{runs[-1]}"


PEER_PASSES = ("hidden-forward", "forward", "forward+backward")


def _discrete_rows(timing) -> list[list]:
    """One row per framework label (bench/peer_compare.py records): times of each pass."""
    by = defaultdict(dict)
    for r in timing:
        by[r.get("label") or r["framework"]][r["mode"]] = r
    rows = []
    for label, modes in by.items():
        any_ = next(iter(modes.values()))
        method = "exact" if any_.get("exact") else f"dt = {any_.get('dt_ms', '?')} ms"
        if any_.get("framework") == "C floor":
            method = "exact updates, no root solves"
        fb = modes.get("forward+backward")
        threads = any_.get("peer_torch_threads", any_.get("torch_threads", "?"))
        if any_.get("engine_threads"):
            threads = f"{threads} torch / {any_['engine_threads']} engine"
        rows.append([label, any_.get("version", ""), method]
                    + [fmt_s(modes[m]["median_s"]) if m in modes else "-" for m in PEER_PASSES]
                    + [fmt_b(fb and fb.get("peak_bytes")), f"{any_.get('hidden_rate_hz') or 0:.1f}", threads])
    return rows


DISCRETE_HEADERS = ["framework", "version", "method", "hidden layer forward", "forward",
                    "forward+backward (train step)", "peak memory (train step)", "hidden rate (Hz)",
                    "threads"]


def _ratio_rows(spikescan_timing) -> tuple[list[str], list[list]]:
    """spikescan / peer time per (spikescan run, pass): headers and rows."""
    peers = []
    for r in spikescan_timing:
        for k in r.get("spikescan_over_peer", {}):
            if k not in peers:
                peers.append(k)
    rows = []
    for r in spikescan_timing:
        ratios = r.get("spikescan_over_peer", {})
        if ratios:
            rows.append([r["label"], r["mode"]] + [f"{ratios[k]:.2f}" if k in ratios else "-" for k in peers])
    return ["spikescan", "pass"] + peers, rows


def _peer_workload_text(r0, timing) -> str:
    peer = next((r for r in timing if r.get("peer_torch")), {})
    return (f"Sizes: batch {r0['batch']}, {r0['inputs']} Poisson inputs, {r0['events_per_sample']:.0f} "
            f"events per sample over {r0['duration_ms']:.0f} ms, {r0['hidden']} hidden current-based "
            f"LIF (tau_m {r0.get('tau_m_ms', 20):g} ms, tau_s {r0.get('tau_s_ms', 5):g} ms), "
            f"{r0['readout']} LI readouts, cross-entropy of the max potential; one batch, the same "
            f"for every framework. The discrete-time frameworks run at dt = 1 ms, each in its own "
            f"subprocess (bench/peer_runner.py"
            + (f"; Python {peer.get('peer_python_version')}, torch {peer.get('peer_torch')}" if peer else "")
            + "), with their own modules, discretisation and default surrogate gradient "
            "(bench/peer_models.py); f32 is how they normally run. Hidden rates differ with the "
            "discretisation (exact-decay loops put each input's whole jump into its bin and fire "
            "more); a time-stepped step costs the same at any rate. The C floor times the hidden "
            "layer only. Median of " + runs_text(timing) + " timed runs after one warm-up.")


# Read with the CPU tables: on the 2-core VM of the 2026-12-08 runs the PyTorch peers' backward was
# ~10x slower than DESIGN.md's earlier snnTorch figure for this workload (540-640 ms).
def peer_cpu_caveat(timing) -> str:
    """The caveat under the CPU peers tables, with this run's spikescan f64 forward+backward."""
    own = [r for r in timing if r.get("label") == "spikescan:sequential-cpu:f64" and r.get("mode") == "forward+backward"]
    against = ""
    if own:
        ms = own[0]["median_s"] * 1e3
        against = (f"; against the earlier 540-640 ms, spikescan's f64 forward+backward ({ms:.0f} ms) is "
                   f"{540 / ms:.1f}-{640 / ms:.1f}x faster")
    return ("Caveat on the CPU ratios: on the 2-core VM of the 2026-12-08 runs, every PyTorch-based dt = 1 ms "
            "backward pass took 3.4-5 s in f32 (a minimal hand-written loop outside this harness took the "
            "same), 6-10x the 540-640 ms measured for snnTorch on this workload on an earlier machine of "
            "this kind, and the f64 peers spent most of their time in the kernel (page faults). The ratios "
            f"are true of this machine{against}.")


def section_peers(recs, title) -> str:
    timing = [r for r in recs if r.get("kind") == "timing"]
    if not any("spikescan_over_peer" in r for r in timing):
        return _section_peers_legacy(recs, title)
    out = [f"## {title}", "", machine_line(recs), "", _peer_workload_text(timing[0], timing), "",
           table(DISCRETE_HEADERS, _discrete_rows(timing))]
    headers, rows = _ratio_rows([r for r in timing if r["label"].startswith("spikescan")])
    if rows:
        out += ["", "spikescan time / peer time, same pass, same run (< 1: spikescan is faster):", "",
                table(headers, rows)]
    if str(timing[0].get("device", "cpu")) == "cpu":
        out += ["", peer_cpu_caveat(timing)]
    sk = skipped_lines(recs)
    if sk:
        out += [""] + sk
    return "\n".join(out) + "\n"


def engines_peer_block(recs) -> list[str]:
    """bench/engines.py's same-run discrete-time frameworks and C floor, and the engines' ratios."""
    peer = [r for r in recs if r.get("kind") == "peer_timing"]
    if not peer:
        return []
    out = ["", "Discrete-time frameworks at dt = 1 ms and the C floor, same run, same batch "
           "(bench/peer_compare.py; details in the peers section):", "",
           table(DISCRETE_HEADERS, _discrete_rows(peer))]
    headers, rows = _ratio_rows([r for r in recs if r.get("kind") == "timing" and r.get("label")])
    if rows:
        out += ["", "Engine time / peer time, same pass, same run (< 1: the engine is faster):", "",
                table(headers, rows)]
    return out


def _section_peers_legacy(recs, title) -> str:
    """Records of bench/peers.py before it carried `spikescan_over_peer` (ratio = peer / spikescan)."""
    timing = [r for r in recs if r.get("kind") == "timing"]
    out = [f"## {title}", "", machine_line(recs), ""]
    if timing:
        r0 = timing[0]
        out.append(f"Sizes: batch {r0['batch']}, {r0['inputs']} inputs, "
                   f"{r0['events_per_sample']:.0f} events per sample over {r0['duration_ms']:.0f} ms, "
                   f"{r0['hidden']} hidden current-based LIF (tau_m {r0['tau_m_ms']:g} ms, tau_s "
                   f"{r0['tau_s_ms']:g} ms), {r0['readout']} LI readouts; peers at dt = 1 ms.")
        out.append("")
        by = defaultdict(dict)
        for r in timing:
            by[r["framework"]][r["mode"]] = r
        rows = []
        for fw, modes in by.items():
            f, fb = modes.get("forward"), modes.get("forward+backward")
            any_ = f or fb
            rows.append([fw, any_.get("version", ""), any_.get("dtype", ""),
                         "exact" if any_.get("exact") else f"dt = {any_.get('dt_ms', '?')} ms",
                         fmt_s(f and f["median_s"]), fmt_s(fb and fb["median_s"]),
                         fmt_b(fb and fb.get("peak_bytes")), f"{any_.get('hidden_rate_hz', 0):.1f}",
                         any_.get("readout_engine") or any_.get("engine") or "-"])
        out.append(table(["framework", "version", "dtype", "time", "forward",
                          "forward+backward (train step)", "peak memory (train step)",
                          "hidden rate (Hz)", "spikescan readout run by"], rows))
        out += ["", f"Median of {runs_text(timing)} timed runs after one warm-up."]
    ratios = [r for r in recs if r.get("kind") == "ratio"]
    if ratios:
        out += ["", "Time ratio peer / spikescan, same run (> 1: spikescan faster, < 1: the peer "
                "is faster):", ""]
        ss = sorted({r["spikescan"] for r in ratios})
        rows = []
        for mode in ("forward", "forward+backward"):
            val = {(r["framework"], r["spikescan"]): r["ratio"] for r in ratios if r["mode"] == mode}
            for peer in sorted({k[0] for k in val}):
                rows.append([peer, mode] + [f"{val[(peer, x)]:.2f}" if (peer, x) in val else "-"
                                            for x in ss])
        out.append(table(["peer", "pass"] + ss, rows))
    sk = skipped_lines(recs)
    if sk:
        out += [""] + sk
    return "\n".join(out) + "\n"


def section_precision(recs, title, img_dir: Path, rel: str, suffix: str = "") -> str:
    out = [f"## {title}", "", machine_line(recs), ""]
    st = [r for r in recs if r.get("kind") == "spike_time_error"]
    if st:
        r0 = st[0]
        out.append(f"Sizes per model: {r0['batch']} samples x {r0['neurons']} neurons, "
                   f"{r0['events']} random input events on {r0['channels']} channels over "
                   f"{r0['T_ms']:g} ms; reference: tests/mpref.py at 50 digits. Errors over spike "
                   f"trains with the reference's spike count.")
        out.append("")
        rows = []
        for r in st:
            method = r["engine"] + (f" dt={r['dt_ms']:g} ms" if "dt_ms" in r else "")
            rows.append([r["model"], method, r["dtype"], r["ref_spikes"],
                         f"{r['count_mismatch']}/{r['trains']}",
                         fmt_g(r.get("max_abs_err_ms")), fmt_g(r.get("median_abs_err_ms")),
                         fmt_g(r.get("max_err_ulp")), fmt_g(r.get("first_spike_max_err_ms"))])
        out.append(table(["model", "method", "dtype", "ref spikes", "wrong spike count",
                          "max err (ms)", "median err (ms)", "max err (ulp)",
                          "first-spike max err (ms)"], rows))
        png = plot_precision(st, img_dir, suffix)
        if png:
            out += ["", f"![spike-time error]({rel}/{png.name})"]
    gr = [r for r in recs if r.get("kind") == "gradient_error"]
    if gr:
        out += ["", "Gradients of the sum of output spike times (float64), relative to the "
                "largest reference entry. References: float64 central differences of the engine "
                "itself (h = 1e-6), and on a few entries central differences of the 30-digit mpmath "
                "simulation (h = 1e-10), which is the true gradient to ~1e-19:", ""]
        rows = [[r["model"], r["engine"], r["wrt"],
                 f'{r["autograd_vs_f64_fd"].get("n", "-")} / {r["autograd_vs_mp"].get("n", "-")}',
                 fmt_g(r["autograd_vs_f64_fd"].get("max_rel_err")),
                 fmt_g(r["autograd_vs_mp"].get("max_rel_err")),
                 fmt_g(r["f64_fd_vs_mp"].get("max_rel_err"))] for r in gr]
        out.append(table(["model", "engine", "w.r.t.", "entries (f64 FD / mpmath)",
                          "autograd vs f64 FD (h=1e-6)", "autograd vs mpmath FD",
                          "f64 FD vs mpmath FD"], rows))
    sk = skipped_lines(recs)
    if sk:
        out += [""] + sk
    return "\n".join(out) + "\n"


def section_scaling(recs, title, img_dir: Path, rel: str, suffix: str) -> str:
    out = [f"## {title}", "", machine_line(recs), ""]
    fits = [r for r in recs if r.get("kind") == "fit"]
    if fits:
        b = fits[0]["base"]
        out.append(f"One CubaLIF layer, base point: batch {b['batch']}, {b['neurons']} neurons, "
                   f"700 inputs at {b['rate']:g} Hz over {b['duration']:g} ms, chunk {b['chunk']}; "
                   f"one size varied at a time. Fitted exponent p of time ~ size^p:")
        out.append("")
        out.append(table(["engine", "sweep", "pass", "points", "time exponent", "memory exponent"],
                         [[r["engine"], r["x_name"], r["mode"], r["points"],
                           fmt_g(r["time_exponent"]), fmt_g(r["memory_exponent"])] for r in fits]))
    pts = [r for r in recs if r.get("kind") == "point"]
    if pts:
        png = plot_scaling(pts, img_dir, suffix)
        if png:
            out += ["", f"![scaling]({rel}/{png.name})"]
    sk = skipped_lines(recs)
    if sk:
        out += [""] + sk
    return "\n".join(out) + "\n"


# ----------------------------------------------------------------------------- plots


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_precision(st, img_dir: Path, suffix: str = ""):
    rows = [r for r in st if r.get("max_abs_err_ms") is not None]
    if not rows:
        return None
    plt = _plt()
    models = sorted({r["model"] for r in rows})
    methods = []
    for r in rows:
        m = r["engine"] + (f" dt={r['dt_ms']:g}" if "dt_ms" in r else f" {r['dtype']}")
        if m not in methods:
            methods.append(m)
    fig, ax = plt.subplots(figsize=(max(6, 0.55 * len(methods) + 2), 4))
    width = 0.8 / max(len(models), 1)
    for i, model in enumerate(models):
        ys = []
        for m in methods:
            v = next((r["max_abs_err_ms"] for r in rows if r["model"] == model and
                      (r["engine"] + (f" dt={r['dt_ms']:g}" if "dt_ms" in r else f" {r['dtype']}")) == m),
                     None)
            ys.append(max(v, 1e-18) if v is not None else float("nan"))
        ax.bar([k + i * width for k in range(len(methods))], ys, width, label=model)
    ax.set_yscale("log")
    ax.set_xticks([k + 0.4 - width / 2 for k in range(len(methods))])
    ax.set_xticklabels(methods, rotation=60, ha="right", fontsize=8)
    ax.set_ylabel("max |spike time error| (ms), equal-count trains")
    ax.set_title("Spike-time error vs 50-digit reference")
    ax.legend(fontsize=8)
    fig.tight_layout()
    img_dir.mkdir(parents=True, exist_ok=True)
    path = img_dir / f"precision{suffix}.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_scaling(pts, img_dir: Path, suffix: str):
    plt = _plt()
    sweeps = [s for s in ("rate", "neurons", "batch", "chunk") if any(p["sweep"] == s for p in pts)]
    fig, axes = plt.subplots(1, len(sweeps), figsize=(4 * len(sweeps), 3.6), squeeze=False)
    # one colour per engine in every panel (a panel may lack engines, e.g. chunk: scans only)
    engines = sorted({p["engine"] for p in pts})
    colour = {e: f"C{i}" for i, e in enumerate(engines)}
    from matplotlib.ticker import NullFormatter

    for ax, sw in zip(axes[0], sweeps):
        series = defaultdict(list)
        for p in pts:
            if p["sweep"] == sw:
                series[(p["engine"], p["mode"])].append((p["x"], p["median_s"]))
        for (eng, mode), xy in sorted(series.items()):
            xy.sort()
            ax.loglog([a for a, _ in xy], [b for _, b in xy], "o-" if mode == "forward" else "s--",
                      color=colour[eng], label=f"{eng} ({'fwd' if mode == 'forward' else 'fwd+bwd'})",
                      ms=4)
        ax.set_xlabel("events per sample" if sw == "rate" else sw)
        ax.set_ylabel("time (s)")
        ax.xaxis.set_minor_formatter(NullFormatter())  # minor labels overlap on short ranges
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    img_dir.mkdir(parents=True, exist_ok=True)
    path = img_dir / f"scaling{suffix}.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


# ----------------------------------------------------------------------------- main


def section_summary(groups: dict[str, list[dict]]) -> str:
    """Per engine and measurement set (file): forward and forward+backward of the whole network
    at the chunk with the fastest forward+backward, so new CPU and older CUDA runs sit side by
    side. Sizes and conditions differ between sets: each row names its own."""
    rows = []
    for stem in sections_for(groups, "engines"):
        recs = groups[stem]
        timing = [r for r in recs if r.get("kind") == "timing"]
        if not timing:
            continue
        r0 = timing[0]
        where = (f"CUDA {r0.get('gpu', '')}" if "cuda" in stem else
                 f"CPU, {threads_text(recs)} thread(s), {load_text(recs)}")
        cond = (f"{where}; {date_range(recs)[:16]}; batch {r0['batch']}, {r0['hidden']} hidden, "
                f"{r0['events_per_sample']:.0f} events/sample, {r0['dtype']}"
                + ("; --quick" if r0.get("quick") else "") + ("; older code" if stem in STALE_NOTES else ""))
        by = defaultdict(dict)  # engine -> chunk -> mode -> s
        for r in timing:
            by[r["engine"]].setdefault(r["chunk"], {})[r["mode"]] = r["median_s"]
        for eng, chunks in by.items():
            def key(c):
                m = chunks[c]
                return m.get("forward+backward", m.get("forward", math.inf))
            c = min(chunks, key=key)
            m = chunks[c]
            rows.append([cond, eng, "-" if c is None else c, fmt_s(m.get("hidden-forward")),
                         fmt_s(m.get("hidden-forward+backward")), fmt_s(m.get("forward")),
                         fmt_s(m.get("forward+backward"))])
    if not rows:
        return ""
    return "\n".join(["## Summary: engines, new CPU runs next to older CUDA runs", "",
                      "Whole network (700 -> hidden CubaLIF -> 20 LI readouts) per engine, at the "
                      "chunk size with the fastest forward+backward; `-` = not measured in that "
                      "set. Rows of different sets differ in machine, sizes and code version (see "
                      "the first column and the sections below): compare within a set.", "",
                      table(["measurement set", "engine", "chunk", "hidden fwd", "hidden fwd+bwd",
                             "network fwd", "network fwd+bwd"], rows), ""])


def render(groups: dict[str, list[dict]], out_md: Path) -> str:
    img_dir = out_md.parent / "img"
    rel = "img"
    parts = ["# Benchmarks", "",
             "Generated by `python bench/report.py` from the JSON lines in `bench/results/` "
             "(one object per measurement; rerun the scripts to refresh). Each section comes from "
             "one process run; its first line names the machine, versions and date. Timings on a "
             "shared machine are noisy: compare rows of one table, not across tables.", "",
             "Reproduce: `python bench/engines.py`, `python bench/precision.py`, "
             "`python bench/scaling.py`, `python bench/peers.py`, `python bench/recurrent.py`, "
             "`python bench/torch_memory.py`, `python bench/cpu_forward.py`, `python bench/cpu_step.py`, `python bench/shd_network.py` "
             "(`--device cuda` on a GPU), then `python bench/report.py`. bench/engines.py and "
             "bench/peers.py default to the full SHD-like workload and run snnTorch, Norse, "
             "SpikingJelly and a PyTorch loop at dt = 1 ms and the C floor in the same run. The peers "
             "pin other torch/triton versions than spikescan, so they live in their own venv and run "
             "in subprocesses of its Python (`--peer-python` or `SPIKESCAN_PEER_PYTHON`): "
             "`python3 -m venv /work/peers-venv && /work/peers-venv/bin/pip install torch==2.13.0 "
             "numpy loguru packaging h5py && /work/peers-venv/bin/pip install --no-deps snntorch norse "
             "spikingjelly nir nirtorch`; a peer that is missing is recorded as skipped, with the reason.", "",
             "`--quick` runs (tiny inputs: tens of neurons, ~100 ms) are smoke tests for CI: their "
             "times are per-call overhead and say nothing about real sizes, so `python "
             "bench/report.py` leaves their files out (the precision runs excepted: spike-time errors "
             "do not depend on the size the way times do).", "",
             "CPU runs use `torch.set_num_threads(--threads)`, 1 by default (the engines issue "
             "many small ops; on 2 cores 2 threads made them ~10x slower); every record carries "
             "its thread count (`torch_threads`) and the machine's load average (`loadavg`), and "
             "each section's first line gives both. The CUDA sections are older runs on an H100 "
             "and are labelled as such.", ""]
    summary = section_summary(groups)
    if summary:
        parts.append(summary)
    titles = {"engines": "Engines on the SHD-like workload",
              "peers": "spikescan vs discrete-time frameworks", "precision": "Precision",
              "scaling": "Scaling", "recurrent": "Recurrent layers (SHD-like)",
              "torch_memory": "Memory of the torch engine's backward",
              "cpu_forward": "Compiled CPU forward, vectorised vs scalar",
              "cpu_step": "The exact training step at full size on the CPU (bench/cpu_step.py)",
              "shd_network": "models/shd.snn, recurrent, whole training step (bench/shd_network.py)"}
    for bench in ("cpu_step", "shd_network", "engines", "peers", "precision", "scaling", "recurrent", "torch_memory",
                  "cpu_forward"):
        for stem in sections_for(groups, bench):
            recs = groups[stem]
            tag = stem[len(bench):].replace("-quick", "").strip("-")
            title = section_title(titles[bench], stem, recs)
            if bench == "engines":
                text = section_engines(recs, title)
            elif bench == "peers":
                text = section_peers(recs, title)
            elif bench == "recurrent":
                text = section_recurrent(recs, title)
            elif bench == "cpu_forward":
                text = section_cpu_forward(recs, title)
            elif bench == "cpu_step":
                text = section_cpu_step(recs, title)
            elif bench == "shd_network":
                text = section_shd_network(recs, title)
            elif bench == "torch_memory":
                text = section_torch_memory(recs, title)
            elif bench == "precision":
                text = section_precision(recs, title, img_dir, rel, f"-{tag}" if tag else "")
            else:
                text = section_scaling(recs, title, img_dir, rel, f"-{tag}" if tag else "")
            if stem in STALE_NOTES:  # right under the title line
                head, rest = text.split("\n", 1)
                text = f"{head}\n\n**{STALE_NOTES[stem]}**\n{rest}"
            parts.append(text)
    text = "\n".join(parts)
    out_md.parent.mkdir(parents=True, exist_ok=True)
    out_md.write_text(text)
    return text


# --quick runs time per-call overhead at toy sizes: their figures are never shown as results.
# Precision errors do not depend on the size the way times do, so precision-quick stays.
QUICK_SHOWN = {"precision"}


def default_files() -> list[str]:
    """bench/results/*.jsonl without the --quick timing runs (pass such a file explicitly to
    render it, e.g. to check a smoke run)."""
    out = []
    for f in sorted(RESULTS.glob("*.jsonl")):
        bench = f.stem.split("-")[0]
        if "-quick" in f.stem and bench not in QUICK_SHOWN:
            print(f"left out {f.name}: --quick timings are a smoke test, not a result", file=sys.stderr)
            continue
        out.append(str(f))
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("files", nargs="*")
    p.add_argument("--out", default=str(REPO / "docs" / "benchmarks.md"))
    args = p.parse_args(argv)
    files = args.files or default_files()
    if not files:
        print("no result files; run the bench scripts first", file=sys.stderr)
        return 1
    render(load(files), Path(args.out))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
