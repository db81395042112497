"""The example neuron models of models/ as analysed NeuronIRs, shared by the backend tests."""

import functools
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MODELS = {"CubaLIF": "cuba_lif.snn", "AdaptiveLIF": "adaptive_lif.snn", "AlphaLIF": "alpha_lif.snn"}


@functools.lru_cache(maxsize=None)
def model_ir(name):
    from spikescan.compiler.driver import load_model

    return load_model(ROOT / "models" / MODELS[name]).neurons[name]


@functools.lru_cache(maxsize=None)
def spiking_neurons():
    """Every neuron type with a threshold in models/*.snn, by name (the first file defining it)."""
    from spikescan.compiler.driver import load_model

    out = {}
    for f in sorted((ROOT / "models").glob("*.snn")):
        for name, ir in load_model(str(f)).neurons.items():
            if ir.c is not None and ir.theta is not None and name not in out:
                out[name] = ir
    return out
