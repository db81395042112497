"""The SHD-like network in each discrete-time framework at dt = 1 ms (run by bench/peer_runner.py).

Network, the same as spikescan's (bench/shd_step.py): 700 inputs -> H current-based LIF
(dv/dt = (i - v)/tau_m, di/dt = -i/tau_s, an input jumps i by w; tau_m 20 ms, tau_s 5 ms,
threshold 1, reset to 0) -> 20 leaky integrators with the same synaptic current (no threshold);
loss = cross-entropy of each readout's max potential over time. The weights are spikescan's
W1 [700, H] and W2 [H, 20], rescaled only where a framework writes the equations in other units.
Each framework runs its own modules, its own discretisation and its own default surrogate gradient:

- snnTorch: `snn.Synaptic` (alpha = exp(-dt/tau_s), beta = exp(-dt/tau_m), reset "zero") and a
  `snn.Synaptic` readout with reset "none"; snnTorch writes mem = beta mem + syn, so the weights
  carry (1 - beta); surrogate: its default (ATan).
- Norse: `LIF` and `LI` cells in seconds (tau_*_inv = 1/tau, dt = 1e-3 s), forward-Euler decay;
  surrogate: its default (SuperSpike).
- SpikingJelly: `NonSpikingLIFNode(tau_s)` as the synaptic filter (i += (x - i)/tau_s, so the
  weights carry tau_s/dt), `LIFNode(tau_m, decay_input=True)`, and the readout filter +
  `NonSpikingLIFNode(tau_m, decode="max-mem")`; multi-step mode; surrogate: its
  default (Sigmoid).
- torch-loop: a hand-written PyTorch loop with the exact decay factors, the same update order as
  snnTorch, and a fast-sigmoid (SuperSpike, scale 10) surrogate.

Every one computes the input current of all steps with one matmul ([T, B, 700] @ W1) before its
time loop, as their tutorials do. Hidden firing rates differ between frameworks (update order,
Euler against exact decay): the records carry each one's rate. The cost of a dense time-stepped
step does not depend on the rate.

Builders return step(x [T, B, 700], labels, backward) -> (loss, hidden spikes per neuron).
"""

from __future__ import annotations

import math

import torch

TAU_M, TAU_S, DT = 20.0, 5.0, 1.0  # ms


