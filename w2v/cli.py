"""``otto-train``: train a model, export/import word2vec C formats, build the neighbour index.

``otto-train [flags] DATASET MODEL_DIR [flags]`` is short for ``otto-train train ...``: anything
that does not start with a subcommand name (or ``-h``/``--help``) is a ``train`` command line.
"""
from __future__ import annotations

import sys

from data_prep.command import ArgumentParser, run_command

SUBCOMMANDS = ("train", "export", "import", "index")


def build_parser() -> ArgumentParser:
    from . import index, interchange, trainer

    parser = ArgumentParser(
        prog="otto-train",
        description="Train skip-gram negative-sampling Word2Vec on session data, and work with the model directory. "
                    "'otto-train [flags] DATASET MODEL_DIR' is short for 'otto-train train [flags] DATASET MODEL_DIR'.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    trainer.register(sub)
    interchange.register(sub)
    index.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] not in SUBCOMMANDS and argv[0] not in ("-h", "--help"):
        argv.insert(0, "train")
    return run_command(build_parser(), argv)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
