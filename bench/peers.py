"""Discrete-time SNN frameworks (snnTorch, SpikingJelly torch backend, Norse) at dt = 1 ms next to
spikescan's exact engines, on the same SHD-like workload and network, in one process run.

Network: 700 inputs -> H (256) current-based LIF (tau_m 20 ms, tau_s 5 ms, threshold 1, reset
to 0) -> 20 leaky-integrator readouts; loss = cross-entropy of the readouts' max potential over
time; one training step = forward + backward (no optimiser update, identical for all).
Inputs: batch B (32), 700 Poisson channels at 12 Hz over 1 s, binned to T = 1000 steps of 1 ms for
the peers (dense [T, B, 700] float32 built once, not timed) and fed as events to spikescan.
The same weight matrices are used everywhere. Peers run float32 (their normal use); spikescan
runs float64 and float32. Peers that are not installed or fail to import are skipped with the
reason (install: `pip install --no-deps snntorch norse spikingjelly`, see docs/benchmarks.md).

    python bench/peers.py [--quick] [--device cuda] [--spikescan-engines sequential-cpu,torch]
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from bench.common import (ShdLike, base_parser, bin_events, get_engine, make_emitter,  # noqa: E402
                          peak_memory, readout_weights, shd_weights, time_fn)

TAU_M, TAU_S, DT = 20.0, 5.0, 1.0  # ms


def _readout_loss(v_seq: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """v_seq [T, B, 20] -> cross-entropy of the max over time (the same loss as spikescan's)."""
    return torch.nn.functional.cross_entropy(v_seq.max(0).values, labels)


# ----------------------------------------------------------------------------- the peers
# Each builder returns step(x [T, B, 700], labels, backward) -> (loss, mean hidden spikes/neuron).


def build_snntorch(W1, W2, device):
    import snntorch as snn

    fc1 = torch.nn.Linear(W1.shape[0], W1.shape[1], bias=False).to(device)
    fc2 = torch.nn.Linear(W2.shape[0], W2.shape[1], bias=False).to(device)
    alpha, beta = math.exp(-DT / TAU_S), math.exp(-DT / TAU_M)
    with torch.no_grad():
        # snnTorch integrates mem = beta mem + syn (no 1/tau_m factor): scale the input by
        # (1 - beta) ~ dt/tau_m so the dynamics match dv/dt = (i - v)/tau_m
        fc1.weight.copy_(W1.T * (1 - beta))
        fc2.weight.copy_(W2.T * (1 - beta))
    lif = snn.Synaptic(alpha=alpha, beta=beta, threshold=1.0, reset_mechanism="zero").to(device)
    out = snn.Leaky(beta=beta, reset_mechanism="none").to(device)

    def step(x, labels, backward):
        fc1.zero_grad(set_to_none=True)
        fc2.zero_grad(set_to_none=True)
        with torch.set_grad_enabled(backward):
            syn = torch.zeros(x.shape[1], W1.shape[1], device=device)
            mem = torch.zeros_like(syn)
            mem2 = torch.zeros(x.shape[1], W2.shape[1], device=device)
            cur1 = fc1(x)  # [T, B, H]: one big matmul, as the snnTorch tutorials do
            vs, n_spk = [], 0.0
            for t in range(x.shape[0]):
                spk, syn, mem = lif(cur1[t], syn, mem)
                _, mem2 = out(fc2(spk), mem2)
                vs.append(mem2)
                n_spk = n_spk + spk.detach().sum()
            loss = _readout_loss(torch.stack(vs), labels)
            if backward:
                loss.backward()
        return loss.detach(), float(n_spk) / (x.shape[1] * W1.shape[1])

    return step


def build_spikingjelly(W1, W2, device):
    from spikingjelly.activation_based import functional, layer, neuron

    fc1 = layer.Linear(W1.shape[0], W1.shape[1], bias=False, step_mode="m").to(device)
    fc2 = layer.Linear(W2.shape[0], W2.shape[1], bias=False, step_mode="m").to(device)
    with torch.no_grad():
        fc1.weight.copy_(W1.T)
        fc2.weight.copy_(W2.T)
    syn = layer.SynapseFilter(tau=TAU_S / DT, step_mode="m").to(device)
    lif = neuron.LIFNode(tau=TAU_M / DT, decay_input=True, v_threshold=1.0, v_reset=0.0,
                         step_mode="m").to(device)
    # readout: a LIF that never fires (inf would give inf * 0 = nan in the soft reset)
    ro = neuron.LIFNode(tau=TAU_M / DT, decay_input=True, v_threshold=1e9, v_reset=None,
                        step_mode="m", store_v_seq=True).to(device)
    net = torch.nn.Sequential(fc1, syn, lif, fc2, ro)

    def step(x, labels, backward):
        net.zero_grad(set_to_none=True)
        functional.reset_net(net)
        with torch.set_grad_enabled(backward):
            h = lif(syn(fc1(x)))
            ro(fc2(h))
            loss = _readout_loss(ro.v_seq, labels)
            if backward:
                loss.backward()
        return loss.detach(), float(h.detach().sum()) / (x.shape[1] * W1.shape[1])

    return step


def build_norse(W1, W2, device):
    import norse.torch as nt

    fc1 = torch.nn.Linear(W1.shape[0], W1.shape[1], bias=False).to(device)
    fc2 = torch.nn.Linear(W2.shape[0], W2.shape[1], bias=False).to(device)
    with torch.no_grad():
        fc1.weight.copy_(W1.T)
        fc2.weight.copy_(W2.T)
    # Norse works in seconds: dt = 1e-3 s, rates = 1 / tau in 1/s
    lif = nt.LIF(p=nt.LIFParameters(tau_syn_inv=torch.tensor(1000.0 / TAU_S),
                                    tau_mem_inv=torch.tensor(1000.0 / TAU_M),
                                    v_th=torch.tensor(1.0), v_reset=torch.tensor(0.0)),
                 dt=DT / 1000.0).to(device)
    li = nt.LI(p=nt.LIParameters(tau_syn_inv=torch.tensor(1000.0 / TAU_S),
                                 tau_mem_inv=torch.tensor(1000.0 / TAU_M)), dt=DT / 1000.0).to(device)

    def step(x, labels, backward):
        fc1.zero_grad(set_to_none=True)
        fc2.zero_grad(set_to_none=True)
        with torch.set_grad_enabled(backward):
            z, _ = lif(fc1(x))
            v, _ = li(fc2(z))
            loss = _readout_loss(v, labels)
            if backward:
                loss.backward()
        return loss.detach(), float(z.detach().sum()) / (x.shape[1] * W1.shape[1])

    return step


PEERS = {"snntorch": build_snntorch, "spikingjelly": build_spikingjelly, "norse": build_norse}


def _version(mod: str) -> str:
    try:
        from importlib.metadata import version

        return version(mod)
    except Exception:  # noqa: BLE001
        return "unknown"


# ----------------------------------------------------------------------------- main


def main(argv=None):
    p = base_parser(__doc__, "peers")
    p.add_argument("--batch", type=int, default=None)
    p.add_argument("--hidden", type=int, default=None)
    p.add_argument("--peers", default=",".join(PEERS))
    p.add_argument("--spikescan-engines", default="sequential-cpu,torch,triton-scan")
    p.add_argument("--spikescan-dtypes", default="f64,f32")
    p.add_argument("--duration", type=float, default=None, help="ms of input per sample")
    args = p.parse_args(argv)
    em = make_emitter(args, "peers")
    if args.quick:
        batch, hidden, duration, repeats, max_s = args.batch or 2, args.hidden or 32, 100.0, \
            args.repeats or 3, 5.0
    else:
        batch, hidden, duration, repeats, max_s = args.batch or 32, args.hidden or 256, 1000.0, \
            args.repeats or 5, 60.0
    duration = args.duration or duration
    wl = ShdLike(batch=batch, duration_ms=duration, seed=args.seed)
    n_steps = int(round(duration / DT))
    times, chans = wl.events(dtype=torch.float64, device=args.device)
    ev = float(torch.isfinite(times).sum()) / batch
    sizes = dict(batch=batch, inputs=wl.n_inputs, hidden=hidden, readout=20, duration_ms=duration,
                 events_per_sample=ev, tau_m_ms=TAU_M, tau_s_ms=TAU_S)
    W1 = shd_weights(wl.n_inputs, hidden, seed=args.seed + 1)
    W2 = readout_weights(hidden, 20, seed=args.seed + 2)
    g = torch.Generator().manual_seed(args.seed + 3)
    labels = torch.randint(0, 20, (batch,), generator=g).to(args.device)
    x = bin_events(times, chans, wl.n_inputs, DT, n_steps)  # [T, B, 700] float32

    timings = {}  # label -> {"forward": s, "forward+backward": s}

    def measure(label, fn_fwd, fn_step, extra):
        rec = {}
        for mode, fn in (("forward", fn_fwd), ("forward+backward", fn_step)):
            try:
                # one warm-up always: the first call JIT-compiles (sequential-cpu's backward)
                tm = time_fn(fn, args.device, repeats=repeats, warmup=1,
                             max_seconds=max_s)
                mem = peak_memory(fn, args.device)
            except Exception as e:  # noqa: BLE001
                em.skip(f"{type(e).__name__}: {e}", what=mode, framework=label, **sizes)
                continue
            rec[mode] = tm["median_s"]
            em.emit(kind="timing", framework=label, mode=mode, **sizes, **extra, **tm,
                    peak_bytes=mem["peak_bytes"], memory=mem)
        timings[label] = rec

    for name in [q for q in args.peers.split(",") if q]:
        try:
            stepper = PEERS[name](W1.float().to(args.device), W2.float().to(args.device), args.device)
            _, spk = stepper(x.to(args.device), labels, False)
        except Exception as e:  # noqa: BLE001
            em.skip(f"{name} unavailable: {type(e).__name__}: {e}", what="peer", framework=name,
                    **sizes)
            continue
        measure(name, lambda: stepper(x, labels, False), lambda: stepper(x, labels, True),
                dict(dt_ms=DT, dtype="f32", version=_version(name), hidden_rate_hz=spk / (duration / 1000),
                     exact=False))

    # spikescan, same network through bench/shd_step.py
    from bench.shd_step import hidden_rate_hz, make_problem, readout_engine_for, step

    for dname in [d for d in args.spikescan_dtypes.split(",") if d]:
        dtype = torch.float64 if dname == "f64" else torch.float32
        try:
            pb = make_problem(wl, hidden=hidden, dtype=dtype, device=args.device)
        except Exception as e:  # noqa: BLE001
            em.skip(f"spikescan problem: {type(e).__name__}: {e}", what="spikescan", **sizes)
            break
        for ename in [e for e in args.spikescan_engines.split(",") if e]:
            eng, why = get_engine(ename, args.device)
            if eng is None:
                em.skip(why, what="spikescan", framework=f"spikescan:{ename}", **sizes)
                continue
            label = f"spikescan:{ename}:{dname}"
            try:
                ro_eng, ro_name = readout_engine_for(eng, pb)
                _, hid = step(eng, pb, readout_eng=ro_eng)
            except Exception as e:  # noqa: BLE001
                em.skip(f"{type(e).__name__}: {e}", what="spikescan", framework=label, **sizes)
                continue
            measure(label, lambda: step(eng, pb, readout_eng=ro_eng),
                    lambda: step(eng, pb, backward=True, readout_eng=ro_eng),
                    dict(dtype=dname, engine=ename, hidden_rate_hz=hidden_rate_hz(hid, duration),
                         exact=True, version="spikescan", readout_engine=ro_name or ename))

    # ratios peer / spikescan (> 1: spikescan is faster)
    for peer, pt in timings.items():
        if peer.startswith("spikescan"):
            continue
        for ss, st in timings.items():
            if not ss.startswith("spikescan"):
                continue
            for mode in ("forward", "forward+backward"):
                if mode in pt and mode in st:
                    em.emit(kind="ratio", framework=peer, spikescan=ss, mode=mode, peer_s=pt[mode],
                            spikescan_s=st[mode], ratio=pt[mode] / st[mode], **sizes)


if __name__ == "__main__":
    main()
