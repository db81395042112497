"""Data-dependent weight init: `init = auto(rate = 10 Hz)`, the default of `dense` (and
`conv2d`) connections that give no init.

A new user's first wall was a silent network (TrainingStalled) and several edits of init values
before anything trained. `auto_init` removes it: on one batch (the first training batch,
runtime/train_auto.py), layer by layer in topological order and without gradients, the weights
of a layer's auto connections are multiplied by one scalar s > 0 chosen so that the layer's
neurons fire at the target mean rate

    rate(s) = (spikes of the layer on the batch) / (samples x neurons x t_end)

Each layer is scaled with the earlier layers already at their final scale, so its input is the
one training will see. Weights start from the draw normal(1/sqrt(fan_in), 1/sqrt(fan_in)) (the
network's seed; runtime/network.init_weight), so only the scale is data-dependent, and the
result is deterministic: the same batch, seed and engine give the same scales, bit for bit.
The mean equals the standard deviation because a zero-mean draw scaled to the same mean rate
fires very unevenly: on an N-MNIST batch (models/nmnist.snn at 10 Hz) 29% of the (sample,
output neuron) pairs were silent and one of the 10 output neurons fired half of the spikes, so
first-spike training started without gradient for many labels; with mean = std none was silent
and the top 10% of neurons fired 11-12% of the spikes. Calling auto_init again rescales from the
current weights, so a second call finds a factor near 1.

Search (a few forwards of that one layer on its cached input events):
1. bracket: from s = 1, multiply or divide s by BRACKET_STEP until the rate crosses the target
   (|log s| at most MAX_BRACKET steps);
2. refine: false position on (log s, log rate) inside the bracket, each step kept at least 10% of
   the bracket's width inside it (so the bracket shrinks geometrically), until the rate is within
   `tol` (relative) of the target or `max_forwards` forwards were spent. The scale kept is the one
   whose rate came closest.
Forwards run with a spike cap of at least twice the target count per neuron (a neuron that hits
it counts as firing at the cap, which is above the target anyway, so the bracket stays right).
Afterwards the network's own spike cap (`max_spikes`, the size of the engines' spike buffers)
is raised, if needed, to 4x the largest target count rounded up to a power of two
(`spike_cap_for`), so that training does not re-run most samples with a doubled cap
(runtime/spike_cap.py); the record keeps it as `spike_cap`, and a resumed run restores it.

Non-spiking layers (no threshold, e.g. LI readouts of `max_potential` / `li_integral`) keep their
unscaled draw: they have no rate to match, their readout is a continuous value whose gradient
never vanishes (they cannot stall training), and the loss's `value_scale` sets the scale of their
logits. Layers of a recurrent group of several layers (feedback between layers) run only jointly
and keep their unscaled draw too (recorded as skipped). A layer whose target cannot be reached
(no input event reaches it, or a non-auto connection alone already drives it above the target)
keeps the closest scale found, and its record says `converged: false`.

A layer class takes part through `auto_rate` (target rate in 1/ms, None for no auto connection)
and `auto_weights()` (the tensors to scale), as runtime/network._Layer does. For a layer class
without them the target comes from the NetworkIR (its first auto connection) and the tensor
scaled is its `kernel` (conv2d layers, runtime/conv.py); anything else is a NotImplementedError.
"""

from __future__ import annotations

import math
from typing import Callable, Optional

import torch
from torch import Tensor

BRACKET_STEP = 4.0  # s is multiplied or divided by this while bracketing
MAX_BRACKET = 16  # at most 16 bracketing steps each way: s in [4^-16, 4^16]
TOL = 0.1  # relative tolerance on the rate
MAX_FORWARDS = 24  # forwards per layer, bracketing included
MAX_SEARCH_CAP = 4096  # spikes per neuron and sample during the search (auto rates are <= 1 kHz)
CAP_FACTOR = 4.0  # the network's spike cap after auto init: >= 4x the largest target count


def target_rate(net, name: str, lay) -> Optional[float]:
    """The layer's target rate in 1/ms, None when it has no auto connection."""
    if hasattr(lay, "auto_rate"):
        return lay.auto_rate
    ir = next((l for l in net.ir.layers if l.name == name), None)
    return next((float(c.init.a) for c in (ir.connections if ir else ()) if c.init.kind == "auto"), None)


def _weights(name: str, lay) -> list:
    if hasattr(lay, "auto_weights"):
        return lay.auto_weights()
    kernel = getattr(lay, "kernel", None)
    if isinstance(kernel, torch.nn.Parameter):
        return [kernel]
    raise NotImplementedError(f"layer {name!r} ({type(lay).__name__}): `init = auto(...)` does not know which "
                              "weights to scale; give the connection an explicit init")


