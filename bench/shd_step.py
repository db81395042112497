"""The spikescan side of the SHD-like benchmark: one forward (and backward) pass of
700 inputs -> N hidden CubaLIF (tau_m 20 ms, tau_s 5 ms) -> 20 leaky-integrator readouts,
loss = cross-entropy of the readouts' max potential over [0, t_end], through any engine.

Built on `run_layer` directly (the engine contract), so it measures the engines and nothing else.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from bench.common import ShdLike, load_neuron, readout_weights, shd_weights, spikes_to_events


SILENT = ("no gradient path: the hidden layer is silent (no spikes) on this input, so the loss "
          "does not depend on the weights; use more inputs, neurons or a longer duration")


@dataclass
class ShdProblem:
    workload: ShdLike
    hidden: int
    readout: int
    times: torch.Tensor
    channels: torch.Tensor
    W1: torch.Tensor
    W2: torch.Tensor
    labels: torch.Tensor
    cuba: object
    li: object

    @property
    def t_end(self) -> float:
        return self.workload.duration_ms


def make_problem(workload: ShdLike, hidden: int = 256, readout: int = 20, dtype=torch.float64,
                 device="cpu") -> ShdProblem:
    times, channels = workload.events(dtype=dtype, device=device)
    W1 = shd_weights(workload.n_inputs, hidden, seed=workload.seed + 1, dtype=dtype, device=device)
    W2 = readout_weights(hidden, readout, seed=workload.seed + 2, dtype=dtype, device=device)
    g = torch.Generator().manual_seed(workload.seed + 3)
    labels = torch.randint(0, readout, (workload.batch,), generator=g).to(device)
    return ShdProblem(workload, hidden, readout, times, channels, W1, W2, labels,
                      load_neuron("cuba_lif.snn", "CubaLIF"), load_neuron("li_readout.snn", "LI"))


def step(eng, pb: ShdProblem, chunk: int = 128, backward: bool = False, max_spikes: int = 64,
         readout_eng=None):
    """One pass; returns (loss, hidden LayerResult). With backward=True, grads land in W1/W2.

    `readout_eng` runs the 20-unit readout layer (default: `eng`); engines without `observe`
    support use the torch engine there, and the record says so.
    """
    W1 = pb.W1.detach().requires_grad_(backward)
    W2 = pb.W2.detach().requires_grad_(backward)
    with torch.set_grad_enabled(backward):
        hid = eng.run_layer(pb.cuba, {}, pb.times, pb.channels, W1, chunk=chunk,
                            max_spikes=max_spikes, on_overflow="raise")
        s_max = max(1, int(hid.counts.max()))  # drop the all-padding tail of the spike slots
        t2, c2 = spikes_to_events(hid.times[..., :s_max])
        out = (readout_eng or eng).run_layer(pb.li, {}, t2, c2, W2, chunk=chunk, max_spikes=max_spikes,
                            on_overflow="raise", observe="max_potential", t_end=pb.t_end)
        loss = torch.nn.functional.cross_entropy(out.observed, pb.labels)
        if backward:
            if not loss.requires_grad:
                raise RuntimeError(SILENT)
            loss.backward()
    return loss.detach(), hid


def readout_engine_for(eng, pb: ShdProblem):
    """(engine for the readout, its name or None if `eng` itself supports the readout)."""
    from spikescan.runtime.engines import get_engine

    t = torch.tensor([[1.0]], dtype=pb.times.dtype, device=pb.times.device)
    c = torch.zeros((1, 1), dtype=torch.int64, device=pb.times.device)
    w = torch.ones((1, 1), dtype=pb.times.dtype, device=pb.times.device)
    try:
        eng.run_layer(pb.li, {}, t, c, w, observe="max_potential", t_end=pb.t_end)
        if eng.__name__.endswith(".sequential_cpu"):
            # sequential-cpu computes readouts by the compiled readout (runtime/engines/
            # readout_cpu.py) or, where that does not apply, by the replay of the known spikes
            # (runtime/engines/observe_replay.py), not by its own event loop: say which
            from spikescan.runtime.engines.readout_cpu import fallback_reason

            why = fallback_reason(pb.li, {}, t, w, None, None, "max_potential")
            return None, "sequential-cpu (compiled readout)" if why is None else f"sequential-cpu (replay: {why})"
        return None, None
    except NotImplementedError:
        return get_engine("torch"), "torch"


def hidden_rate_hz(hid, duration_ms: float) -> float:
    return float(hid.counts.double().mean()) / (duration_ms / 1000.0)
