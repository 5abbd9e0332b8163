"""The one way every ``otto-*`` subcommand CLI runs a parsed command and reports errors."""
from __future__ import annotations

import argparse
import sys


def run_command(parser: argparse.ArgumentParser, argv: list[str] | None) -> int:
    """Parse ``argv`` and run the chosen subcommand's ``func``; the one error policy of every CLI.

    User errors (``ValueError``/``OSError``, whose messages name the file, line or field) print one
    line ``PROG COMMAND: error: ...`` and return 1; Ctrl-C returns 130. Outputs are written
    atomically, so neither leaves anything half-written behind.
    """
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print(f"{parser.prog}: interrupted; no output was left behind", file=sys.stderr)
        return 130
    except (ValueError, OSError) as exc:
        print(f"{parser.prog} {args.command}: error: {exc}", file=sys.stderr)
        return 1


def positive_int(text: str) -> int:
    """argparse type for counts and sizes: an integer >= 1 (``64_000`` and ``0x100`` accepted)."""
    try:
        value = int(text.replace("_", ""), 0)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value
