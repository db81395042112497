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
- running: ``simulate`` (one neuron type, optional exact state trace), ``compile_model``,
  ``load_model``, ``train``, ``TrainResult``, ``evaluate``;
- losses: ``first_spike_ce``, ``readout_loss``, ``LossConfig``, ``value_ce``, ``count_ce``,
  ``count_regulariser``, ``fill_silent``, ``predict``, ``accuracy``;
- data: ``pad_collate``, ``ToSpikescan`` (a tonic transform), ``get_dataset``, ``make_loader``,
  ``DATASETS``;
- pictures: ``plot_raster``, ``plot_trace``, ``plot_curves`` (matplotlib figures / PNGs).

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
}

__all__ = sorted(_LAZY) + ["__version__"]


# The user-facing documentation of the network class and its output. It is attached to the
# classes when they are first looked up here (spikescan.Network, spikescan.NetworkOutput), so that
# help(spikescan.Network) shows it.
NETWORK_DOC = """A spiking network compiled from a ``.snn`` file, as a ``torch.nn.Module``.

    Exact in continuous time: spike times to machine precision and exact gradients through them
    (no surrogate). Works like any module: ``parameters()``, ``state_dict()``, optimisers,
    ``copy.deepcopy``, pickling, your own DataLoader loop.

    Build::

        net = spikescan.Network.from_file("models/yinyang.snn", engine="auto")
        net = spikescan.Network(spikescan.load_model("m.snn"), network="name", seed=0)

    ``engine``: "torch" (the default here: the PyTorch scan, any device), "auto" (on a CPU the
    compiled "sequential-cpu" engine, fastest; on CUDA "torch" for training), "torch-sequential",
    "sequential-cpu", "triton-scan" (CUDA); docs/engines.md. ``max_spikes`` is the per-neuron
    spike cap per sample (``on_overflow``: "flag" marks ``out.overflow``, "raise" raises);
    ``learn_time_constants=True`` makes per-neuron log time constants trainable.

    Input (one batch of events)::

        times     float64 [B, n]  event times in ms, +inf = padding (no event), any order
        channels  int64   [B, n]  input channel of each event, in [0, net.n_inputs)

    Batch samples ``(times, channels, label)`` with ``DataLoader(ds, collate_fn=spikescan.pad_collate)``;
    a tonic dataset needs ``transform=spikescan.ToSpikescan(ds.sensor_size)`` (never
    tonic's PadTensors: its zero padding is fake input spikes at t = 0).

    Forward: ``out = net(times, channels, t_end=T)`` returns a ``spikescan.NetworkOutput``:
    ``out.readout`` [B, n_out] (what the ``readout`` line of the .snn file asks for),
    ``out.readout_kind``, per layer ``out.counts`` [B, N] and ``out.spikes`` [B, N, S] (+inf
    padded) named by ``out.layer_names``. ``t_end`` (trial length, ms) is required for the
    max_potential and li_integral readouts and for ``observe_vmax=True``.

    Which loss: ``spikescan.readout_loss(out, labels, spikescan.LossConfig(...), t_end,
    net.readout_theta())`` picks the right one for every readout kind. By kind:

    - first_spike: ``out.readout`` is the first spike time, **+inf for a silent neuron**, so
      ``F.cross_entropy(-out.readout, y)`` is inf/NaN. Use ``spikescan.first_spike_ce(out.readout,
      y, t_end=T, tau=0.5, alpha=3e-3, beta=6.4)`` (silent -> t_end). A silent label neuron has no
      gradient: run with ``observe_vmax=True`` and pass ``vmax=out.vmax,
      theta=net.readout_theta(), silent_slope=10.0`` to push it towards threshold.
    - spike_count: ``spikescan.count_ce(out.spikes[-1], y, t_end=T)`` (smooth count of the exact times).
    - max_potential, li_integral: ``spikescan.value_ce(out.readout, y)`` (finite values).

    Predictions: ``spikescan.predict(out.readout_kind, out.readout)`` (earliest spike or largest
    value; ties and all-silent give -1), ``spikescan.accuracy(...)``.

    A training step (call ``net.clamp_()`` after ``opt.step()``: it projects learnable delays)::

        opt = torch.optim.Adam(net.parameters(), lr=5e-3)
        out = net(times, channels, t_end=60.0, observe_vmax=True)
        loss = spikescan.readout_loss(out, labels, cfg, 60.0, net.readout_theta())
        opt.zero_grad(); loss.backward(); opt.step(); net.clamp_()

    Or let ``spikescan.train(net_or_path, data=...)`` do it all (names or any Dataset/DataLoader
    of (times, channels, labels); checkpoints, metrics, curves), and load a checkpoint back with
    ``spikescan.load_network("runs/yy/best.pt")``. Tutorial: docs/tutorial.md.

    Attributes: ``n_inputs``, ``n_out``, ``layers`` (ModuleDict: ``weights``, ``delays``,
    ``w_rec``), ``readout_kind``, ``readout_layer``, ``ir`` (the compiled NetworkIR),
    ``engine_name`` (settable).
    """

OUTPUT_DOC = """What ``Network.forward`` returns (all tensors batch-first).

    readout       [B, n_out]: first spike times (ms, +inf = silent), spike counts, max potentials
                  or leaky integrals, by ``readout_kind``; differentiable.
    readout_kind  "first_spike" | "spike_count" | "max_potential" | "li_integral".
    first_spike   [B, n_out] first spike of the readout layer (None for a non-spiking readout).
    counts        per layer [B, N] int64 spike counts.
    spikes        per layer [B, N, S] spike times (ms), +inf padded; S >= max count.
    events        input events processed over all layers (an int).
    overflow      [B] bool: some layer hit the spike cap ``max_spikes`` for this sample.
    vmax          [B, n_out] max potential of the readout layer with ``observe_vmax=True``.
    layer_names   names of the layers, in the order of ``counts`` and ``spikes``.

    The loss to use for each readout kind: see ``help(spikescan.Network)``.
    """


def __getattr__(name: str):  # PEP 562: lazy public API
    try:
        module, attr = _LAZY[name]
    except KeyError:
        raise AttributeError(f"module 'spikescan' has no attribute {name!r}") from None
    import importlib

    mod = importlib.import_module(module)
    if module == "spikescan.runtime.network":
        _document(mod)
    value = getattr(mod, attr)
    globals()[name] = value  # later look-ups skip __getattr__
    return value


def _document(mod) -> None:
    """Attach NETWORK_DOC / OUTPUT_DOC unless runtime/network.py already carries a full docstring."""
    if "Which loss" not in (mod.SpikingNetwork.__doc__ or ""):
        mod.SpikingNetwork.__doc__ = NETWORK_DOC
    if "readout_kind" not in (mod.NetworkOutput.__doc__ or "") or "(" in (mod.NetworkOutput.__doc__ or "")[:40]:
        mod.NetworkOutput.__doc__ = OUTPUT_DOC


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
