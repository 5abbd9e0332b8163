"""``otto-prep``: convert, export, synth and stats subcommands.

Each subcommand lives with its implementation: a module exposes ``register(subparsers)``,
which adds its parser and sets ``func`` to a function taking the parsed arguments and returning
an exit status. Errors meant for the user are raised as ``ValueError``/``OSError`` subclasses and
printed as one line, never as a traceback.
"""
from __future__ import annotations

import argparse
import sys

from . import reader, stats, synth


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="otto-prep",
        description="Read, write, generate and describe OTTO session data in the columnar dataset format.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    reader.register(sub)
    synth.register(sub)
    stats.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("otto-prep: interrupted; no output was left behind", file=sys.stderr)
        return 130
    except (ValueError, OSError) as exc:
        print(f"otto-prep {args.command}: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
