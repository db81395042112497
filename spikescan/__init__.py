"""spikescan: compile .snn spiking-neuron models and simulate/train them exactly in continuous time.

Quick start (docs/tutorial.md walks through it)::

    import spikescan
    net = spikescan.Network.from_file("models/yinyang.snn", engine="auto")
    out = net(times, channels, t_end=60.0)      # times [B, n] ms (+inf padding), channels [B, n]
    loss = spikescan.first_spike_ce(out.readout, labels, t_end=60.0)   # never F.cross_entropy(-out.readout)
    result = spikescan.train("models/yinyang.snn", data="yinyang")     # or data=<torch Dataset/DataLoader>

Public names (imported lazily, so ``spikescan check`` never imports torch):

- networks: ``Network`` (alias ``SpikingNetwork``), ``NetworkOutput``, ``load_network``,
  ``network_from_checkpoint``, ``load_checkpoint``;
- running: ``simulate`` (one neuron type, optional exact state trace), ``run_sparse`` and
  ``SparseModel`` (sparse autonomous networks, docs/sparse.md), ``compile_model``,
  ``load_model``, ``train``, ``TrainResult``, ``evaluate``;
- losses: ``first_spike_ce``, ``readout_loss``, ``LossConfig``, ``value_ce``, ``count_ce``,
  ``count_regulariser``, ``fill_silent``, ``predict``, ``accuracy``;
- data: ``pad_collate``, ``ToSpikescan`` (a tonic transform), ``get_dataset``, ``make_loader``,
  ``DATASETS``;
- pictures: ``plot_raster``, ``plot_trace``, ``plot_curves`` (matplotlib figures / PNGs),
  ``write_report`` (the one-page run summary of ``spikescan report``).

The subpackages map to top-level folders of the repository:
``spikescan.dsl`` (dsl/), ``spikescan.compiler`` (compiler/), ``spikescan.runtime`` (runtime/).
"""

from __future__ import annotations

__version__ = "0.1.0"

# public name -> (module, attribute); resolved on first use (PEP 562)
_LAZY = {
    "Network": ("spikescan.runtime.network", "SpikingNetwork"),
    "SpikingNetwork": ("spikescan.runtime.network", "SpikingNetwork"),
    "NetworkOutput": ("spikescan.runtime.network", "NetworkOutput"),
    "simulate": ("spikescan.runtime.simulate", "simulate"),
    "SimulationResult": ("spikescan.runtime.simulate", "SimulationResult"),
    "compile_model": ("spikescan.compiler.driver", "compile_model"),
    "load_model": ("spikescan.compiler.driver", "load_model"),
    "train": ("spikescan.runtime.train", "train"),
    "TrainResult": ("spikescan.runtime.train", "TrainResult"),
    "TrainingDiverged": ("spikescan.runtime.train_guard", "TrainingDiverged"),
    "TrainingStalled": ("spikescan.runtime.train_guard", "TrainingStalled"),
    "evaluate": ("spikescan.runtime.train_data", "evaluate"),
    "load_network": ("spikescan.runtime.train_data", "load_network"),
    "network_from_checkpoint": ("spikescan.runtime.train", "network_from_checkpoint"),
    "load_checkpoint": ("spikescan.runtime.checkpoint", "load_checkpoint"),
    "LossConfig": ("spikescan.runtime.losses", "LossConfig"),
    "first_spike_ce": ("spikescan.runtime.losses", "first_spike_ce"),
    "readout_loss": ("spikescan.runtime.losses", "readout_loss"),
    "value_ce": ("spikescan.runtime.losses", "value_ce"),
    "count_ce": ("spikescan.runtime.losses", "count_ce"),
    "count_regulariser": ("spikescan.runtime.losses", "count_regulariser"),
    "fill_silent": ("spikescan.runtime.losses", "fill_silent"),
    "predict": ("spikescan.runtime.losses", "predict"),
    "accuracy": ("spikescan.runtime.losses", "accuracy"),
    "pad_collate": ("spikescan.runtime.data", "pad_collate"),
    "ToSpikescan": ("spikescan.runtime.data", "ToSpikescan"),
    "get_dataset": ("spikescan.runtime.data", "get_dataset"),
    "make_loader": ("spikescan.runtime.data", "make_loader"),
    "DATASETS": ("spikescan.runtime.data", "NAMES"),
    "plot_raster": ("spikescan.runtime.plot_raster", "plot_raster"),
    "plot_trace": ("spikescan.runtime.plot_trace", "plot_trace"),
    "plot_curves": ("spikescan.runtime.plots", "plot_curves"),
    "write_report": ("spikescan.runtime.report", "write_report"),
    "run_sparse": ("spikescan.runtime.sparse", "run_sparse"),
    "SparseModel": ("spikescan.runtime.sparse", "SparseModel"),
}

__all__ = sorted(_LAZY) + ["__version__"]


def __getattr__(name: str):  # PEP 562: lazy public API
    try:
        module, attr = _LAZY[name]
    except KeyError:
        raise AttributeError(f"module 'spikescan' has no attribute {name!r}") from None
    import importlib

    mod = importlib.import_module(module)
    value = getattr(mod, attr)
    globals()[name] = value  # later look-ups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
