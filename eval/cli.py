"""`numba-demucs eval ...` subcommands (filled in by the evaluation issue)."""
from __future__ import annotations


def register(subparsers) -> None:
    parser = subparsers.add_parser("eval", help="BSS Eval v4 scores and MUSDB18-HQ runs")
    parser.add_subparsers(dest="eval_command", required=True)
