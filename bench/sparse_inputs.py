"""Sparse networks with inputs (docs/sparse.md, "Networks with inputs"): the compiled engine with
input events merged into its queue against the O(N) reference loop in the same run, and the
autodiff loop's forward and backward. Prints JSON lines.

    python bench/sparse_inputs.py [--quick]

Figures from a loaded shared machine are smoke values only: measure on a quiet one.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from spikescan.runtime.sparse.engine_inputs import compiled_inputs, run_compiled_inputs
from spikescan.runtime.sparse.module import SparseInputNet
from spikescan.runtime.sparse.reference import run_reference

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="short horizons (smoke run)")
    args = ap.parse_args()
    T = 20.0 if args.quick else 200.0
    net = SparseInputNet(ROOT / "models" / "sparse_input.snn", duration=T)
    m = net.model
    rng = np.random.default_rng(0)
    n_ev = int(20 * T)  # 20 input events per ms over the 100 channels (200 Hz per channel)
    t, ch = rng.uniform(0, T, n_ev), rng.integers(0, m.n_in, n_ev)
    compiled_inputs(m.neuron)  # compile outside the timing
    t0 = time.perf_counter()
    fast = run_compiled_inputs(m, T, t, ch)
    t_fast = time.perf_counter() - t0
    t0 = time.perf_counter()
    ref = run_reference(m, T, inputs=(t, ch))
    t_ref = time.perf_counter() - t0
    same = len(fast) == len(ref) and np.array_equal(fast.neurons, ref.neurons)
    print(json.dumps({"bench": "sparse_inputs_forward", "neurons": m.n, "inputs": m.n_in,
                      "synapses": m.n_synapses, "input_events": n_ev, "duration_ms": T,
                      "spikes": len(fast), "compiled_s": round(t_fast, 4), "reference_s": round(t_ref, 4),
                      "speedup": round(t_ref / max(t_fast, 1e-9), 1), "same_spikes": bool(same)}))
    # the autodiff loop (gradients) on a shorter horizon
    Tg = 5.0 if args.quick else 20.0
    keep = t < Tg
    tt = torch.from_numpy(t[keep]).unsqueeze(0).requires_grad_()
    cc = torch.from_numpy(ch[keep]).unsqueeze(0)
    t0 = time.perf_counter()
    out = net(tt, cc, duration=Tg)
    t_fw = time.perf_counter() - t0
    t0 = time.perf_counter()
    torch.cos(out[0].times / 3.0).sum().backward()
    t_bw = time.perf_counter() - t0
    print(json.dumps({"bench": "sparse_inputs_autodiff", "neurons": m.n, "duration_ms": Tg,
                      "input_events": int(keep.sum()), "spikes": len(out[0]), "forward_s": round(t_fw, 3),
                      "backward_s": round(t_bw, 3)}))


if __name__ == "__main__":
    main()
