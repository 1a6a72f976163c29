"""``edgecore zoo list`` and ``edgecore zoo export NAME -o FILE.onnx``: the model zoo from the shell.

``list`` shows every registered model (built-in and from plugins) with its task and parameter count;
``--json`` prints the same as a JSON list. ``export`` builds a model with seeded weights (through the
on-disk cache) and writes it as one ONNX file. Exit codes: 0 ok, 1 failure (unknown model, unwritable
file), 2 usage.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

__all__ = ["register", "run_list", "run_export"]

ZOO_PREFIX = "zoo:"


def register(subparsers: Any) -> None:
    """Add the ``zoo`` command (``list``, ``export``) to an argparse subparsers object."""
    zoo = subparsers.add_parser(
        "zoo",
        help="list the model zoo or export one of its models",
        description=__doc__.split("\n\n")[0],
    )
    commands = zoo.add_subparsers(dest="zoo_command", metavar="COMMAND", required=True)

    p = commands.add_parser("list", help="list zoo models", description="List every registered zoo model.")
    p.add_argument("--json", action="store_true", help="print the list as JSON")
    p.set_defaults(func=run_list)

    p = commands.add_parser(
        "export",
        help="build a zoo model and write it as ONNX",
        description="Build zoo model NAME with seeded weights and write it to FILE.onnx.",
    )
    p.add_argument("name", metavar="NAME", help="zoo model name (see 'edgecore zoo list'); 'zoo:NAME' works too")
    p.add_argument("-o", "--output", metavar="FILE.onnx", required=True, help="where to write the model")
    p.add_argument("--seed", metavar="N", type=int, default=0, help="seed of the weights (default 0)")
    p.set_defaults(func=run_export)


def _rows() -> list[dict[str, Any]]:
    from edgecore import zoo

    return [
        {"name": name, "task": spec.task, "parameters": spec.parameters, "description": spec.description}
        for name, spec in sorted(zoo.list_models().items())
    ]


def run_list(args: argparse.Namespace) -> int:
    rows = _rows()
    if args.json:
        sys.stdout.write(json.dumps(rows, indent=2) + "\n")
        return 0
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    table = Table(title="edgecore model zoo")
    table.add_column("name", style="bold")
    table.add_column("task")
    table.add_column("parameters", justify="right")
    table.add_column("description", overflow="fold")
    for row in rows:
        params = "" if row["parameters"] is None else f"{row['parameters']:,}"
        table.add_row(row["name"], row["task"], params, Text(row["description"]))
    Console(highlight=False).print(table)
    return 0


def run_export(args: argparse.Namespace) -> int:
    from edgecore import zoo
    from edgecore.errors import ModelLoadError

    name = args.name[len(ZOO_PREFIX) :] if args.name.startswith(ZOO_PREFIX) else args.name
    try:
        path = zoo.export(name, args.output, seed=args.seed)
    except ModelLoadError as exc:
        sys.stderr.write(f"edgecore zoo export: {exc}\n")
        return 1
    except OSError as exc:
        sys.stderr.write(f"edgecore zoo export: cannot write {args.output}: {exc}\n")
        return 1
    size_mb = path.stat().st_size / 1e6
    sys.stdout.write(f"wrote {path} ({name}, seed {args.seed}, {size_mb:.1f} MB)\n")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Run the command on its own (``python -m edgecore.cli.zoo list``)."""
    parser = argparse.ArgumentParser(prog="edgecore")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["zoo", *(sys.argv[1:] if argv is None else argv)])
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
