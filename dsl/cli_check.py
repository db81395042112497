"""`spikescan check FILE...`: parse and check .snn files, print diagnostics to stderr.

Exit code 0 when every file is clean, 1 when any file has an error (warnings alone do not
fail). Never imports torch.
"""

from __future__ import annotations

import argparse
import sys

from .diagnostics import render_all
from .loader import _check_file


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("paths", nargs="+", metavar="FILE", help=".snn files to check")


def run(args: argparse.Namespace) -> int:
    status = 0
    for path in args.paths:
        module, diags, sources = _check_file(path)
        if diags:
            print(render_all(diags, sources), file=sys.stderr)
        if module is None or any(d.is_error for d in diags):
            status = 1
            n = sum(d.is_error for d in diags)
            print(f"failed: {path} ({n} error{'s' if n != 1 else ''})", file=sys.stderr)
        else:
            print(f"ok: {path} ({len(module.neurons)} neurons, {len(module.networks)} networks)")
    return status
