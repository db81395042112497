"""Compiler errors as dsl Diagnostics: the analysis raises CompileError, the driver collects them
into a spikescan.dsl DiagnosticError so that users see `file:line:col: error[E0xx]` and a hint,
never a Python traceback.

Codes used by the compiler (beyond the dsl's E0xx checks it may repeat defensively):
    E020 non-linear dynamics              E021 threshold not linear in the state
    E022 input jump not linear in weight  E023 reset not affine in the state
    E060 unsupported dynamics (cyclic coupling between state variables, complex/non-triangular A)
    E061 propagator needs an unsupported divided difference (>= 4 distinct-rate path nodes)
    E062 backend failure (MLIR / Triton / CPU JIT generation)
    E063 unsupported network construct
    E064 internal compiler error (a bug, reported as a diagnostic instead of a traceback)
Each is documented with an example in docs/language.md ("Compiler diagnostics") and tested in
tests/compiler/test_diagnostics.py.
"""

from __future__ import annotations

from typing import Optional

from spikescan.dsl.ast import Span
from spikescan.dsl.diagnostics import Diagnostic

COMPILER_CODES = {
    "E060": "unsupported dynamics (cyclic coupling)",
    "E061": "unsupported propagator structure",
    "E062": "backend code generation failed",
    "E063": "unsupported network construct",
    "E064": "internal compiler error",
}


class CompileError(Exception):
    """One diagnostic raised by the analysis."""

    def __init__(self, code: str, message: str, span: Optional[Span], hint: Optional[str] = None):
        self.diagnostic = Diagnostic(code=code, message=message, span=span, hint=hint)
        super().__init__(f"{span}: error[{code}]: {message}" if span else f"error[{code}]: {message}")


class BuildFolderError(OSError):
    """The build folder cannot be written or read back (read-only, full, a file in the way, or
    not a valid build folder): one line for the user, no traceback."""