def _rate_hz(res, t_end: float) -> float:
    c = res.counts
    return float(c.double().mean()) * 1000.0 / t_end if c.numel() else 0.0


def _close(rate: float, target: float, tol: float) -> bool:
    return abs(rate - target) <= tol * target


def _next_log_scale(lo, hi) -> float:
    """False position in (log s, log rate) between lo = (x, r < target) and hi = (x, r > target)
    (linear in the rate while lo's rate is 0), kept 10% of the width away from either end."""
    (x0, r0, target), (x1, r1, _) = lo, hi
    if r0 > 0:
        f = (math.log(target) - math.log(r0)) / (math.log(r1) - math.log(r0))
    else:
        f = (target - r0) / (r1 - r0)
    f = min(max(f, 0.1), 0.9)
    return x0 + f * (x1 - x0)


def _search(run: Callable[[float], tuple[float, object]], target: float, tol: float, max_forwards: int):
    """(scale, rate, result, forwards, converged): the scale whose rate on `run` is closest to target
    (only that forward's result is kept, not every one's spike buffers)."""
    seen: dict[float, float] = {}
    kept: dict = {}

    def rate_at(x: float) -> float:
        if x not in seen:
            rate, res = run(math.exp(x))
            seen[x] = rate
            if not kept or (abs(rate - target), x) < (abs(kept["rate"] - target), kept["x"]):
                kept.update(x=x, rate=rate, res=res)
        return seen[x]

    step = math.log(BRACKET_STEP)
    x = 0.0
    r = rate_at(x)
    lo = hi = None
    if _close(r, target, tol):
        pass
    elif r < target:
        lo = (x, r)
        for _ in range(MAX_BRACKET):
            if len(seen) >= max_forwards:
                break
            x += step
            r = rate_at(x)
            if r >= target:
                hi = (x, r)
                break
            lo = (x, r)
    else:
        hi = (x, r)
        for _ in range(MAX_BRACKET):
            if len(seen) >= max_forwards:
                break
            x -= step
            r = rate_at(x)
            if r <= target:
                lo = (x, r)
                break
            hi = (x, r)
    if lo is not None and hi is not None:
        for _ in range(max_forwards):  # bounded even if the bracket stops shrinking in floating point
            if _close(kept["rate"], target, tol) or len(seen) >= max_forwards:
                break
            x = _next_log_scale((*lo, target), (*hi, target))
            r = rate_at(x)
            if r < target:
                lo = (x, r)
            else:
                hi = (x, r)
    return math.exp(kept["x"]), kept["rate"], kept["res"], len(seen), _close(kept["rate"], target, tol)


@torch.no_grad()
def auto_init(net, times: Tensor, channels: Tensor, t_end: float, *, tol: float = TOL,
              max_forwards: int = MAX_FORWARDS, log: Optional[Callable[[str], None]] = None) -> dict:
    """Scale the auto connections of `net` (a SpikingNetwork) on the batch (times [B, n] ms, +inf
    padded; channels [B, n]) so each spiking layer with such connections fires at its target
    rate over [0, t_end]. Returns {"batch": B, "t_end": t_end, "layers": [per-layer records]}:
    layer, target_hz, then scale, rate_hz, forwards, converged (or skipped: why); and spike_cap,
    the network's spike cap afterwards (raised for high target rates, see spike_cap_for)."""
    if not (isinstance(t_end, (int, float)) and math.isfinite(t_end) and t_end > 0):
        raise ValueError(f"auto_init needs the trial length t_end > 0 (ms), got {t_end!r}")
    if not (tol > 0 and int(max_forwards) >= 1):
        raise ValueError(f"auto_init: tol must be > 0 and max_forwards >= 1, got {tol!r}, {max_forwards!r}")
    like = net.float_like()
    times = times.to(device=like.device, dtype=like.dtype)
    channels = channels.to(like.device).long()
    names = net.run_order() if hasattr(net, "run_order") else list(net.layers)
    todo = [k for k, n in enumerate(names) if target_rate(net, n, net.layers[n]) is not None]
    record = {"batch": int(times.shape[0]), "t_end": float(t_end), "layers": []}
    if not todo:
        record["spike_cap"] = int(net.max_spikes)
        return record
    engine = net._engine()
    old = (net.max_spikes, net.on_overflow)
    outputs: dict[str, tuple[Tensor, Tensor]] = {}
    try:
        net.on_overflow = "flag"
        groups: dict = {}
        for k, name in enumerate(names[: todo[-1] + 1]):
            lay = net.layers[name]
            spiking = net.neurons[lay.neuron].c is not None
            target = target_rate(net, name, lay)
            group = _group(net, name)
            if group is not None:  # several layers in one recurrent loop: run jointly, not scaled
                if target is not None:
                    record["layers"].append({"layer": name, "target_hz": target * 1000.0, "skipped":
                                             "in a recurrent group of several layers: keeps the unscaled init"})
                if group not in groups:
                    from spikescan.runtime import recurrent_net

                    net.max_spikes = old[0]
                    groups[group] = recurrent_net.run_group(net, group, outputs, times, channels, t_end=t_end,
                                                            observe={n: None for n in group})
                res = groups[group][name][0]
                if spiking:
                    outputs[name] = _flatten(res)
                continue
            t_in, c_in = net.layer_input(lay, times, channels, outputs)
            res = None
            if target is not None and not spiking:
                record["layers"].append({"layer": name, "target_hz": target * 1000.0,
                                         "skipped": "no threshold: keeps the unscaled init"})
            elif target is not None:
                res = _scale_layer(net, lay, name, t_in, c_in, engine, target, t_end, tol, int(max_forwards),
                                   record)
                if log is not None:
                    log(_line(record["layers"][-1]))
            if spiking and k < todo[-1]:  # later auto layers need this layer's spikes
                if res is None:
                    net.max_spikes = old[0]
                    res = net.run_layer(lay, t_in, c_in, engine=engine, t_end=t_end)
                outputs[name] = _flatten(res)
    finally:
        net.max_spikes, net.on_overflow = old
    counts = [r["target_hz"] * t_end / 1000.0 for r in record["layers"] if "scale" in r]
    net.max_spikes = max(int(net.max_spikes), spike_cap_for(max(counts, default=0.0)))
    record["spike_cap"] = int(net.max_spikes)
    return record


