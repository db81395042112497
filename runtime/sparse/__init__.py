"""Sparse, autonomous spiking networks at O(log N) per spike (docs/sparse.md).

    train = run_sparse("models/balanced_ei.snn", duration=1000.0, seed=0)   # ms
    train.times, train.neurons, train.population(), train.rates_hz(), train.cv_isi()

engine="compiled" (default): the event-driven engine generated as MLIR and JIT-compiled for the
CPU (compiler/backends/mlir/sparse.py, engine.py); engine="reference": the plain O(N) exact loop
(reference.py), the oracle of the tests. Both run the same SparseModel (model.py).
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Optional, Union

from .model import SparseModel, SparseModelError
from .result import SpikeTrain

ENGINES = ("compiled", "reference")


def parse_duration(value: Union[str, float, int]) -> float:
    """`1000ms`, `1.5 s`, `250us` or a number (ms) -> ms."""
    if isinstance(value, (int, float)):
        ms = float(value)
    else:
        text = str(value).strip().replace(" ", "")
        for unit, scale in (("ms", 1.0), ("us", 1e-3), ("s", 1000.0)):
            if text.endswith(unit):
                text, factor = text[: -len(unit)], scale
                break
        else:
            factor = 1.0
        try:
            ms = float(text) * factor
        except ValueError:
            raise ValueError(f"invalid duration {value!r}: write e.g. 1000ms, 2s or 500 (ms)") from None
    if not ms >= 0 or ms == float("inf"):
        raise ValueError(f"the duration must be a finite time >= 0, got {value!r}")
    return ms


def run_sparse(model: Union[str, Path, SparseModel, object], network: Optional[str] = None,
               duration: Union[str, float] = 1000.0, seed: int = 0, engine: str = "compiled",
               max_spikes: Optional[int] = None, time_limit_s: Optional[float] = None,
               progress: Optional[Callable[[float, int], None]] = None,
               inputs: Optional[tuple] = None) -> SpikeTrain:
    """Simulate a sparse network exactly over [0, duration] (ms, or a string with a unit).

    model: a .snn path, a CompiledModel or a SparseModel; seed: the initial state's seed (the
    connectivity comes from the `seed` of each connection in the file); max_spikes /
    time_limit_s stop early (SpikeTrain.complete is then False); progress(t_ms, n_spikes) is
    called between chunks of the run. inputs: (times, channels) of input events for a network
    with input populations (one sample; docs/sparse.md, "Networks with inputs"; the nn.Module is
    runtime.sparse.module.SparseInputNet)."""
    if engine not in ENGINES:
        raise ValueError(f"unknown sparse engine {engine!r}; engines: {', '.join(ENGINES)}")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"the seed must be an integer >= 0, got {seed!r}")
    ms = parse_duration(duration)
    sm = model if isinstance(model, SparseModel) else SparseModel.load(model, network, seed)
    if engine == "reference":
        from .reference import run_reference

        return run_reference(sm, ms, max_spikes, time_limit_s, progress, inputs=inputs)
    if inputs is not None:
        if time_limit_s is not None or progress is not None:
            raise NotImplementedError("the compiled sparse engine with inputs has no time limit or progress "
                                      "callback: leave them out, or use engine='reference'")
        from .engine_inputs import run_compiled_inputs

        return run_compiled_inputs(sm, ms, inputs[0], inputs[1], max_spikes=max_spikes)
    from .engine import run_compiled

    return run_compiled(sm, ms, max_spikes, time_limit_s, progress)


__all__ = ["ENGINES", "SparseModel", "SparseModelError", "SpikeTrain", "parse_duration", "run_sparse"]
