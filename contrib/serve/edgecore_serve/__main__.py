"""``python -m edgecore_serve MODEL ...``: the same as ``edgecore serve MODEL ...``."""

from __future__ import annotations

import argparse
import logging
import sys

from edgecore.errors import EdgecoreError

from edgecore_serve.cli import register


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m edgecore_serve")
    serve = register(parser.add_subparsers(dest="command"))
    args = serve.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        return args.func(args)
    except EdgecoreError as exc:
        print(f"edgecore serve: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
