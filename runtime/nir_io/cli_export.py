"""`spikescan export MODEL.snn|CHECKPOINT.pt --nir out.nir`: write a network to NIR
(neuromorphs/NIR), with a trained checkpoint's weights when given one. Conventions: docs/nir.md."""

from __future__ import annotations

import argparse


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("source", metavar="MODEL_OR_CHECKPOINT",
                   help="a .snn model (exported with its seeded initial weights) or a checkpoint written by "
                        "`spikescan train` (exported with its trained weights, from the sources embedded in it)")
    p.add_argument("--nir", required=True, metavar="OUT",
                   help="the NIR file (HDF5) to write")
    p.add_argument("--network", default=None, metavar="NAME",
                   help="which network of the model (default: its only one)")
    p.add_argument("--checkpoint", default=None, metavar="CK",
                   help="with a .snn model: take the weights and parameters from this checkpoint")
    p.add_argument("--seed", type=int, default=0,
                   help="seed of the initial weights of a .snn model without --checkpoint (default 0)")
    p.add_argument("--dt", type=float, default=None, metavar="SECONDS",
                   help="write the graph for simulators that read a spike as a pulse of area SECONDS (a time "
                        "step); default: NIR's unit Dirac delta (docs/nir.md)")
    p.add_argument("-q", "--quiet", action="store_true", help="print nothing on success")


def run(args: argparse.Namespace) -> int:
    from .export import export_nir

    model, ck = args.source, args.checkpoint
    if not str(model).endswith(".snn"):
        if ck is not None:
            raise ValueError("give either a checkpoint or a .snn model with --checkpoint, not two checkpoints")
        model, ck = None, args.source
    s = export_nir(model, args.nir, network=args.network, checkpoint=ck, dt=args.dt, seed=args.seed)
    if not args.quiet:
        kinds = ", ".join(f"{k}: {v}" for k, v in s.layers.items())
        print(f"wrote {s.path} (network {s.network}; {s.nodes} nodes, {s.edges} edges; {kinds})")
    return 0
