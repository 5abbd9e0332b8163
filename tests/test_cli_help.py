"""Every console command and subcommand has a working ``--help`` that documents every argument.

The parsers are introspected in process (``build_parser()`` of each package's ``cli`` module);
one subprocess per package checks that ``python -m PACKAGE --help`` exits 0 and lists the
subcommands.
"""
from __future__ import annotations

import argparse
import contextlib
import importlib
import io
import subprocess
import sys

import pytest

# package -> exactly the subcommands its console command offers (None: a single-command CLI)
PACKAGES = {
    "data_prep": ("convert", "export", "synth", "stats"),
    "w2v": ("train", "export", "import", "index"),
    "eval": ("split", "predict", "score", "pairs", "run"),
    "serve": None,
}


def _cli(package: str):
    mod = importlib.import_module(f"{package}.cli")
    return mod, mod.build_parser()


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, tuple[argparse.ArgumentParser, str | None]]:
    """name -> (sub-parser, its one-line help in the command list)."""
    out = {}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {a.dest: a.help for a in action._choices_actions}
            for name, sub in action.choices.items():
                out[name] = (sub, helps.get(name))
    return out


def _undocumented(parser: argparse.ArgumentParser) -> list[str]:
    """Arguments (flags and positionals) of ``parser`` without help text."""
    bad = []
    for action in parser._actions:
        if isinstance(action, (argparse._HelpAction, argparse._SubParsersAction)):
            continue
        text = action.help
        if text is None or text == argparse.SUPPRESS or not str(text).strip():
            bad.append("/".join(action.option_strings) or action.dest)
    return bad


def _help_text(mod, argv: list[str]) -> str:
    """Run the package's ``main(argv)`` in process; ``--help`` must exit 0 and print to stdout."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit) as exc:
        mod.main(argv)
    assert exc.value.code in (0, None), f"{argv}: exit status {exc.value.code}"
    return out.getvalue()


@pytest.mark.parametrize("package", sorted(PACKAGES))
def test_every_argument_has_help(package):
    mod, parser = _cli(package)
    subs = _subparsers(parser)
    assert sorted(subs) == sorted(PACKAGES[package] or ()), f"{package}: subcommands differ"
    problems = {}
    if _undocumented(parser):
        problems[package] = _undocumented(parser)
    for name, (sub, line) in subs.items():
        bad = _undocumented(sub)
        if not line or not str(line).strip():
            bad.append("(no one-line help in the command list)")
        if bad:
            problems[f"{package} {name}"] = bad
    assert problems == {}, f"arguments without help text: {problems}"


@pytest.mark.parametrize("package", sorted(PACKAGES))
def test_help_lists_every_flag(package):
    mod, parser = _cli(package)
    subs = _subparsers(parser)
    targets = [([], parser)] + [([name], sub) for name, (sub, _) in subs.items()]
    for argv, p in targets:
        text = _help_text(mod, argv + ["--help"])
        assert text.strip(), f"{package} {argv}: empty --help"
        for action in p._actions:
            for flag in action.option_strings:
                assert flag in text, f"{package} {' '.join(argv)} --help does not show {flag}"
        for name in (subs if not argv else ()):
            assert name in text, f"{package} --help does not list subcommand {name}"


@pytest.mark.slow
@pytest.mark.parametrize("package", sorted(PACKAGES))
def test_module_help_in_subprocess(package):
    _cli(package)  # the package CLI must import
    proc = subprocess.run([sys.executable, "-m", package, "--help"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.startswith("usage:")
    for name in PACKAGES[package] or ():
        assert name in proc.stdout
    assert "Traceback" not in proc.stderr


def test_checker_flags_undocumented_arguments():
    """The introspection itself: a parser with gaps must be reported, a complete one must not."""
    p = argparse.ArgumentParser(prog="demo")
    p.add_argument("--documented", help="fine")
    p.add_argument("--bare")
    p.add_argument("--hidden", help=argparse.SUPPRESS)
    p.add_argument("path")
    sp = p.add_subparsers(dest="command")
    sp.add_parser("quiet").add_argument("--blank", help="  ")
    sp.add_parser("ok", help="has help").add_argument("--n", help="a number")
    assert _undocumented(p) == ["--bare", "--hidden", "path"]
    subs = _subparsers(p)
    assert subs["quiet"][1] is None and subs["ok"][1] == "has help"
    assert _undocumented(subs["quiet"][0]) == ["--blank"] and _undocumented(subs["ok"][0]) == []
