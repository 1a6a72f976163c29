"""``edgecore optimize MODEL -o OUT.onnx``: checked optimization passes, a report, the optimized model.

Graph optimization always runs (unless ``--no-graph``); ``--int8`` (with ``--calib FILE.npz``: one
array per input name, samples along axis 0, and optionally ``labels``), ``--prune RATIO`` and
``--fp16`` add passes. ``--budget`` is the largest loss allowed (top-1 points with labels, else
1 - cosine). The report is printed as a table, or as JSON with ``--json``. Exit code 1 when nothing
could be written or the model would not load; passes rolled back are reported, not failures. When
the model's outputs do not respond to the generated samples the report (and a closing warning) says
the check cannot judge, and asks for ``--calib`` with real samples. ``--onnx-reference`` checks with
``onnx.reference`` instead of a backend (``--backend reference`` is the backend plugin of that name).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgecore.cli._common import add_engine_options, console, engine_config, print_json
from edgecore.errors import OptimizationError

if TYPE_CHECKING:
    import numpy as np


def register(subparsers: Any) -> None:
    p = subparsers.add_parser("optimize", help="optimize a model with passes checked against the original")
    p.add_argument("model", help="model file, or zoo:NAME")
    p.add_argument("-o", "--output", required=True, metavar="OUT.onnx", help="where to write the optimized model")
    add_engine_options(p)
    p.add_argument("--int8", action="store_true", help="INT8 quantization (the 'int8' pass of the cpu_simd plugin)")
    p.add_argument("--calib", metavar="FILE.npz", help="calibration data: one array per input name (+ 'labels')")
    p.add_argument("--calibration-method", default="minmax", choices=("minmax", "percentile", "entropy"))
    p.add_argument("--dynamic", action="store_true", help="dynamic INT8 (weights only) instead of the default choice")
    p.add_argument("--prune", type=float, metavar="RATIO", help="structured pruning of this share of channels")
    p.add_argument("--unstructured", action="store_true", help="with --prune: zero weights instead of channels")
    p.add_argument("--fp16", action="store_true", help="float16 mixed precision")
    p.add_argument("--budget", type=float, help="largest loss allowed (top-1 points with labels, else 1 - cosine)")
    p.add_argument("--no-graph", action="store_true", help="skip the graph optimization pass")
    p.add_argument("--samples", type=int, default=16, help="generated samples when no --calib is given")
    p.add_argument(
        "--onnx-reference", action="store_true",
        help="check passes with onnx.reference (slow, exact) instead of a backend plugin",
    )
    p.add_argument(
        "--pass-option", action="append", default=[], metavar="PASS.KEY=VALUE",
        help="a pass's custom option, e.g. int8.reduce_range=false (repeatable)",
    )
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.set_defaults(func=run)


def _value(text: str) -> Any:
    lowered = text.lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def _pass_options(items: list[str]) -> dict[str, dict[str, Any]]:
    options: dict[str, dict[str, Any]] = {}
    for item in items:
        key, sep, value = item.partition("=")
        name, dot, option = key.partition(".")
        if not sep or not dot or not name or not option:
            raise argparse.ArgumentTypeError(f"--pass-option expects PASS.KEY=VALUE, got {item!r}")
        options.setdefault(name, {})[option] = _value(value)
    return options


def _calibration(path: str | None) -> tuple[dict[str, np.ndarray] | None, np.ndarray | None]:
    import numpy as np

    if path is None:
        return None, None
    try:
        with np.load(Path(path), allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
    except (OSError, ValueError) as exc:
        raise OptimizationError(f"cannot read calibration data {path}: {exc}") from exc
    labels = arrays.pop("labels", None)
    return arrays, labels


def build_config(args: argparse.Namespace):
    """The :class:`OptimizationConfig` the flags ask for."""
    from edgecore.optimize import OptimizationConfig

    data, labels = _calibration(args.calib)
    if args.prune is not None and not 0 <= args.prune < 1:
        raise OptimizationError(f"--prune takes a ratio in [0, 1), got {args.prune}")
    return OptimizationConfig(
        enable_graph_optimization=not args.no_graph,
        enable_quantization=args.int8,
        quantization_mode="dynamic" if args.dynamic else "auto",
        calibration_method=args.calibration_method,
        enable_pruning=args.prune is not None,
        pruning_ratio=args.prune if args.prune is not None else 0.3,
        pruning_mode="unstructured" if args.unstructured else "structured",
        enable_mixed_precision=args.fp16,
        calibration_data=data,
        labels=labels,
        num_samples=args.samples,
        accuracy_budget=args.budget,
        custom_options=_pass_options(args.pass_option),
    )


def run(args: argparse.Namespace) -> int:
    from edgecore.selection import load_graph

    from edgecore.optimize import PassManager

    config = build_config(args)
    engine = engine_config(args)
    graph = load_graph(args.model)
    manager = PassManager(config, backend=engine.backend, engine_config=engine, onnx_reference=args.onnx_reference)
    if args.json:
        optimized, report = manager.run(graph)
    else:
        with console().status(f"optimizing {args.model}..."):
            optimized, report = manager.run(graph)
    output = Path(args.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_bytes(optimized.to_bytes())
    if args.json:
        print_json(dict(report.to_json(), output=str(output)))
        return 0
    print(report.format_table())
    print(f"wrote {output} ({output.stat().st_size / 1e6:.2f} MB)")
    if not report.can_judge:
        print(f"edgecore: warning: {report.check_problem}", file=sys.stderr)
    return 0
