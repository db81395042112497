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
    argv = list(sys.argv[1:] if argv is None else argv)
    chosen = next((a for a in argv if a in SUBCOMMANDS), None)
    parser = build_parser(load_args=chosen)
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    module = importlib.import_module(SUBCOMMANDS[args.command][0])
    try:
        return int(module.run(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
