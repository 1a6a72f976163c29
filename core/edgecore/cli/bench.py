"""``edgecore bench MODEL``: benchmark scenarios after MLPerf LoadGen, cold start, memory, baselines.

With no ``--scenario`` it runs single-stream (batch 1), offline (batch 8) and cold-start, which on a
2-core machine takes well under a minute for MobileNet-v2. ``--list`` shows every registered scenario,
reporter, raw-runtime baseline and labelled data set, built-in or from a plugin.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from edgecore.cli._common import add_engine_options, console, engine_config, print_json


def _batches(text: str) -> list[int]:
    try:
        sizes = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--batch expects N or N,N,... (e.g. 1,8,32), got {text!r}") from None
    if not sizes or any(size < 1 for size in sizes):
        raise argparse.ArgumentTypeError(f"--batch sizes must be >= 1, got {text!r}")
    return sizes


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "bench",
        help="benchmark a model: latency, throughput, server load, cold start, memory, baselines",
        description="Benchmark a model with MLPerf-style scenarios. Figures are comparable inside one run only.",
    )
    p.add_argument("model", nargs="?", help="model file, or zoo:NAME")
    p.add_argument(
        "--scenario",
        action="append",
        default=[],
        metavar="NAME",
        help="scenario to run (repeatable or comma-separated; see --list). Default: single-stream, offline, "
        "cold-start; server when --target-qps or --find-peak is given",
    )
    p.add_argument("--batch", type=_batches, default=None, metavar="N[,N...]", help="batch size(s) of one query")
    p.add_argument("--duration", type=float, default=5.0, metavar="S", help="minimum measured seconds per side")
    p.add_argument("--min-queries", type=int, default=20, metavar="N", help="minimum kept queries per side")
    p.add_argument("--warmup", type=int, default=10, metavar="N", help="unmeasured warm-up queries per side")
    p.add_argument("--target-qps", type=float, default=None, metavar="Q", help="server: Poisson arrival rate")
    p.add_argument("--find-peak", action="store_true", help="server: search the highest QPS meeting the p99 bound")
    p.add_argument("--latency-bound-ms", type=float, default=None, metavar="X", help="server: p99 latency bound")
    p.add_argument("--streams", type=int, default=4, metavar="N", help="multi-stream: samples per query")
    p.add_argument("--concurrency", type=int, default=2, metavar="N", help="worker threads for concurrent queries")
    p.add_argument("--baseline", action="store_true", help="also measure the raw runtime, interleaved; report ratios")
    p.add_argument("--cold-runs", type=int, default=3, metavar="N", help="cold-start: fresh processes per side")
    p.add_argument(
        "--optimize",
        choices=("graph", "int8", "fp16", "prune"),
        default=None,
        help="run Engine.optimize with this preset first (also in cold-start processes); the baseline keeps the original",
    )
    p.add_argument("--dataset", default=None, help="accuracy: labelled data set (default: the zoo model's)")
    p.add_argument("--sequence", type=int, default=128, metavar="N", help="length of symbolic sequence dimensions")
    p.add_argument("--seed", type=int, default=0, help="seed of the random inputs and arrivals")
    add_engine_options(p)
    p.add_argument("--json", metavar="FILE", help="write the JSON report (docs/benchmarks.md) to FILE ('-': stdout)")
    p.add_argument("--plot", metavar="FILE.png", help="write a PNG of latency distributions and sweeps")
    p.add_argument("--markdown", metavar="FILE.md", help="write a Markdown table")
    p.add_argument("--report", action="append", default=[], metavar="NAME=FILE", help="run a registered reporter")
    p.add_argument("--list", action="store_true", help="list scenarios, reporters, baselines and data sets")
    p.add_argument(
        "--compare", nargs=2, metavar=("OLD.json", "NEW.json"), default=None,
        help="compare two --json reports figure by figure, with each figure's noise; exit 1 on a regression",
    )
    p.add_argument(
        "--fail-on-regression", default="5%", metavar="PCT",
        help="with --compare: flag a figure whose whole 95%% interval is worse by more than this (default 5%%)",
    )
    p.set_defaults(func=run)


def _listing(pm: Any) -> dict[str, list[dict[str, str]]]:
    from edgecore.bench import registry

    kinds = {
        "scenarios": registry.scenarios(pm),
        "reporters": registry.reporters(pm),
        "baselines": registry.baselines(pm),
        "datasets": registry.datasets(pm),
    }
    return {
        kind: [
            {"name": name, "plugin": pm.source_of(registry.HOOKS[kind], name), "description": spec.description}
            for name, spec in specs.items()
        ]
        for kind, specs in kinds.items()
    }


def _print_listing(listing: dict[str, list[dict[str, str]]]) -> None:
    from rich.table import Table

    out = console()
    for kind, rows in listing.items():
        table = Table(title=kind, title_justify="left")
        for column in ("name", "plugin", "description"):
            table.add_column(column, overflow="fold")
        for row in rows:
            table.add_row(row["name"], row["plugin"], row["description"])
        out.print(table)


def _scenarios(args: argparse.Namespace) -> list[str]:
    from edgecore.bench.harness import DEFAULT_SCENARIOS

    names = [name.strip() for item in args.scenario for name in item.split(",") if name.strip()]
    if names:
        return names
    if args.target_qps is not None or args.find_peak:
        return ["server"]
    return list(DEFAULT_SCENARIOS)


def _reporters(args: argparse.Namespace) -> list[tuple[str, str]]:
    wanted = []
    for name, destination in (("json", args.json), ("plot", args.plot), ("markdown", args.markdown)):
        if destination and destination != "-":
            wanted.append((name, destination))
    for item in args.report:
        name, sep, destination = item.partition("=")
        if not sep or not name or not destination:
            raise SystemExit(f"edgecore: error: --report expects NAME=FILE, got {item!r}")
        wanted.append((name, destination))
    return wanted


def _compare(args: argparse.Namespace) -> int:
    from edgecore.bench.compare import compare_reports

    if args.model:
        print("edgecore bench: error: --compare takes two report files, not a MODEL", file=sys.stderr)
        return 2
    comparison = compare_reports(args.compare[0], args.compare[1], threshold=args.fail_on_regression)
    if args.json == "-":
        print_json(comparison.to_json())
    else:
        _print_comparison(comparison)
    return 1 if comparison.regressed else 0


def _print_comparison(comparison: Any) -> None:
    from rich.table import Table

    styles = {"regression": "bold red", "improvement": "green", "changed": "yellow", "within noise": "dim",
              "not judged": "dim italic"}
    table = Table(title=f"{comparison.old} -> {comparison.new} (threshold {comparison.threshold:.1%})",
                  title_justify="left", box=None, header_style="bold underline")
    for header in ("scenario", "batch", "figure", "old", "new", "change (+ = worse)", "95% interval", "verdict"):
        table.add_column(header, justify="left" if header in ("scenario", "figure", "verdict") else "right")
    for f in comparison.figures:
        table.add_row(f.scenario, str(f.batch if f.batch is not None else "-"), f.figure, f"{f.old:.4g}",
                      f"{f.new:.4g}", f"{f.change:+.1%}", f"[{f.low:+.1%}, {f.high:+.1%}]",
                      f"[{styles[f.verdict]}]{f.verdict}[/]")
    out = console()
    out.print(table)
    for note in (*comparison.unmatched, *comparison.notes):
        out.print(f"[dim]- {note}[/dim]")
    verdict = f"{len(comparison.regressions)} regression(s)" if comparison.regressed else "no regression"
    out.print(f"[bold]{verdict}[/bold] beyond {comparison.threshold:.1%} outside the noise")


class _Bar:
    """A rich progress bar on stderr, one line per scenario run."""

    def __init__(self) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

        self.progress = Progress(
            TextColumn("[bold]{task.fields[scenario]:<14}"),
            BarColumn(),
            TextColumn("{task.percentage:>3.0f}%"),
            TimeElapsedColumn(),
            TextColumn("{task.fields[detail]}"),
            console=Console(stderr=True),
            transient=False,
        )
        self.tasks: dict[str, Any] = {}

    def __call__(self, scenario: str, fraction: float, detail: str) -> None:
        if detail == "starting" or scenario not in self.tasks:
            self.tasks[scenario] = self.progress.add_task("", total=1.0, scenario=scenario, detail="")
        self.progress.update(self.tasks[scenario], completed=fraction, detail=detail)


def run(args: argparse.Namespace) -> int:
    from edgecore.bench import BenchSettings, registry, run_benchmark
    from edgecore.bench.report import table, to_json
    from edgecore.plugins import get_plugin_manager

    if args.compare:
        return _compare(args)
    pm = get_plugin_manager()
    if args.list:
        listing = _listing(pm)
        print_json(listing) if args.json == "-" else _print_listing(listing)
        return 0
    if not args.model:
        print("edgecore bench: error: give a MODEL (file or zoo:NAME), or --list", file=sys.stderr)
        return 2
    try:
        settings = BenchSettings(
            batch=args.batch[0] if args.batch and len(args.batch) == 1 else None,
            duration_s=args.duration,
            min_queries=args.min_queries,
            warmup=args.warmup,
            target_qps=args.target_qps,
            find_peak=args.find_peak,
            latency_bound_ms=args.latency_bound_ms,
            streams=args.streams,
            concurrency=args.concurrency,
            baseline=args.baseline,
            cold_runs=args.cold_runs,
            dataset=args.dataset,
            optimize=args.optimize,
            sequence=args.sequence,
            seed=args.seed,
        )
    except ValueError as exc:
        print(f"edgecore bench: error: {exc}", file=sys.stderr)
        return 2
    scenarios = _scenarios(args)
    reporters = _reporters(args)
    for name in scenarios:
        registry.get_scenario(pm, name)
    for name, _ in reporters:
        registry.get_reporter(pm, name)
    bar = _Bar()
    with bar.progress:
        report = run_benchmark(
            args.model,
            scenarios,
            settings=settings,
            config=engine_config(args),
            batches=args.batch if args.batch and len(args.batch) > 1 else None,
            plugin_manager=pm,
            progress=bar,
            command="edgecore " + " ".join(sys.argv[1:]) if sys.argv[1:2] == ["bench"] else None,
        )
    for name, destination in reporters:
        registry.get_reporter(pm, name).write(report, destination)
    if args.json == "-":
        print_json(to_json(report))
        return 0
    out = console()
    out.print(table(report))
    for name, destination in reporters:
        out.print(f"[dim]{name} report written to {destination}[/dim]")
    return 0
