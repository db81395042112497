"""The .snn language: grammar, parser to the typed AST (dsl/ast.py), semantic checks and
diagnostics. Never imports torch (tests/dsl checks this)."""

from .diagnostics import CODES, Diagnostic, DiagnosticError
from .loader import check_file, check_source, load
from .sym import to_sympy

__all__ = ["CODES", "Diagnostic", "DiagnosticError", "check_file", "check_source", "load",
           "to_sympy"]
