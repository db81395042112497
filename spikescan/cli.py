"""The `spikescan` command line. Each subcommand lives in the module of the layer that owns it;
this file only dispatches, importing the module of the chosen subcommand (so `check` never
imports torch)."""

from __future__ import annotations

import argparse
import importlib
import sys

# subcommand -> (module, one-line help). Each module defines `add_arguments(parser)` and `run(args) -> int`.
SUBCOMMANDS = {
    "check": ("spikescan.dsl.cli_check", "parse and check .snn files, print diagnostics"),
    "compile": ("spikescan.compiler.cli_compile", "compile a .snn file to a build folder (MLIR, Triton, CPU JIT)"),
    "train": ("spikescan.runtime.cli_train", "train a compiled network on a dataset"),
    "eval": ("spikescan.runtime.cli_eval", "evaluate a checkpoint on a dataset split"),
    "plot": ("spikescan.runtime.cli_plot", "draw spike rasters of a trained network or a neuron's exact state trace"),
    "report": ("spikescan.runtime.cli_report", "write a one-page summary of a training run (curves, confusion, rates)"),
    "export": ("spikescan.runtime.nir_io.cli_export", "export a .snn network or a trained checkpoint to NIR (--nir out.nir)"),
    "import": ("spikescan.runtime.nir_io.cli_import", "import a NIR graph as a .snn model plus a checkpoint of its weights"),
    "run": ("spikescan.runtime.sparse.cli", "simulate a sparse autonomous network exactly (spikes to .npz, JSON summary)"),
}


def build_parser(load_args: str | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="spikescan",
        description="Compile spiking neural networks written in .snn files and train them exactly in continuous time.",
    )
    from spikescan import __version__

    parser.add_argument("--version", action="version", version=f"spikescan {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module, help_text) in SUBCOMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        if name == load_args:
            importlib.import_module(module).add_arguments(p)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run a subcommand. Expected failures (a bad .snn, bad options, unreadable or unwritable
    paths, corrupt checkpoints, diverged training) print one line (a .snn diagnostic prints as
    `check` shows it) and exit 1; anything else is a bug: a short "internal error" line, and
    the traceback only with SPIKESCAN_DEBUG=1."""
    argv = list(sys.argv[1:] if argv is None else argv)
    chosen = next((a for a in argv if a in SUBCOMMANDS), None)
    parser = build_parser(load_args=chosen)
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    try:
        module = importlib.import_module(SUBCOMMANDS[args.command][0])
        return int(module.run(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # noqa: BLE001 - the one place that turns exceptions into messages
        return _report(e)


# modules whose error classes are user errors; looked up only once loaded, so `check` never
# imports torch to classify an exception
_USER_ERRORS = {
    "spikescan.dsl.diagnostics": ("DiagnosticError",),
    "spikescan.compiler.errors": ("CompileError",),
    "spikescan.runtime.train_guard": ("TrainingDiverged", "TrainingStalled"),
    "spikescan.runtime.data.errors": ("DatasetError",),
    "spikescan.runtime.engines.result": ("SpikeCapExceeded",),
    "spikescan.runtime.engines": ("EngineUnavailable",),
}


def _user_error_types() -> tuple[type, ...]:
    types: list[type] = [OSError, ValueError, NotImplementedError, MemoryError]
    for mod, names in _USER_ERRORS.items():
        m = sys.modules.get(mod)
        types += [getattr(m, n) for n in names if m is not None and hasattr(m, n)]
    return tuple(types)


def _one_line(e: BaseException) -> str:
    if isinstance(e, MemoryError):
        return "out of memory: the model, the batch or the dataset is too large for this machine"
    if isinstance(e, OSError) and e.strerror and e.filename and str(e.filename) not in e.strerror:
        return f"{e.filename}: {e.strerror}"
    text = " ".join(str(e).split()) or type(e).__name__
    return text if not isinstance(e, OSError) or not e.strerror else text.split("] ", 1)[-1]


def _report(e: Exception) -> int:
    diag = sys.modules.get("spikescan.dsl.diagnostics")
    if diag is not None and isinstance(e, diag.DiagnosticError):
        print(diag.render_all(e.diagnostics, e.sources), file=sys.stderr)
        n = sum(d.is_error for d in e.diagnostics)
        print(f"failed: {diag.plural(n, 'error')}", file=sys.stderr)
        return 1
    if isinstance(e, _user_error_types()):
        print(f"error: {_one_line(e)}", file=sys.stderr)
        return 1
    import os

    print(f"internal error: {type(e).__name__}: {' '.join(str(e).split())[:300]} (a bug in spikescan; "
          "run again with SPIKESCAN_DEBUG=1 for the traceback and report it)", file=sys.stderr)
    if os.environ.get("SPIKESCAN_DEBUG") == "1":
        import traceback

        traceback.print_exception(e)
    return 70


if __name__ == "__main__":
    sys.exit(main())
