"""The ``edgecore`` command line.

Each command lives in its own module with a ``register(subparsers)`` function that adds its parser
and sets ``func(args) -> int``. Exit codes: 0 ok, 1 failure, 2 usage. Every reporting command takes
``--json``.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from typing import Sequence

from edgecore.errors import EdgecoreError

__all__ = ["main", "COMMANDS"]

#: Command modules, in the order ``edgecore --help`` lists them.
COMMANDS: tuple[str, ...] = (
    "edgecore.cli.backends",
    "edgecore.cli.run",
    "edgecore.cli.optimize",
    "edgecore.cli.zoo",
    "edgecore.cli.trace",
    "edgecore.cli.bench",
    "edgecore.cli.tune",
)


def build_parser() -> argparse.ArgumentParser:
    from edgecore import __version__

    parser = argparse.ArgumentParser(prog="edgecore", description="Run ONNX models fast on edge hardware.")
    parser.add_argument("--version", action="version", version=f"edgecore {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="log more (-vv for debug)")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module_name in COMMANDS:
        importlib.import_module(module_name).register(subparsers)
    from edgecore.plugins import get_plugin_manager

    get_plugin_manager().hook.edgecore_cli_commands(subparsers=subparsers)  # e.g. serve, from edgecore-serve
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help(sys.stderr)
        return 2
    logging.basicConfig(
        level=(logging.WARNING, logging.INFO, logging.DEBUG)[min(args.verbose, 2)],
        format="%(levelname)s %(name)s: %(message)s",
    )
    try:
        return int(args.func(args) or 0)
    except EdgecoreError as exc:
        print(f"edgecore: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
