"""NIR interchange (neuromorphs/NIR, the `nir` package): `spikescan export --nir` and
`spikescan import`. Conventions (units, spike area, r, v_leak, w_in, readouts, what is refused)
are in docs/nir.md.

    export_nir(model=None, out, network=None, checkpoint=None, dt=None, seed=0) -> ExportSummary
    import_nir(path, out_snn, weights=None, network=None, readout=None, readout_layer=None, dt=None)
        -> ImportSummary  (writes the .snn file and a spikescan checkpoint with the weights)

Modules, one job each: `recognise` (a NeuronIR's equations -> a NIR neuron kind and its
parameters), `export` (SpikingNetwork -> NIRGraph), `export_paths` (the nodes of one connection:
Flatten / Delay / Linear / Affine, Conv2d, SumPool2d + Scale), `reader` (untrusted HDF5 ->
validated plain nodes), `paths` (one NIR path -> one connection), `graph` (validated nodes ->
layers and connections, recurrent ones from the graph's cycles), `snn_text` (the .snn writer),
`importer` (the .snn file plus checkpoint)."""

from __future__ import annotations

from .errors import NirError

__all__ = ["NirError", "export_nir", "import_nir"]


def __getattr__(name):  # PEP 562: keep `import spikescan.runtime.nir_io` light
    if name == "export_nir":
        from .export import export_nir

        return export_nir
    if name == "import_nir":
        from .importer import import_nir

        return import_nir
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
