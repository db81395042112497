"""`spikescan check FILE...`: parse and check .snn files, then run the compiler's analysis
(linear system, propagator structure: E060-E064), print diagnostics to stderr.

Exit code 0 when every file is clean, 1 when any file has an error (warnings alone do not
fail). Never imports torch: the analysis needs sympy only. The language package itself never
imports the compiler (data flows dsl -> compiler); this CLI module is the one place that uses
both, and imports the compiler lazily, only for files that passed the language checks.
"""

from __future__ import annotations

import argparse
import sys

from .diagnostics import DiagnosticError, plural, render_all
from .loader import _check_file


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("paths", nargs="+", metavar="FILE", help=".snn files to check")
    parser.add_argument("--no-analysis", action="store_true",
                        help="language checks only: skip the compiler's analysis (E060-E064)")


def _analysis_errors(module, sources) -> list:
    """Diagnostics of the compiler's analysis of a module that passed the language checks."""
    from spikescan.compiler.driver import analyze_module

    try:
        analyze_module(module, sources)
    except DiagnosticError as e:
        return e.diagnostics
    return []


def run(args: argparse.Namespace) -> int:
    status = 0
    for path in args.paths:
        module, diags, sources = _check_file(path)
        clean = module is not None and not any(d.is_error for d in diags)
        if clean and not getattr(args, "no_analysis", False):
            diags = diags + _analysis_errors(module, sources)
        if diags:
            print(render_all(diags, sources), file=sys.stderr)
        n = sum(d.is_error for d in diags)
        if module is None or n:
            status = 1
            print(f"failed: {path} ({plural(n, 'error')})", file=sys.stderr)
        else:
            print(f"ok: {path} ({plural(len(module.neurons) + len(module.discrete_neurons), 'neuron')}, "
                  f"{plural(len(module.networks), 'network')})")
    return status
