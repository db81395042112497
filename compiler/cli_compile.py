"""`spikescan compile model.snn [-o DIR] [--emit mlir,triton,cpu] [--dtype f32|f64] [--force]
[--explain]`: compile to the build folder DIR/<hash>/; errors are printed as diagnostics (or one
line when the folder cannot be written), exit status 1."""

from __future__ import annotations

import argparse
import sys


def _emit_list(text: str) -> tuple[str, ...]:
    from .driver import BACKENDS

    items = tuple(x.strip() for x in text.split(",") if x.strip())
    bad = [x for x in items if x not in BACKENDS]
    if bad:
        raise argparse.ArgumentTypeError(f"unknown backend(s) {', '.join(bad)}; choose from {', '.join(BACKENDS)}")
    return items


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", help=".snn file to compile")
    parser.add_argument("-o", "--out", metavar="DIR", default=None,
                        help="cache folder: the build is written to DIR/<hash>/ (a content hash of the "
                             "sources, version and options), whose path the last line prints "
                             "(default DIR: $SPIKESCAN_CACHE, else ./.spikescan-cache)")
    parser.add_argument("--emit", type=_emit_list, default=("mlir", "triton", "cpu"),
                        help="comma-separated backends: mlir,triton,cpu (default all; empty for analysis only)")
    parser.add_argument("--dtype", choices=("f32", "f64"), default="f64", help="floating-point type of the kernels")
    parser.add_argument("--force", action="store_true", help="rebuild even if the cache has this build")
    parser.add_argument("--explain", action="store_true", help="print the analysis of every neuron and network")


def _progress(msg: str) -> None:
    """The driver's progress lines, each once: the build folder is named by the last line only."""
    if not (msg.startswith("wrote ") or msg.startswith("cache hit: ")):
        print(msg)


def run(args) -> int:
    from spikescan.dsl.diagnostics import DiagnosticError, plural

    from .driver import compile_model, load_model
    from .errors import BuildFolderError
    from .explain import explain_network, explain_neuron

    try:
        if args.explain:
            model = load_model(args.file)
            for ir in model.neurons.values():
                print(explain_neuron(ir))
                print()
            for net in model.networks.values():
                print(explain_network(net))
                print()
        model = compile_model(args.file, out_dir=args.out, emit=args.emit, dtype=args.dtype,
                              force=args.force, progress=_progress)
    except DiagnosticError as e:
        print(str(e), file=sys.stderr)
        print(f"{plural(len(e.diagnostics), 'error')}; nothing was compiled", file=sys.stderr)
        return 1
    except BuildFolderError as e:
        print(f"error: {e} (choose another folder with -o DIR)", file=sys.stderr)
        return 1
    print(f"build folder: {model.build_dir}{' (cache hit)' if model.cache_hit else ''}")
    return 0
