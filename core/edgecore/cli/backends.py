"""``edgecore backends``: installed backend plugins, their devices, and whether they can run here."""

from __future__ import annotations

from typing import Any

from edgecore.cli._common import console, print_json


def register(subparsers: Any) -> None:
    p = subparsers.add_parser("backends", help="list backend plugins, devices and availability")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=run)


def describe_backends() -> dict[str, Any]:
    """Every registered backend (available or not, with the reason) and every plugin that failed."""
    from edgecore.backend import backend_for
    from edgecore.plugins import get_plugin_manager

    pm = get_plugin_manager()
    rows = []
    for name, spec in pm.backends().items():
        plugin = pm.source_of("edgecore_backends", name)
        row: dict[str, Any] = {
            "name": name,
            "plugin": plugin,
            "distribution": pm.distribution_of(plugin),
            "priority": spec.priority,
            "description": spec.description,
            "available": False,
            "reason": "",
            "devices": [],
        }
        try:
            backend = backend_for(spec)
            availability = backend.availability()
            row["available"], row["reason"] = availability.ok, availability.reason
            if availability.ok:
                row["devices"] = [d.to_json() for d in backend.devices()]
        except Exception as exc:  # a backend that cannot even describe itself is shown, not fatal
            row["reason"] = f"failed to initialize: {exc!r}"
        rows.append(row)
    broken = [{"name": f.name, "distribution": f.distribution, "error": f.error} for f in pm.failures]
    return {"backends": rows, "broken_plugins": broken, "autoload": pm.autoload}


def run(args: Any) -> int:
    report = describe_backends()
    if args.json:
        print_json(report)
        return 0
    from rich.table import Table

    table = Table(title="edgecore backends")
    for column in ("backend", "distribution", "priority", "available", "devices / reason"):
        table.add_column(column)
    for row in report["backends"]:
        if row["available"]:
            detail = "; ".join(
                f"{d['name']}: {d['description']}"
                + (f" [{', '.join(d['properties'].get('simd', []))}]" if d["properties"].get("simd") else "")
                for d in row["devices"]
            )
        else:
            detail = row["reason"]
        table.add_row(
            row["name"], row["distribution"] or "(built-in)", str(row["priority"]),
            "yes" if row["available"] else "no", detail,
        )
    out = console()
    out.print(table)
    for failure in report["broken_plugins"]:
        out.print(
            f"[red]broken plugin[/red] {failure['name']} ({failure['distribution']}) is installed but failed to "
            f"load: {failure['error']}", highlight=False,
        )
    if not report["autoload"]:
        from edgecore.plugins import AUTOLOAD_ENV

        out.print(f"plugin autoload is disabled ({AUTOLOAD_ENV}=1): installed backend plugins are not loaded")
    elif not report["backends"]:
        out.print("no backend plugin is installed: pip install edgecore-cpu-simd")
    return 0
