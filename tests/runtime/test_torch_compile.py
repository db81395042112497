"""torch.compile on a SpikingNetwork (issue 17 item 8): it used to trace into the ctypes call of
the JIT engine and crash the process (SIGSEGV, malloc corruption). The forward now runs eagerly
under torch.compile, and the JIT boundary refuses traced tensors with a clear error."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]

SCRIPT = f"""
import torch
from spikescan.runtime.network import SpikingNetwork
net = SpikingNetwork.from_file({str(ROOT / "models" / "yinyang.snn")!r}, engine="auto")
g = torch.Generator().manual_seed(0)
t = torch.rand(4, 5, generator=g, dtype=torch.float64) * 30
c = torch.randint(0, 5, (4, 5), generator=g)
ref = net(t, c, t_end=60.)
out = torch.compile(net)(t, c, t_end=60.)
assert torch.equal(ref.readout, out.readout), (ref.readout, out.readout)
out.readout[torch.isfinite(out.readout)].sum().backward()
print("OK")
"""


def test_torch_compiled_network_runs_and_matches():
    # in a child process: the old failure killed the interpreter
    r = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=600,
                       cwd=ROOT)
    assert r.returncode == 0 and r.stdout.strip().endswith("OK"), r.stderr[-2000:]


def test_jit_boundary_refuses_traced_tensors():
    from torch._subclasses.fake_tensor import FakeTensorMode

    from spikescan.compiler.backends.mlir.cpu_jit import memref_of

    with FakeTensorMode():
        fake = torch.zeros(3, dtype=torch.float64)
    with pytest.raises(RuntimeError, match="torch.compile"):
        memref_of(fake)
    assert memref_of(torch.zeros(3, dtype=torch.float64)).sizes[0] == 3


def test_importing_the_runtime_does_not_import_dynamo_or_triton():
    """@torch.compiler.disable imports torch._dynamo (and triton through it): seconds on every CLI
    call, and triton loaded before TRITON_INTERPRET can be set. run_eagerly avoids both."""
    code = ("import sys, spikescan.runtime.network, spikescan.runtime.psn_network; "
            "print(sorted(m for m in ('torch._dynamo', 'torch._inductor', 'triton') if m in sys.modules))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.strip() == "[]", r.stdout


def test_run_eagerly_is_never_traced():
    """A probe records torch.compiler.is_compiling() inside the decorated method, called from a
    compiled module, from a compiled function that calls the module, and after
    torch._dynamo.reset(); the same probe without the decorator is traced (so it can fail)."""
    from spikescan.runtime.eager_guard import run_eagerly

    seen = []

    class Probe(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = torch.nn.Linear(3, 3)

        def body(self, x):
            seen.append(torch.compiler.is_compiling())
            return self.lin(x) * 2

        @run_eagerly
        def forward(self, x):
            return self.body(x)

    class Traced(Probe):
        def forward(self, x):
            return self.body(x)

    x = torch.randn(2, 3)
    m = Probe()
    ref = m(x)
    assert torch.equal(torch.compile(m, backend="eager")(x), ref)
    assert torch.equal(torch.compile(lambda v: m(v) + 1, backend="eager")(x), ref + 1)
    torch._dynamo.reset()
    assert torch.equal(torch.compile(m, backend="eager")(x), ref)
    assert seen == [False] * 4 and m.forward.__wrapped__.__name__ == "forward"
    seen.clear()
    torch.compile(Traced(), backend="eager")(x)
    assert seen == [True]
