"""Command-line flags derived from a configuration dataclass: every knob declared once.

A parameter dataclass (``W2VConfig``, ``ServerConfig``, ``CovisitParams``, ``SplitParams``, …) is
the one owner of each knob's name, default, help text and validation; this module turns it into
argparse flags and back:

- **name**: field ``max_sentence_len`` is flag ``--max-sentence-len`` (with an optional prefix,
  e.g. ``--ne-min-len`` for field ``min_len`` under ``prefix="ne-"``).
- **help**: the class docstring, one entry per field, in the form::

      field_name   what it is; continuation lines are indented
                   further than the field name.

  Every exposed field must have an entry (a missing one raises ``TypeError`` when the parser is
  built, so a test catches it). ``(default: X)`` is appended once, rendered as the flag takes it
  (``1,3,6`` for a tuple, ``0.001`` for a float); a field whose default is ``None`` or computed at
  run time (``default_factory``) states its default in its own entry, as ``(default: …)``.
- **type**: from the annotation: ``int``, ``float``, ``str``, ``bool`` (``--flag`` and
  ``--no-flag``, so a flag can undo a preset), ``X | None``, ``tuple`` (comma-separated, of
  the default's element type). ``FLAG_CHOICES = {"field": (...)}`` on the class gives choices.
- **default and validation**: argparse stores ``None`` for a flag that was not given, so
  :func:`config_from_args` can layer ``class defaults <- base <- flags given <- values the
  command fixes``. ``base`` is where a named preset goes: a ``--preset NAME`` flag passes
  ``base=PRESETS[NAME]``, and any flag given still wins over the preset. The dataclass's own
  ``__post_init__`` validates the result; its ``"field: reason"`` messages come back as
  ``"--flag: reason"`` usage errors (exit status 2), before any work starts.
"""
from __future__ import annotations

import argparse
import dataclasses
import inspect
import math
import re
import types
import typing

from .command import UsageError, positive_int

__all__ = ["add_config_flags", "add_run_flags", "config_from_args", "field_help", "flag_name", "format_default"]


def flag_name(field: str, prefix: str = "") -> str:
    """``--prefix-field-name`` for a dataclass field."""
    return "--" + prefix + field.replace("_", "-")


def _dest(field: str, prefix: str) -> str:
    return (prefix + field).replace("-", "_")


def field_help(cls) -> dict[str, str]:
    """field name -> its entry in the class docstring (continuation lines joined)."""
    names = {f.name for f in dataclasses.fields(cls)}
    doc = inspect.cleandoc(cls.__doc__ or "")
    out: dict[str, str] = {}
    current = None
    for line in doc.splitlines():
        word = line.split(maxsplit=1)
        if line[:1].strip() and word and word[0] in names and len(word) == 2:
            current = word[0]
            out[current] = word[1].strip()
        elif current and line[:1] == " " and line.strip():
            out[current] += " " + line.strip()
        else:
            current = None
    return {k: v[:-1] if v.endswith(".") else v for k, v in out.items()}


def _num(x) -> str:
    if isinstance(x, bool):
        return "true" if x else "false"
    if isinstance(x, float):
        return str(int(x)) if x.is_integer() and abs(x) < 1e15 else repr(x)
    return str(x)


def format_default(value) -> str:
    """A default as the flag takes it: ``1,3,6`` for a tuple, ``0.001`` for a float."""
    if isinstance(value, (tuple, list)):
        return ",".join(_num(x) for x in value)
    return _num(value)


