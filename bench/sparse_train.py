"""Training a sparse recurrent network with exact gradients (docs/sparse.md, "Training"): the
teacher-student spike-time task of runtime/sparse/train.py, with timings.

A balanced E/I network of driven LIF neurons (train.EXAMPLE_SNN: N_E = --n-e, N_I = N_E / 4,
K = --k) drives a current-based LIF readout. A teacher (the same network with every synapse
weight w (1 + 0.2 n) and readout weights r (1 + 0.5 n)) gives the target spike times of the
readout; the student learns its readout and recurrent weights (Adam on the van Rossum distance)
by backpropagation through its event sequence.

Records (JSON lines, bench/common.py):
- kind "setup": neurons, synapses, target spike times, teacher network spikes;
- kind "timing": forward and backward of the network with autograd (autodiff.py) and with the
  hand-written adjoint (adjoint.py), their gradients' agreement, and the O(N) reference loop
  (runtime/sparse/reference.py, no gradients) on the same network, in the same run;
- kind "gradcheck": the directional derivative of the readout loss along a random direction of
  every learnable tensor (the student's backward: the adjoint) against central finite
  differences, with whether the event order stayed the same;
- kind "epoch": loss, readout spikes and network spikes per epoch;
- kind "fit": first and last loss, their ratio.

    python bench/sparse_train.py            # N = 100 + 25 neurons, 40 ms, 30 epochs
    python bench/sparse_train.py --quick    # N = 32 + 8 neurons, 20 ms, 6 epochs
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import base_parser, make_emitter  # noqa: E402


def main(argv=None) -> int:
    p = base_parser(__doc__.split("\n\n")[0], "sparse_train")
    p.add_argument("--n-e", type=int, default=None, help="excitatory neurons (default 100; N_I = N_E / 4)")
    p.add_argument("--k", type=int, default=10, help="presynaptic partners per neuron")
    p.add_argument("--duration", type=float, default=None, help="trial length in ms (default 40)")
    p.add_argument("--epochs", type=int, default=None, help="Adam steps (default 30)")
    p.add_argument("--lr", type=float, default=1e-3, help="learning rate of the readout weights")
    p.add_argument("--weight-lr", type=float, default=1e-4, help="learning rate of the recurrent weights")
    args = p.parse_args(argv)
    em = make_emitter(args, "sparse_train")
    q = args.quick
    n_e = args.n_e or (32 if q else 100)
    T = args.duration or (20.0 if q else 40.0)
    epochs = args.epochs or (6 if q else 30)

    import torch

    from spikescan.runtime.sparse.adjoint import simulate_adjoint
    from spikescan.runtime.sparse.autodiff import simulate
    from spikescan.runtime.sparse.reference import run_reference
    from spikescan.runtime.sparse.train import (SparseSpikeNet, example_model, example_readout, fit_spike_times,
                                                perturbed_teacher, van_rossum)

    model = example_model(n_e=n_e, n_i=max(1, n_e // 4), k=args.k, seed=args.seed)
    student = SparseSpikeNet(model, 1, readout_neuron=example_readout(), readout_init=(0.1, 0.07), seed=args.seed + 2)
    teacher = perturbed_teacher(student, weight_noise=0.2, readout_noise=0.5, seed=args.seed + 1)
    with torch.no_grad():
        out_t = teacher(T)
    target = out_t.readout_times(0)
    em.emit(kind="setup", neurons=model.n, synapses=model.n_synapses, k=args.k, duration_ms=T,
            target_ms=[round(float(t), 4) for t in target], teacher_network_spikes=len(out_t.network))

    # timings of the network alone (loss: a smooth function of every spike time): autograd
    # (autodiff.py) and the hand-written adjoint (adjoint.py) against the O(N) reference loop
    def net_loss(sp):
        return torch.cos(sp.times / 3.0).sum()

    rec = {}
    for name, run in (("autograd", simulate), ("adjoint", simulate_adjoint)):
        ws = [w.detach().clone().requires_grad_() for w in student.weights]
        t0 = time.perf_counter()
        sp = run(model, T, ws)
        fwd = time.perf_counter() - t0
        t0 = time.perf_counter()
        net_loss(sp).backward()
        rec[name] = (fwd, time.perf_counter() - t0, torch.cat([w.grad.reshape(-1) for w in ws]), len(sp))
    t0 = time.perf_counter()
    ref = run_reference(model, T)
    ref_s = time.perf_counter() - t0
    ga, gj = rec["autograd"][2], rec["adjoint"][2]
    S = rec["adjoint"][3]
    em.emit(kind="timing", neurons=model.n, network_spikes=S, reference_forward_s=ref_s,
            **{f"{k}_{w}_s": v[i] for k, v in rec.items() for i, w in ((0, "forward"), (1, "backward"))},
            adjoint_backward_ms_per_spike=1e3 * rec["adjoint"][1] / max(S, 1),
            autograd_backward_ms_per_spike=1e3 * rec["autograd"][1] / max(S, 1),
            backward_speedup=rec["autograd"][1] / rec["adjoint"][1], same_spikes=len(ref) == S,
            adjoint_vs_autograd_rel=float((ga - gj).abs().max() / ga.abs().max()))

    out = student(T)
    loss = van_rossum(out.readout_times(0), target, 5.0)
    loss.backward()

    # gradient check along one random direction of all learnable tensors
    params = list(student.parameters())
    grads = [p.grad.clone() for p in params]
    g = torch.Generator().manual_seed(args.seed + 99)
    vs = [torch.randn(p.shape, generator=g, dtype=p.dtype) for p in params]
    key, counts = out.network.order_key(), out.counts.tolist()
    h = 1e-6

    def f(s):
        with torch.no_grad():
            for p, v in zip(params, vs):
                p.add_(s * v)
            o = student(T)
            for p, v in zip(params, vs):
                p.sub_(s * v)
        same = o.network.order_key() == key and o.counts.tolist() == counts
        return float(van_rossum(o.readout_times(0), target, 5.0)), same

    (fp, sp), (fm, sm) = f(h), f(-h)
    fd = (fp - fm) / (2 * h)
    ad = sum(float((gr * v).sum()) for gr, v in zip(grads, vs))
    em.emit(kind="gradcheck", backward=student.backward_kind, gradient=ad, finite_difference=fd, rel_error=abs(ad - fd) / max(abs(fd), 1e-300),
            same_event_order=bool(sp and sm), h=h)
    student.zero_grad()

    t0 = time.perf_counter()
    hist = fit_spike_times(student, target, T, epochs=epochs, lr=args.lr, weight_lr=args.weight_lr, tau=5.0,
                           callback=lambda ep, l, o: em.emit(kind="epoch", epoch=ep, loss=l,
                                                             readout_ms=[round(float(t), 4) for t in o.readout_times(0).detach()],
                                                             network_spikes=len(o.network),
                                                             wall_s=time.perf_counter() - t0))
    em.emit(kind="fit", epochs=epochs, first_loss=hist.losses[0], last_loss=hist.losses[-1],
            best_loss=min(hist.losses), ratio=hist.losses[-1] / hist.losses[0], wall_s=time.perf_counter() - t0)
    return 0


if __name__ == "__main__":
    sys.exit(main())