def _loss(v_max: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.cross_entropy(v_max, labels)


def _linear(W: torch.Tensor, scale: float, device, dtype) -> torch.nn.Linear:
    fc = torch.nn.Linear(W.shape[0], W.shape[1], bias=False).to(device=device, dtype=dtype)
    with torch.no_grad():
        fc.weight.copy_(W.T * scale)
    return fc


def build_snntorch(W1, W2, device, dtype):
    import snntorch as snn

    alpha, beta = math.exp(-DT / TAU_S), math.exp(-DT / TAU_M)
    fc1, fc2 = _linear(W1, 1 - beta, device, dtype), _linear(W2, 1 - beta, device, dtype)
    lif = snn.Synaptic(alpha=alpha, beta=beta, threshold=1.0, reset_mechanism="zero").to(device, dtype)
    out = snn.Synaptic(alpha=alpha, beta=beta, reset_mechanism="none").to(device, dtype)

    def step(x, labels, backward):
        fc1.zero_grad(set_to_none=True)
        fc2.zero_grad(set_to_none=True)
        with torch.set_grad_enabled(backward):
            B = x.shape[1]
            syn = torch.zeros(B, W1.shape[1], device=device, dtype=dtype)
            mem = torch.zeros_like(syn)
            cur1 = fc1(x)
            spks = []
            for t in range(x.shape[0]):
                spk, syn, mem = lif(cur1[t], syn, mem)
                spks.append(spk)
            spk_seq = torch.stack(spks).to(dtype)  # snnTorch's spikes are float32
            cur2 = fc2(spk_seq)
            syn2 = torch.zeros(B, W2.shape[1], device=device, dtype=dtype)
            mem2 = torch.zeros_like(syn2)
            vs = []
            for t in range(x.shape[0]):
                _, syn2, mem2 = out(cur2[t], syn2, mem2)
                vs.append(mem2)
            loss = _loss(torch.stack(vs).max(0).values, labels)
            if backward:
                loss.backward()
        return loss.detach(), float(spk_seq.detach().sum()) / (B * W1.shape[1])

    return step


def build_norse(W1, W2, device, dtype):
    import norse.torch as nt

    fc1, fc2 = _linear(W1, 1.0, device, dtype), _linear(W2, 1.0, device, dtype)
    f = lambda v: torch.tensor(v, dtype=dtype, device=device)  # noqa: E731
    lif = nt.LIF(p=nt.LIFParameters(tau_syn_inv=f(1000.0 / TAU_S), tau_mem_inv=f(1000.0 / TAU_M),
                                    v_th=f(1.0), v_reset=f(0.0), v_leak=f(0.0)), dt=DT / 1000.0)
    li = nt.LI(p=nt.LIParameters(tau_syn_inv=f(1000.0 / TAU_S), tau_mem_inv=f(1000.0 / TAU_M),
                                 v_leak=f(0.0)), dt=DT / 1000.0)

    def step(x, labels, backward):
        fc1.zero_grad(set_to_none=True)
        fc2.zero_grad(set_to_none=True)
        with torch.set_grad_enabled(backward):
            z, _ = lif(fc1(x))
            v, _ = li(fc2(z))
            loss = _loss(v.max(0).values, labels)
            if backward:
                loss.backward()
        return loss.detach(), float(z.detach().sum()) / (x.shape[1] * W1.shape[1])

    return step


def build_spikingjelly(W1, W2, device, dtype):
    from spikingjelly.activation_based import functional, neuron

    # NonSpikingLIFNode(tau) integrates i += (x - i)/tau: with x = tau_s/dt * (input W) this is
    # i = (1 - dt/tau_s) i + input W, the synaptic current jumping by w
    k = TAU_S / DT
    fc1, fc2 = _linear(W1, k, device, dtype), _linear(W2, k, device, dtype)
    syn1 = neuron.NonSpikingLIFNode(tau=TAU_S / DT)
    lif = neuron.LIFNode(tau=TAU_M / DT, decay_input=True, v_threshold=1.0, v_reset=0.0,
                         step_mode="m")
    syn2 = neuron.NonSpikingLIFNode(tau=TAU_S / DT)
    ro = neuron.NonSpikingLIFNode(tau=TAU_M / DT, decode="max-mem")
    net = torch.nn.ModuleList([fc1, syn1, lif, fc2, syn2, ro]).to(device=device, dtype=dtype)

    def step(x, labels, backward):
        net.zero_grad(set_to_none=True)
        functional.reset_net(net)
        with torch.set_grad_enabled(backward):
            h = lif(torch.stack(syn1(fc1(x))))
            v_max = ro(torch.stack(syn2(fc2(h))))
            loss = _loss(v_max, labels)
            if backward:
                loss.backward()
        return loss.detach(), float(h.detach().sum()) / (x.shape[1] * W1.shape[1])

    return step


class _SuperSpike(torch.autograd.Function):
    """Heaviside forward, fast-sigmoid derivative 1 / (1 + 10 |u|)^2 backward."""

    @staticmethod
    def forward(ctx, u):
        ctx.save_for_backward(u)
        return (u >= 0).to(u.dtype)

    @staticmethod
    def backward(ctx, g):
        (u,) = ctx.saved_tensors
        return g / (1.0 + 10.0 * u.abs()) ** 2


def build_torch_loop(W1, W2, device, dtype):
    alpha, beta = math.exp(-DT / TAU_S), math.exp(-DT / TAU_M)
    w1 = W1.to(device=device, dtype=dtype).clone().requires_grad_(True)
    w2 = W2.to(device=device, dtype=dtype).clone().requires_grad_(True)

    def step(x, labels, backward):
        w1.grad = w2.grad = None
        with torch.set_grad_enabled(backward):
            B, H = x.shape[1], w1.shape[1]
            cur = x @ w1
            i = torch.zeros(B, H, device=device, dtype=dtype)
            v = torch.zeros_like(i)
            spks = []
            for t in range(x.shape[0]):
                i = alpha * i + cur[t]
                v = beta * v + (1 - beta) * i
                s = _SuperSpike.apply(v - 1.0)
                v = v * (1.0 - s)
                spks.append(s)
            spk = torch.stack(spks)
            cur2 = spk @ w2
            i2 = torch.zeros(B, w2.shape[1], device=device, dtype=dtype)
            v2 = torch.zeros_like(i2)
            v_max = torch.full_like(i2, -math.inf)
            for t in range(x.shape[0]):
                i2 = alpha * i2 + cur2[t]
                v2 = beta * v2 + (1 - beta) * i2
                v_max = torch.maximum(v_max, v2)
            loss = _loss(v_max, labels)
            if backward:
                loss.backward()
        return loss.detach(), float(spk.detach().sum()) / (B * H)

    return step


FRAMEWORKS = {"snntorch": build_snntorch, "norse": build_norse,
              "spikingjelly": build_spikingjelly, "torch-loop": build_torch_loop}
# the module whose presence and version say whether a framework can run (None: torch itself)
MODULE = {"snntorch": "snntorch", "norse": "norse", "spikingjelly": "spikingjelly", "torch-loop": None}
