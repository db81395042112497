"""models/shd.snn (700 -> 256 recurrent CubaLIF -> 20 LI, max-potential readout) as a whole
network, one training step on the SHD-like batch, on the CPU: forward, and forward+backward of the
cross-entropy of the readout, through SpikingNetwork (what `spikescan train` runs), on 1 and on
2 engine threads, in one run.

Input: bench/common.ShdLike (batch 32; 700 Poisson channels at 12 Hz over 1 s, ~8,400 events per
sample), t_end 1000 ms, f64, one torch thread. Weights: input and readout as bench/cpu_step.py
(shd_weights, readout_weights: the feed-forward step's ~4.5 Hz hidden rate), recurrent weights
the model's own init (normal(0, 0.05), seed --seed); the model's own input init leaves this input
silent (0 Hz), which would time nothing.
Records carry the hidden firing rate, the hidden spikes per sample and which engine ran each
layer. `--quick` (batch 2, 200 ms) is a smoke test only.

    python bench/shd_network.py [--quick] [--batch 32] [--repeats 5] [--engine sequential-cpu]
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from bench.common import ShdLike, base_parser, make_emitter, readout_weights, shd_weights  # noqa: E402
from bench.cpu_step import time_it  # noqa: E402

MODEL = Path(__file__).resolve().parent.parent / "models" / "shd.snn"


def main(argv=None):
    p = base_parser(__doc__, "shd_network")
    p.add_argument("--batch", type=int, default=None)
    p.add_argument("--duration", type=float, default=None, help="ms of input per sample")
    p.add_argument("--engine", default="sequential-cpu")
    args = p.parse_args(argv)
    em = make_emitter(args, "shd_network")
    torch.set_num_threads(1)
    import spikescan
    from spikescan.runtime.engines import parallel

    batch = args.batch or (2 if args.quick else 32)
    duration = args.duration or (200.0 if args.quick else 1000.0)
    repeats = args.repeats or (2 if args.quick else 5)
    wl = ShdLike(batch=batch, duration_ms=duration, seed=args.seed)
    times, channels = wl.events(dtype=torch.float64)
    labels = torch.randint(0, 20, (batch,), generator=torch.Generator().manual_seed(args.seed + 3))
    net = spikescan.Network.from_file(MODEL, engine=args.engine, seed=args.seed).double()
    with torch.no_grad():
        net.layers["hidden"].weights[0].copy_(shd_weights(wl.n_inputs, 256, seed=wl.seed + 1))
        net.layers["out"].weights[0].copy_(readout_weights(256, 20, seed=wl.seed + 2))
    sizes = dict(model="models/shd.snn", batch=batch, inputs=wl.n_inputs, hidden=256, readout=20,
                 duration_ms=duration, events_per_sample=int(torch.isfinite(times).sum()) / batch, dtype="f64")

    def step(backward: bool):
        net.zero_grad(set_to_none=True)
        with torch.set_grad_enabled(backward):
            out = net(times, channels, t_end=duration)
            loss = torch.nn.functional.cross_entropy(out.readout, labels)
            if backward:
                loss.backward()
        return out

    out = step(False)
    hid = out.counts[out.layer_names.index("hidden")].double()
    rate = float(hid.mean()) / (duration / 1000.0)
    info = dict(hidden_rate_hz=rate, hidden_spikes_per_sample=float(hid.sum(1).mean()),
                overflow=bool(out.overflow.any()), engine=args.engine)
    walls = {}
    for threads in (1, 2):
        parallel.set_threads(threads)
        for name, fn in (("forward", lambda: step(False)), ("forward+backward", lambda: step(True))):
            wall, cpu, allw = time_it(fn, repeats)
            walls[(threads, name)] = wall
            em.emit(kind="timing", stage=name, engine_threads=threads, ms_wall=wall * 1e3, ms_cpu=cpu * 1e3,
                    all_wall_s=allw, **info, **sizes)
    parallel.set_threads(None)
    for name in ("forward", "forward+backward"):
        em.emit(kind="ratio", what=f"1 / 2 engine threads, {name}",
                ratio=walls[(1, name)] / walls[(2, name)], **sizes)


if __name__ == "__main__":
    main()
