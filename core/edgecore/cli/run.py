"""``edgecore run MODEL``: load a model, run it once (or N times) and print outputs and latency."""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgecore.cli._common import add_engine_options, console, engine_config, print_json

if TYPE_CHECKING:
    import numpy as np


def register(subparsers: Any) -> None:
    p = subparsers.add_parser("run", help="run a model on random or given inputs")
    p.add_argument("model", help="model file, or zoo:NAME")
    add_engine_options(p)
    p.add_argument("--input", action="append", default=[], metavar="NAME=FILE.npy", help="input from a .npy file")
    p.add_argument("--batch", type=int, default=1, help="size of symbolic dimensions for random inputs")
    p.add_argument("--repeat", type=int, default=1, help="run this many times and report latency")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=run)


def _load_inputs(items: list[str]) -> dict[str, np.ndarray]:
    import numpy as np

    from edgecore.errors import InvalidInputError

    feeds = {}
    for item in items:
        name, sep, path = item.partition("=")
        if not sep:
            raise argparse.ArgumentTypeError(f"--input expects NAME=FILE.npy, got {item!r}")
        try:
            feeds[name] = np.load(Path(path), allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise InvalidInputError(f"input {name!r}: cannot read {path}: {exc}") from exc
    return feeds


def run(args: Any) -> int:
    import numpy as np

    from edgecore.inputs import random_feeds

    from edgecore.engine import Engine

    with Engine(engine_config(args)) as engine:
        started = time.perf_counter()
        engine.load(args.model)
        load_ms = (time.perf_counter() - started) * 1e3
        feeds = _load_inputs(args.input) or random_feeds(engine.inputs, batch=args.batch, seed=args.seed)
        latencies = []
        for _ in range(max(1, args.repeat)):
            started = time.perf_counter()
            outputs = engine.run(feeds)
            latencies.append((time.perf_counter() - started) * 1e3)
        report = {
            "model": args.model,
            "backend": engine.backend,
            "load_ms": load_ms,
            "inputs": [dict(s.to_json(), fed=list(feeds[s.name].shape)) for s in engine.inputs],
            "outputs": [{"name": n, "dtype": str(a.dtype), "shape": list(a.shape)} for n, a in outputs.items()],
            "latency_ms": {"first": latencies[0], "median": float(np.median(latencies)), "runs": len(latencies)},
        }
    if args.json:
        print_json(report)
        return 0
    out = console()
    out.print(f"[bold]{args.model}[/bold] on [cyan]{report['backend']}[/cyan] (loaded in {load_ms:.1f} ms)")
    for o in report["outputs"]:
        out.print(f"  output {o['name']}: {o['dtype']}{o['shape']}")
    lat = report["latency_ms"]
    out.print(f"  latency: first {lat['first']:.3f} ms, median {lat['median']:.3f} ms over {lat['runs']} run(s)")
    return 0
