"""The example neuron models of models/ as analysed NeuronIRs, shared by the backend tests."""

import functools
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MODELS = {"CubaLIF": "cuba_lif.snn", "AdaptiveLIF": "adaptive_lif.snn", "AlphaLIF": "alpha_lif.snn"}


@functools.lru_cache(maxsize=None)
def model_ir(name):
    from spikescan.compiler.driver import load_model

    return load_model(ROOT / "models" / MODELS[name]).neurons[name]
