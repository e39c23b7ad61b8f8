"""The `numba-demucs` command line: `separate`, `debug` and `eval` subcommands.

Each subcommand family lives next to its code and registers itself here through a
``register(subparsers)`` function, so this file only wires them together.
"""
from __future__ import annotations

import argparse
import sys

from .errors import NumbaDemucsError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="numba-demucs",
        description="Demucs v4 inference with Numba kernels, traceable against PyTorch.",
    )
    subparsers = parser.add_subparsers(dest="command", required=True)

    from . import separate_command
    from .debug import cli as debug_cli
    from .eval import cli as eval_cli

    separate_command.register(subparsers)
    debug_cli.register(subparsers)
    eval_cli.register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except NumbaDemucsError as error:
        print(f"numba-demucs: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("numba-demucs: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
