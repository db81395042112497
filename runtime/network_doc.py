"""The user-facing documentation of `spikescan.Network` and `spikescan.NetworkOutput`
(what help() shows), kept apart so that runtime/network.py stays code."""

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
