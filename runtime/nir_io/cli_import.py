"""`spikescan import in.nir -o model.snn`: a NIR graph -> a readable .snn model plus a spikescan
checkpoint with its weights (model.pt), loadable by `spikescan eval` and
`spikescan.load_network`. The NIR file is untrusted input (docs/nir.md)."""

from __future__ import annotations

import argparse

READOUTS = ("first_spike", "spike_count", "max_potential", "li_integral")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("nir", metavar="IN", help="the NIR file (HDF5) to import")
    p.add_argument("-o", "--output", required=True, metavar="MODEL.snn",
                   help="the .snn model to write")
    p.add_argument("--weights", default=None, metavar="CK",
                   help="the checkpoint with the weights to write (default: MODEL.pt next to the model)")
    p.add_argument("--network", default=None, metavar="NAME",
                   help="name of the network in the .snn file (default: the file's own, else the model's stem)")
    p.add_argument("--readout", default=None, choices=READOUTS,
                   help="readout of the network (default: the file's spikescan readout, else first_spike for a "
                        "spiking layer, max_potential for LI/CubaLI)")
    p.add_argument("--readout-layer", default=None, metavar="NODE",
                   help="the neuron node to read out when several feed Output nodes")
    p.add_argument("--dt", type=float, default=None, metavar="SECONDS",
                   help="read a NIR spike as a pulse of area SECONDS (the time step of the simulator that wrote "
                        "it); default: the file's spikescan area, else NIR's unit Dirac delta (docs/nir.md)")
    p.add_argument("-q", "--quiet", action="store_true", help="print nothing on success")


def run(args: argparse.Namespace) -> int:
    from .importer import import_nir

    s = import_nir(args.nir, args.output, weights=args.weights, network=args.network, readout=args.readout,
                   readout_layer=args.readout_layer, dt=args.dt)
    if not args.quiet:
        kinds = ", ".join(f"{k}: {v}" for k, v in s.layers.items())
        print(f"wrote {s.snn} and {s.weights} (network {s.network}; {kinds}; readout {s.readout_layer}: "
              f"{s.readout}; {'; '.join(s.notes)})")
    return 0
