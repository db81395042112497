"""float32 against float64 on a whole network: Yin-Yang (models/yinyang.snn, its initial weights),
N test samples, the same network run as `net` (f64) and `net.to(torch.float32)`; per layer the
largest |t32 - t64| over spike trains whose counts agree, and the number of (sample, neuron)
trains whose counts differ. Also the predicted-class agreement of the readout. The f32 run sees
the f64 weights and input times rounded to f32, which is what `--dtype f32` training does.

    python bench/network_dtype.py [--samples 100] [--engines sequential-cpu,torch]
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from bench.common import base_parser, make_emitter  # noqa: E402


def compare(engine: str, samples: int, seed: int = 0, model: str = "models/yinyang.snn", t_end: float = 60.0) -> dict:
    from spikescan.runtime import losses
    from spikescan.runtime.data import get_dataset, pad_collate
    from spikescan.runtime.network import SpikingNetwork

    repo = Path(__file__).resolve().parent.parent
    ds = get_dataset("yinyang", "test")
    times, channels, _ = pad_collate([ds[i] for i in range(min(samples, len(ds)))])
    net64 = SpikingNetwork.from_file(repo / model, engine=engine, seed=seed)
    net32 = SpikingNetwork.from_file(repo / model, engine=engine, seed=seed).to(torch.float32)
    with torch.no_grad():
        o64, o32 = net64(times, channels, t_end=t_end), net32(times, channels, t_end=t_end)
    rec = dict(engine=engine, samples=int(times.shape[0]), layers={})
    for name, s64, s32, c64, c32 in zip(o64.layer_names, o64.spikes, o32.spikes, o64.counts, o32.counts):
        same = c64 == c32
        S = min(s64.shape[2], s32.shape[2])
        a, b = s64[:, :, :S], s32[:, :, :S].double()
        fin = torch.isfinite(a) & torch.isfinite(b) & same[:, :, None]
        err = (a - b).abs()[fin]
        rel = (err / a[fin].abs().clamp_min(1e-30)) if err.numel() else err
        rec["layers"][name] = dict(spikes=int(c64.sum()), count_mismatch=int((~same).sum()),
                                   trains=int(same.numel()), max_abs_ms=float(err.max()) if err.numel() else 0.0,
                                   median_abs_ms=float(err.median()) if err.numel() else 0.0,
                                   max_rel=float(rel.max()) if rel.numel() else 0.0)
    p64 = losses.predict(o64.readout_kind, o64.readout)
    p32 = losses.predict(o32.readout_kind, o32.readout.double())
    rec["prediction_mismatch"] = int((p64 != p32).sum())
    return rec


def main(argv=None):
    p = base_parser(__doc__, "network_dtype")
    p.add_argument("--samples", type=int, default=100)
    p.add_argument("--engines", default="sequential-cpu,torch")
    args = p.parse_args(argv)
    em = make_emitter(args, "network_dtype")
    for eng in [e for e in args.engines.split(",") if e]:
        em.emit(**compare(eng, args.samples, args.seed))


if __name__ == "__main__":
    main()