def spike_cap_for(count: float) -> int:
    """The network spike cap for layers firing `count` spikes per neuron and sample on average:
    CAP_FACTOR times that, rounded up to a power of two (at most MAX_SEARCH_CAP). Below it, the
    engines' buffers stay small; a sample over it is re-run whole with the cap doubled
    (runtime/spike_cap.py), which doubled the step time of models/nmnist.snn when its output
    layer's mean count sat at the default cap of 64."""
    need = max(1, math.ceil(CAP_FACTOR * count))
    return int(min(2 ** math.ceil(math.log2(need)), MAX_SEARCH_CAP))


def _group(net, name: str) -> Optional[tuple]:
    """The recurrent group of several layers that `name` runs in (runtime/recurrent_net.py), if any."""
    plan = getattr(net, "rec_plan", None)
    group = plan.group_of.get(name) if plan is not None else None
    return group if group is not None and len(group) > 1 else None


def _flatten(res):
    from spikescan.runtime.network import flatten_spikes

    return flatten_spikes(res.times, res.counts)


def _scale_layer(net, lay, name, t_in, c_in, engine, target, t_end, tol, max_forwards, record):
    weights = _weights(name, lay)
    base = [w.detach().clone() for w in weights]
    count = target * t_end  # target spikes per neuron and sample
    cap = int(min(max(net.max_spikes, math.ceil(2.0 * count) + 1), MAX_SEARCH_CAP))

    def run(s: float):
        for w, b in zip(weights, base):
            w.copy_(b * s)
        net.max_spikes = cap
        res = net.run_layer(lay, t_in, c_in, engine=engine, t_end=t_end)
        return _rate_hz(res, t_end) / 1000.0, res

    s, rate, res, forwards, ok = _search(run, target, tol, max_forwards)
    for w, b in zip(weights, base):
        w.copy_(b * s)
    record["layers"].append({"layer": name, "target_hz": target * 1000.0, "scale": s, "rate_hz": rate * 1000.0,
                             "forwards": forwards, "converged": ok})
    return res


def _line(r: dict) -> str:
    if "skipped" in r:
        return f"auto init: {r['layer']} keeps its unscaled init ({r['skipped'].split(':')[0]})"
    note = "" if r["converged"] else " (not reached: closest found)"
    return (f"auto init: {r['layer']} weights x{r['scale']:.4g} -> {r['rate_hz']:.3g} Hz (target "
            f"{r['target_hz']:g} Hz, {r['forwards']} forwards){note}")


def summary(record: dict) -> str:
    """One line for the progress output: every layer's scale and rate."""
    parts = []
    for r in record.get("layers", []):
        if "skipped" in r:
            parts.append(f"{r['layer']} unscaled ({r['skipped'].split(':')[0]})")
        else:
            parts.append(f"{r['layer']} x{r['scale']:.4g} -> {r['rate_hz']:.3g} Hz"
                         + ("" if r["converged"] else " (target not reached)"))
    cap = record.get("spike_cap")
    tail = f"; spike cap {cap} per neuron" if isinstance(cap, int) and cap > 64 else ""
    return (f"auto init on the first batch ({record.get('batch')} samples, t_end {record.get('t_end'):g} ms): "
            + "; ".join(parts) + tail)
