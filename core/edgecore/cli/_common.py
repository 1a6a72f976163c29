"""Pieces shared by the CLI commands: engine options, JSON output, rich console."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

__all__ = ["add_engine_options", "engine_config", "print_json", "console"]


def add_engine_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--backend", default="auto", help="backend name, or 'auto' for the best available")
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "gpu", "npu"))
    parser.add_argument("--threads", type=int, default=0, help="intra-op threads (0 = runtime default)")
    parser.add_argument(
        "--option", action="append", default=[], metavar="KEY=VALUE", help="backend custom option (repeatable)"
    )


def _parse_options(items: list[str]) -> dict[str, str]:
    options = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise SystemExit(f"edgecore: error: --option expects KEY=VALUE, got {item!r}")
        options[key] = value
    return options


def engine_config(args: argparse.Namespace, **overrides: Any):
    from edgecore.config import EngineConfig

    values = dict(
        backend=args.backend,
        device=args.device,
        num_threads=args.threads,
        custom_options=_parse_options(args.option),
    )
    values.update(overrides)
    return EngineConfig(**values)


def print_json(data: Any) -> None:
    json.dump(data, sys.stdout, indent=2, default=str)
    sys.stdout.write("\n")


def console():
    from rich.console import Console

    return Console()
