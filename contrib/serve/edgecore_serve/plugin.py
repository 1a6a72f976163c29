"""Entry point module (group ``edgecore``): adds ``edgecore serve`` to the CLI. Imports nothing heavy."""

from __future__ import annotations

from typing import Any

from edgecore.hookspecs import hookimpl


@hookimpl
def edgecore_cli_commands(subparsers: Any) -> None:
    from edgecore_serve.cli import register

    register(subparsers)
