"""``edgecore trace FILE``: summarize a trace (edgecore's, any Chrome trace, or onnxruntime's profile).

Prints the seed's layout (session information, top N slowest stages by average time, backend
execution summary, per-operator top list when operator spans are present); ``--json`` prints the
same summary as JSON. Exit codes: 0 ok, 1 unreadable trace, 2 usage.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

__all__ = ["register", "run"]


def _non_negative_ms(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected milliseconds, got {text!r}") from None
    if value < 0 or value != value:
        raise argparse.ArgumentTypeError(f"expected milliseconds >= 0, got {text!r}")
    return value


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def register(subparsers: Any) -> None:
    """Add the ``trace`` command to an argparse subparsers object."""
    p = subparsers.add_parser(
        "trace",
        help="summarize a trace file (edgecore, Chrome trace or onnxruntime profile)",
        description=__doc__.split("\n\n")[0],
    )
    p.add_argument("file", metavar="FILE", help="trace JSON (edgecore export, Chrome Trace Event, onnxruntime profile)")
    p.add_argument("--stage", metavar="NAME", help="only events of this stage (or operator type)")
    p.add_argument("--start", metavar="MS", type=_non_negative_ms, help="only events starting at or after MS (from trace start)")
    p.add_argument("--end", metavar="MS", type=_non_negative_ms, help="only events starting before MS (from trace start)")
    p.add_argument("--top", metavar="N", type=_positive_int, default=5, help="rows in the top lists (default 5)")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from edgecore.cli._common import console, print_json
    from edgecore.profiling.viewer import load_trace, render_summary, summarize, summary_to_dict

    if args.start is not None and args.end is not None and args.end < args.start:
        sys.stderr.write(f"edgecore trace: --end ({args.end} ms) is before --start ({args.start} ms)\n")
        return 2
    try:
        trace = load_trace(args.file)
    except (OSError, ValueError) as exc:  # json.JSONDecodeError is a ValueError
        sys.stderr.write(f"edgecore trace: cannot read {args.file}: {exc}\n")
        return 1
    summary = summarize(trace, stage=args.stage, start_ms=args.start, end_ms=args.end, top=args.top)
    if args.json:
        print_json({"file": args.file, **summary_to_dict(summary)})
        return 0
    console().print(render_summary(summary, path=args.file), highlight=False)
    return 0


def main(argv: list[str] | None = None) -> int:
    """Run the command on its own (``python -m edgecore.cli.trace FILE``)."""
    parser = argparse.ArgumentParser(prog="edgecore")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["trace", *(sys.argv[1:] if argv is None else argv)])
    return args.func(args)


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
