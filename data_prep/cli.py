"""``otto-prep``: convert, export, synth and stats subcommands.

Each subcommand lives with its implementation: a module exposes ``register(subparsers)``,
which adds its parser and sets ``func`` to a function taking the parsed arguments and returning
an exit status. Errors meant for the user are raised as ``ValueError``/``OSError`` subclasses and
printed as one line, never as a traceback.
"""
from __future__ import annotations

import sys

from . import reader, stats, synth
from .command import ArgumentParser, run_command


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(
        prog="otto-prep",
        description="Read, write, generate and describe OTTO session data in the columnar dataset format.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    reader.register(sub)
    synth.register(sub)
    stats.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    return run_command(build_parser(), argv)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
