"""The one way every ``otto-*`` CLI parses its arguments, runs a command and reports errors.

Error style, the same for every command: one line on stderr, ``PROG: error: --flag: reason`` for
a bad argument, an output path that overlaps an input included (exit status 2, no usage dump:
``PROG --help`` shows the usage) and
``PROG: error: reason`` naming the file, line or field for a failure while working (exit
status 1). ``PROG`` is the command as typed, e.g. ``otto-eval run``.
"""
from __future__ import annotations

import argparse
import re
import sys

from .atomic import OutputPathError


class UsageError(ValueError):
    """A bad argument found after parsing (e.g. by a config dataclass): exit status 2."""


def _flag_message(message: str) -> str:
    """argparse's ``argument -k/--k: reason`` -> ``--k: reason`` (the long spelling)."""
    m = re.match(r"argument ([^:]+): ", message)
    if not m:
        return message
    names = m.group(1).split("/")
    longs = [n for n in names if n.startswith("--")]
    return f"{(longs or names)[-1]}: {message[m.end():]}"


class ArgumentParser(argparse.ArgumentParser):
    """``argparse.ArgumentParser`` whose errors are one line ``PROG: error: --flag: reason``, exit 2.

    Sub-parsers made by ``add_subparsers`` inherit the class, so every subcommand reports alike.
    """

    def error(self, message: str):  # argparse's documented override point
        self.exit(2, f"{self.prog}: error: {_flag_message(message)}\n")


def run_command(parser: argparse.ArgumentParser, argv: list[str] | None) -> int:
    """Parse ``argv`` and run the chosen subcommand's ``func``; the one error policy of every CLI.

    ``UsageError`` (a bad argument found after parsing) and ``OutputPathError`` (an output path
    that is, contains or lies inside an input) exit with status 2 (``SystemExit``, as argparse does
    for the errors it finds); other user errors (``ValueError``/``OSError``, whose
    messages name the file, line or field) return 1; both print one line
    ``PROG COMMAND: error: ...``. Ctrl-C returns 130. Outputs are written atomically, so
    none of these leaves anything half-written behind.
    """
    args = parser.parse_args(argv)
    prog = f"{parser.prog} {args.command}" if getattr(args, "command", None) else parser.prog
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print(f"{prog}: interrupted; no output was left behind", file=sys.stderr)
        return 130
    except (UsageError, OutputPathError) as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    except (ValueError, OSError) as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return 1


def _int_from(text: str, lo: int, expected: str) -> int:
    """``text`` as an integer >= ``lo`` (``64_000`` and ``0x100`` accepted), else an argparse
    error ``expected <expected>, got ...``."""
    try:
        value = int(text.replace("_", ""), 0)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}") from None
    if value < lo:
        raise argparse.ArgumentTypeError(f"expected {expected}, got {value}")
    return value


def positive_int(text: str) -> int:
    """argparse type for counts and sizes: an integer >= 1 (``64_000`` and ``0x100`` accepted)."""
    return _int_from(text, 1, "a positive integer")


def int_at_least(lo: int):
    """argparse type: an integer >= ``lo``."""
    def parse(text: str) -> int:
        return _int_from(text, lo, f"an integer >= {lo}")
    parse.__name__ = f"int_at_least_{lo}"
    return parse
