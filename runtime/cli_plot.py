"""`spikescan plot raster CHECKPOINT --data NAME --sample K` and `spikescan plot trace model.snn
--neuron N`: pictures as PNG files (runtime/plot_raster.py, runtime/plot_trace.py); the last
line names the file written."""

from __future__ import annotations

import argparse


def _floats(text: str) -> list[float]:
    try:
        return [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None


def _params(items: list[str]) -> dict:
    out = {}
    for item in items:
        key, sep, raw = item.partition("=")
        try:
            out[key] = float(raw)
        except ValueError:
            sep = ""
        if not sep or not key.isidentifier():
            raise ValueError(f"--param expects NAME=NUMBER, got {item!r}")
    return out


def add_arguments(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="plot_kind", metavar="KIND", required=True)
    r = sub.add_parser("raster", help="input, hidden and output spike rasters of one sample, with the readout",
                       description="Spike rasters of one dataset sample through a trained network.")
    r.add_argument("checkpoint", help="a checkpoint written by `spikescan train` (best.pt or last.pt)")
    r.add_argument("--data", default=None, metavar="NAME", help="dataset (default: the one it was trained on)")
    r.add_argument("--data-root", default=None, metavar="DIR", help="folder with the recorded datasets' files")
    r.add_argument("--split", default="test", choices=("train", "val", "test"), help="split (default test)")
    r.add_argument("--sample", type=int, default=0, metavar="K", help="index of the sample in the split (default 0)")
    r.add_argument("--engine", default=None, help="engine (default: the training engine)")
    r.add_argument("-o", "--out", default="raster.png", metavar="PNG", help="output file (default raster.png)")
    t = sub.add_parser("trace", help="exact state trace of one neuron with its threshold crossings",
                       description="The exact state trace of one neuron type driven by weighted input events.")
    t.add_argument("model", help=".snn file defining the neuron")
    t.add_argument("--neuron", default=None, metavar="N", help="neuron name (default: the only one in the file)")
    t.add_argument("--times", type=_floats, default=[1.0, 2.0, 3.0], metavar="T1,T2,...",
                   help="input event times in ms (default 1,2,3)")
    t.add_argument("--weights", type=_floats, default=None, metavar="W1,W2,...",
                   help="input weights, one per time (default 5 each)")
    t.add_argument("--param", action="append", default=[], metavar="NAME=VALUE",
                   help="override a neuron parameter, repeatable (e.g. --param tau_m=10)")
    t.add_argument("--t-end", type=float, default=None, metavar="MS",
                   help="end of the plotted interval in ms (default: last event + 5 slowest time constants)")
    t.add_argument("--port", default=None, help="input port (default: the neuron's only one)")
    t.add_argument("-o", "--out", default="trace.png", metavar="PNG", help="output file (default trace.png)")


def run(args: argparse.Namespace) -> int:
    from spikescan.runtime.plots import save_figure

    if args.plot_kind == "raster":
        from spikescan.runtime.plot_raster import raster_from_checkpoint

        fig = raster_from_checkpoint(args.checkpoint, data=args.data, split=args.split, sample=args.sample,
                                     data_root=args.data_root, engine=args.engine)
    else:
        from spikescan.runtime.plot_trace import plot_trace

        weights = args.weights if args.weights is not None else [5.0] * len(args.times)
        if len(weights) != len(args.times):
            raise ValueError(f"--times has {len(args.times)} values but --weights {len(weights)}")
        fig = plot_trace(args.model, args.neuron, times=args.times, weights=weights, params=_params(args.param),
                         t_end=args.t_end, port=args.port)
    path = save_figure(fig, args.out)
    print(f"wrote {path}")
    return 0
