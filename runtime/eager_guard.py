"""`run_eagerly`: torch.compiler.disable without importing torch._dynamo.

The forward of a network hands tensor memory to JIT-compiled code through ctypes, which Dynamo
must never trace (traced, it passed descriptors of no real memory and crashed the process).
`@torch.compiler.disable` guarantees that, but applying it imports torch._dynamo (and through it
triton and much of torch.distributed): 1.5-4 s on every `spikescan` command, and triton loaded
before a script can set TRITON_INTERPRET.

This decorator does what torch._dynamo.disable(fn) does (torch/_dynamo/eval_frame.py,
DisableContext) with the three hooks of torch's C extension, which is loaded with torch anyway:

- the wrapper carries `_torchdynamo_disable`: a Dynamo tracing a caller graph-breaks at the call
  instead of inlining it (symbolic_convert.check_inlineable, SkipFunctionVariable);
- the wrapper's code is marked SKIP (what torch._dynamo.skip_code does): called from the caller's
  resumed bytecode, Dynamo runs its frame as it is;
- the wrapper removes Dynamo's frame callback while `fn` runs (set_eval_frame(None), restored
  after), so nothing `fn` calls is traced either.

So it holds whether torch.compile is imported before or after spikescan. On a torch without
these hooks it falls back to torch.compiler.disable (correct, only slower to import).
tests/runtime/test_torch_compile.py checks both the guarantee and the import.
"""

from __future__ import annotations

import functools
from typing import Callable, TypeVar

import torch

F = TypeVar("F", bound=Callable)


def run_eagerly(fn: F) -> F:
    """fn runs uncompiled under torch.compile (graph break at its call), like
    torch.compiler.disable(fn), without importing torch._dynamo."""
    try:
        from torch._C._dynamo.eval_frame import (
            _FrameAction, _FrameExecStrategy, set_code_exec_strategy, set_eval_frame)
    except ImportError:  # another torch build: its public decorator
        return torch.compiler.disable(fn)

    @functools.wraps(fn)
    def eager(*args, **kwargs):
        prior = set_eval_frame(None)
        try:
            return fn(*args, **kwargs)
        finally:
            set_eval_frame(prior)

    set_code_exec_strategy(eager.__code__, _FrameExecStrategy(_FrameAction.SKIP, _FrameAction.DEFAULT))
    # the attributes torch._dynamo.disable sets on its wrapper (Dynamo reads them)
    eager._torchdynamo_disable = True
    eager._torchdynamo_disable_msg = "spikescan: JIT engines run eagerly (ctypes calls on tensor memory)"
    eager._torchdynamo_disable_recursive = True
    eager._torchdynamo_orig_callable = fn
    eager._torchdynamo_wrapper_id = id(eager)
    return eager  # type: ignore[return-value]
