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

    from spikescan.compiler.backends.cpu_jit import memref_of

    with FakeTensorMode():
        fake = torch.zeros(3, dtype=torch.float64)
    with pytest.raises(RuntimeError, match="torch.compile"):
        memref_of(fake)
    assert memref_of(torch.zeros(3, dtype=torch.float64)).sizes[0] == 3
