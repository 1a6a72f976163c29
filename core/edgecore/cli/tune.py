"""``edgecore tune MODEL``: the fastest configuration of MODEL on this machine, within budgets.

Searches backends × precisions × threads (× batch sizes and scheduler instances for
``--objective throughput``) × memory mode, measures through the benchmark harness's interleaved
loops, reads memory by PSS in a fresh process for the finalists, and writes ``-o tuned/``: the
chosen model, ``edgecore.toml`` (the EngineConfig; ``edgecore.tune.from_tuned`` and ``edgecore serve``
load it), ``report.md``/``report.json`` (every candidate and why it was rejected), ``pareto.png``
(with matplotlib) and the gain over the best default configuration judged by ``bench --compare``.
Exit code 1 when no candidate meets the budgets (the report says why each was rejected).
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from edgecore.cli._common import console, print_json


def register(subparsers: Any) -> None:
    p = subparsers.add_parser("tune", help="search the fastest configuration of a model on this machine")
    p.add_argument("model", help="model file, or zoo:NAME")
    p.add_argument("--calib", metavar="FILE.npz", help="samples for the accuracy checks: one array per input name "
                   "(+ 'labels' for top-1)")
    p.add_argument("--objective", default="latency", choices=("latency", "throughput"),
                   help="latency: p50 of one query at batch 1; throughput: samples/s (batch sizes and instances "
                        "searched)")
    p.add_argument("--budget", type=float, help="largest accuracy loss (top-1 points with labels, else 1 - cosine; "
                   "default: 1 point / 0.01)")
    p.add_argument("--memory-budget", metavar="SIZE", help="largest PSS growth, e.g. 100MB")
    p.add_argument("--latency-budget", metavar="TIME", help="largest p99 of one query, e.g. 20ms")
    p.add_argument("--time-limit", default="10m", metavar="TIME", help="for the whole search, e.g. 10m (default)")
    p.add_argument("--backends", metavar="A,B", help="backends to search (default: every available one)")
    p.add_argument("--precisions", metavar="A,B", help="precisions to search: fp32,int8,fp16,bf16 (default: all "
                   "the hardware has)")
    p.add_argument("--threads", metavar="N,M", help="thread counts to search (default: 0 = runtime default, 1, "
                   "powers of two, the core count)")
    p.add_argument("--batches", metavar="N,M", help="batch sizes to search for throughput (default: 1 to 32)")
    p.add_argument("--pass-option", action="append", default=[], metavar="PASS.KEY=VALUE",
                   help="an optimizer pass's option, e.g. int8.fallback=false (repeatable)")
    p.add_argument("-o", "--output", default="tuned", metavar="DIR", help="where to write (default: tuned/)")
    p.add_argument("--cache-dir", metavar="DIR", help="tuning cache (default: edgecore's cache folder)")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.set_defaults(func=run)


def _ints(text: str | None) -> tuple[int, ...] | None:
    if text is None:
        return None
    try:
        return tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise SystemExit(f"edgecore: error: expected comma-separated integers, got {text!r}") from None


def _space(args: argparse.Namespace) -> dict[str, Any]:
    space: dict[str, Any] = {}
    if args.precisions:
        space["precisions"] = args.precisions
    if args.threads:
        space["threads"] = _ints(args.threads)
    if args.batches:
        space["batches"] = _ints(args.batches)
    if args.pass_option:
        from edgecore.cli.optimize import _pass_options

        try:
            space["pass_options"] = _pass_options(args.pass_option)
        except argparse.ArgumentTypeError as exc:
            raise SystemExit(f"edgecore: error: {exc}") from None
    return space


def run(args: argparse.Namespace) -> int:
    import edgecore.tune as tuning

    options = dict(
        objective=args.objective, calibration=args.calib, budget=args.budget, memory_budget=args.memory_budget,
        latency_budget=args.latency_budget, time_limit=args.time_limit, backends=args.backends,
        output=args.output, cache_dir=args.cache_dir, **_space(args),
    )
    if args.json:
        result = tuning.tune(args.model, **options)
        print_json(dict(result.report, files={k: str(v) for k, v in result.files.items()}))
        return 0 if result.ok else 1
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    out = console()
    with Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.percentage:>3.0f}% of the limit"),
                  TimeElapsedColumn(), console=out, transient=True) as bar:
        task = bar.add_task(f"tuning {args.model}", total=1.0)

        def progress(phase: str, fraction: float, detail: str) -> None:
            bar.update(task, completed=min(1.0, fraction), description=f"{phase}: {detail}"[:90])

        result = tuning.tune(args.model, progress=progress, **options)
    from edgecore.tune.report import rich_table

    out.print(rich_table(result.outcome, f"edgecore tune {args.model} ({args.objective})"))
    for line in result.report.get("summary", []):
        out.print(line.replace("**", ""))
    pruned = [f"{r.what}: {r.reason}" for r in result.outcome.rejections]
    if pruned:
        out.print("pruned before measuring:\n  " + "\n  ".join(pruned), style="dim", highlight=False)
    for note in result.outcome.notes:
        out.print(f"note: {note}", style="yellow")
    if result.output is not None:
        out.print(f"wrote {result.output}/ ({', '.join(sorted(p.name for p in result.files.values()))})")
    if not result.ok:
        print("edgecore tune: no candidate met the budgets; see the report for each reason", file=sys.stderr)
        return 1
    return 0