def _base_type(hint):
    """``int | None`` -> ``(int, True)``; ``int`` -> ``(int, False)``."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        if len(args) == 1:
            return _base_type(args[0])[0], True
    if origin is tuple:
        return tuple, False
    return hint, False


def _int(text: str) -> int:
    try:
        return int(text.replace("_", ""), 0)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None


def _float(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        v = math.nan
    if not math.isfinite(v):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
    return v


def _tuple_of(elem, n: int):
    conv = _float if elem is float else _int

    def parse(text: str) -> tuple:
        parts = [p.strip() for p in text.split(",")]
        if len(parts) != n:
            raise argparse.ArgumentTypeError(f"expected {n} comma-separated numbers, got {text!r}")
        try:
            return tuple(conv(p) for p in parts)
        except argparse.ArgumentTypeError:
            raise argparse.ArgumentTypeError(f"expected {n} comma-separated numbers, got {text!r}") from None

    return parse


def _escape(text: str) -> str:
    return text.replace("%", "%%")


def add_config_flags(parser, cls, *, prefix: str = "", only=None, exclude=(), defaults: dict | None = None,
                     metavars: dict | None = None) -> list[str]:
    """Add one flag per field of dataclass ``cls`` to ``parser`` (or an argument group).

    ``only``/``exclude`` choose fields; ``defaults`` overrides the *shown* default of a field (for
    a command that fixes it differently, e.g. a shared ``--seed``). Returns the field names added.
    """
    helps = field_help(cls)
    hints = typing.get_type_hints(cls)
    choices = getattr(cls, "FLAG_CHOICES", {})
    metavars = metavars or {}
    added = []
    for f in dataclasses.fields(cls):
        if (only is not None and f.name not in only) or f.name in exclude:
            continue
        if f.name not in helps:
            raise TypeError(f"{cls.__name__}.{f.name}: no help entry in the class docstring")
        text = helps[f.name]
        factory = f.default is dataclasses.MISSING
        default = (defaults or {}).get(f.name, None if factory else f.default)
        flag, dest = flag_name(f.name, prefix), _dest(f.name, prefix)
        typ, optional = _base_type(hints[f.name])
        if (factory or default is None) and "(default" not in text:
            raise TypeError(f"{cls.__name__}.{f.name}: a None or computed default must be stated in its "
                            "docstring entry as '(default: ...)'")
        if typ is bool:
            # both spellings, --x and --no-x, so a flag can also undo what a preset turned on
            parser.add_argument(flag, dest=dest, action=argparse.BooleanOptionalAction, default=None,
                                help=_escape(f"{text} (default: {'on' if default else 'off'})"))
            added.append(f.name)
            continue
        kw: dict = {"dest": dest, "default": None}
        if typ is tuple:
            elem = float if any(isinstance(x, float) for x in default) else int
            kw["type"] = _tuple_of(elem, len(default))
            kw["metavar"] = metavars.get(f.name, ",".join(["X" if elem is float else "N"] * len(default)))
        elif typ is int:
            kw["type"] = _int
            kw["metavar"] = metavars.get(f.name, "N")
        elif typ is float:
            kw["type"] = _float
            kw["metavar"] = metavars.get(f.name, "X")
        elif f.name in choices:
            kw["choices"] = tuple(choices[f.name])
            kw["metavar"] = "|".join(choices[f.name])
        else:
            kw["metavar"] = metavars.get(f.name, f.name.upper())
        if "(default" not in text:
            text = f"{text} (default: {format_default(default)})"
        parser.add_argument(flag, help=_escape(text), **kw)
        added.append(f.name)
    return added


def config_from_args(cls, args: argparse.Namespace, *, prefix: str = "", base: dict | None = None, **fixed):
    """Build ``cls`` from the flags :func:`add_config_flags` added.

    Layers, later wins: the class defaults, ``base`` (e.g. a preset's values), every flag the user
    gave, then ``fixed`` (values the command sets itself, e.g. from its own ``--seed``; a field in
    ``fixed`` is never read from ``args``). A ``ValueError`` of the dataclass's
    validation (``"field: reason"``) is raised as ``UsageError("--flag: reason")``.
    """
    kw = dict(base or {})
    for f in dataclasses.fields(cls):
        value = getattr(args, _dest(f.name, prefix), None)
        if value is not None and f.name not in fixed:
            kw[f.name] = value
    kw.update(fixed)
    try:
        return cls(**kw)
    except ValueError as exc:
        msg = str(exc)
        m = re.match(r"([a-z_]+): ", msg)
        if m and m.group(1) in {f.name for f in dataclasses.fields(cls)}:
            raise UsageError(f"{flag_name(m.group(1), prefix)}: {msg[m.end():]}") from None
        raise UsageError(msg) from None


def add_run_flags(parser, *, overwrite: str | None = None, quiet: bool = False, threads: str | None = None) -> None:
    """The flags most commands share, spelled once: ``--overwrite`` (``overwrite`` names what is
    replaced, e.g. ``"OUT_DIR"``), ``--quiet``, and ``--threads N`` (``threads`` says what the
    threads do, e.g. ``"parser threads"``; ``args.threads`` is None when not given)."""
    if threads is not None:
        parser.add_argument("--threads", type=positive_int, default=None, metavar="N",
                            help=f"{threads} (default: the CPUs this process may use)")
    if overwrite is not None:
        parser.add_argument("--overwrite", action="store_true",
                            help=f"replace {overwrite} if it exists, only once the new one is complete "
                                 "(on failure the old one is kept)")
    if quiet:
        parser.add_argument("--quiet", action="store_true",
                            help="no progress or summary on stderr (errors are still printed)")
