"""spikescan: compile .snn spiking-neuron models and simulate/train them exactly in continuous time.

The subpackages map to top-level folders of the repository:
``spikescan.dsl`` (dsl/), ``spikescan.compiler`` (compiler/), ``spikescan.runtime`` (runtime/).
Heavy modules (torch) are imported lazily so that ``spikescan check`` starts fast.
"""

__version__ = "0.1.0"

__all__ = ["simulate", "train", "compile_model", "__version__"]


def __getattr__(name):  # PEP 562: lazy public API
    if name == "simulate":
        from spikescan.runtime.simulate import simulate

        return simulate
    if name == "train":
        from spikescan.runtime.train import train

        return train
    if name == "compile_model":
        from spikescan.compiler.driver import compile_model

        return compile_model
    raise AttributeError(f"module 'spikescan' has no attribute {name!r}")
