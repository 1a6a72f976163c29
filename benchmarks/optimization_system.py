"""The "Optimization Impact" table for this machine: size reduction, speedup and accuracy loss of each
optimization, per zoo model and the trained digits model, measured side by side on cpu_simd.

For each model, every variant is produced by edgecore's PassManager (``edgecore.optimize.optimize``
with the budget lifted, so that the loss is measured and reported rather than rolled back), then all
variants are compiled on cpu_simd in one process and timed in interleaved blocks (order rotated each
round, first calls of each block dropped). Figures: median wall-clock latency and median process CPU
time per call (CPU time is what the variant costs; wall time is what a caller waits, and on a shared
machine it carries other processes' load); speedup = baseline / variant for both.

Baselines: graph optimization is compared with the original graph, both with onnxruntime's own graph
optimizer off (``graph_optimization_level="disabled"``) and both with it on ("all"); int8, fp16 and
pruning are compared with the graph-optimized float32 model, both at onnxruntime's "all".

Accuracy: zoo models (seeded weights) by ``1 - cosine`` of the outputs against the original on
generated inputs, plus top-1 agreement; the digits model by top-1 accuracy points on its held-out
split (which is also the calibration data).

The int8 sweep (``--int8-sweep MODEL``) times every static configuration onnxruntime.quantization
offers on this CPU: QDQ with uint8 or int8 activations, int8 or uint8 weights, per-channel or
per-tensor, reduce_range, the QOperator format, and onnxruntime's optimization levels.

    python benchmarks/optimization_system.py [--models resnet50,mobilenet_v2,efficientnet_b0,bert_base,digits_cnn]
        [--int8-sweep resnet50] [--threads 2] [--rounds 6] [--calls 8] [--drop 2] [--samples 8] [--quick]

Writes benchmarks/results/optimization_system.json.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results"
ALL_MODELS = ("resnet50", "mobilenet_v2", "efficientnet_b0", "bert_base", "digits_cnn")
INF = float("inf")


def _config(**fields: Any):
    from edgecore.optimize import OptimizationConfig

    return OptimizationConfig(**fields)


def optimizations(name: str) -> list[tuple[str, dict[str, Any], str]]:
    """(label, OptimizationConfig fields, what it is compared with) for one model."""
    transformer = name.startswith("bert")
    rows = [
        ("graph optimization", {}, "original"),
        ("int8 " + ("dynamic" if transformer else "static QDQ u8/s8 per-channel"), {"enable_quantization": True},
         "graph"),
        ("fp16", {"enable_mixed_precision": True}, "graph"),
        ("structured pruning 30%", {"enable_pruning": True, "pruning_ratio": 0.3}, "graph"),
    ]
    if name in ("resnet50", "mobilenet_v2", "efficientnet_b0") or name.endswith("_tiny"):  # skip connections
        rows.append(("structured pruning 30%, residual groups too",
                     {"enable_pruning": True, "pruning_ratio": 0.3,
                      "custom_options": {"structured_pruning": {"residual": "prune"}}}, "graph"))
    rows.append(("unstructured pruning 50%", {"enable_pruning": True, "pruning_ratio": 0.5,
                                              "pruning_mode": "unstructured"}, "graph"))
    return rows


def _data(name: str, samples: int, options: dict[str, Any]) -> dict[str, Any]:
    """Sample fields of the OptimizationConfig: the digits split with labels, else generated inputs."""
    if name == "digits_cnn":
        from edgecore import zoo

        images, labels = zoo.digits_test_split()
        return {"calibration_data": {"input": images}, "labels": labels}
    return {"num_samples": samples, "sequence_length": options.get("sequence", 128)}


def _feeds(graph, sequence: int) -> dict[str, np.ndarray]:
    from edgecore.inputs import random_feeds

    return random_feeds(graph.inputs, batch=1, seed=1, sequence=sequence)


def _timer(graph, level: str, threads: int) -> Callable[[dict], Any]:
    from edgecore import Engine, EngineConfig

    engine = Engine(EngineConfig(backend="cpu_simd", num_threads=threads, graph_optimization_level=level,
                                 custom_options={"allow_spinning": "0"})).load(graph)
    return engine


def time_variants(engines: dict[str, Any], feeds: dict, *, rounds: int, calls: int, drop: int) -> dict[str, dict]:
    """Interleaved blocks: each round runs every engine for ``calls`` calls, order rotated per round."""
    names = list(engines)
    wall: dict[str, list[float]] = {n: [] for n in names}
    cpu: dict[str, list[float]] = {n: [] for n in names}
    for r in range(rounds):
        order = names[r % len(names):] + names[: r % len(names)]
        for name in order:
            run = engines[name].run
            for i in range(calls):
                t0, c0 = time.perf_counter(), time.process_time()
                run(feeds)
                c1, t1 = time.process_time(), time.perf_counter()
                if i >= drop:
                    wall[name].append((t1 - t0) * 1e3)
                    cpu[name].append((c1 - c0) * 1e3)
    return {n: {"wall_ms": float(np.median(wall[n])), "wall_p90_ms": float(np.percentile(wall[n], 90)),
                "cpu_ms": float(np.median(cpu[n])), "calls": len(wall[n])} for n in names}


def benchmark_model(name: str, args: argparse.Namespace) -> list[dict[str, Any]]:
    from edgecore import zoo
    from edgecore.graph import Graph
    from edgecore.optimize import optimize

    options = {"image_size": args.image_size} if args.image_size and name not in ("bert_base", "digits_cnn") else {}
    original = Graph.from_proto(zoo.build(name, **options), check=False)
    data = _data(name, args.samples, {"sequence": args.sequence})
    budget = {"accuracy_budget": INF}
    started = time.perf_counter()
    graph_opt, graph_report = optimize(original, _config(**data, **budget), backend="cpu_simd")
    results: dict[str, tuple[Any, Any]] = {}
    for label, fields, _ in optimizations(name):
        if label == "graph optimization":
            results[label] = (graph_opt, graph_report)
            continue
        fields = {**fields, **data, **budget, "enable_graph_optimization": False}
        graph, report = optimize(graph_opt, _config(**fields), backend="cpu_simd")
        results[label] = (graph, report)
        print(f"  {name}: {label}: {report.passes[-1].status} in {report.seconds:.1f} s", flush=True)
    print(f"  {name}: variants built in {time.perf_counter() - started:.0f} s", flush=True)

    engines = {
        "original@disabled": _timer(original, "disabled", args.threads),
        "graph@disabled": _timer(graph_opt, "disabled", args.threads),
        "original@all": _timer(original, "all", args.threads),
        "graph@all": _timer(graph_opt, "all", args.threads),
    }
    for label, (graph, _) in results.items():
        if label != "graph optimization":
            engines[label] = _timer(graph, "all", args.threads)
    feeds = _feeds(original, args.sequence)
    for engine in engines.values():  # warm up
        for _ in range(2):
            engine.run(feeds)
    timing = time_variants(engines, feeds, rounds=args.rounds, calls=args.calls, drop=args.drop)
    for engine in engines.values():
        engine.close()

    def speed(variant: str, baseline: str) -> dict[str, float]:
        return {"wall": timing[baseline]["wall_ms"] / timing[variant]["wall_ms"],
                "cpu": timing[baseline]["cpu_ms"] / timing[variant]["cpu_ms"]}

    rows = []
    original_bytes = len(original.to_bytes())
    for label, _, compared_with in optimizations(name):
        graph, report = results[label]
        record = report.passes[-1]
        row: dict[str, Any] = {
            "model": name if not options else f"{name}@{args.image_size}",
            "optimization": label,
            "status": record.status,
            "bytes": len(graph.to_bytes()),
            "baseline_bytes": original_bytes,
            "size_reduction": original_bytes / len(graph.to_bytes()),
            "metric": report.metric,
            "loss": report.final_loss,
            "cosine": report.final_agreement.cosine if report.final_agreement else None,
            "top1_agreement": report.final_agreement.top1_agreement if report.final_agreement else None,
            "accuracy": report.final_agreement.accuracy if report.final_agreement else None,
            "original_accuracy": report.original_accuracy,
            "pass_details": dict(record.details),
            "notes": list(record.notes),
        }
        if label == "graph optimization":
            row["speedup_runtime_optimizer_off"] = speed("graph@disabled", "original@disabled")
            row["speedup_runtime_optimizer_on"] = speed("graph@all", "original@all")
            row["speedup"] = row["speedup_runtime_optimizer_off"]
            row["compared_with"] = "original graph, onnxruntime optimizer off (and on)"
            row["loss"] = graph_report.final_loss
        else:
            row["speedup"] = speed(label, "graph@all")
            row["compared_with"] = "graph-optimized float32, onnxruntime optimizer on"
        rows.append(row)
    for row in rows:
        row["timing_ms"] = timing
    return rows


INT8_SWEEP = (
    ("QDQ u8 act / s8 weight, per-channel, reduce_range auto", {}, "all"),
    ("QDQ u8/s8 per-channel, reduce_range off", {"reduce_range": False}, "all"),
    ("QDQ u8/s8 per-tensor", {"per_channel": False}, "all"),
    ("QDQ s8 act / s8 weight, per-channel", {"activation_type": "int8"}, "all"),
    ("QDQ s8/s8 per-tensor", {"activation_type": "int8", "per_channel": False}, "all"),
    ("QDQ u8 act / u8 weight, per-channel", {"weight_type": "uint8"}, "all"),
    ("QOperator u8/s8 per-channel", {"format": "qoperator"}, "all"),
    ("QDQ u8/s8 per-channel, onnxruntime level extended", {}, "extended"),
    ("QDQ u8/s8 per-channel, onnxruntime level basic", {}, "basic"),
)


def int8_sweep(name: str, args: argparse.Namespace) -> list[dict[str, Any]]:
    from edgecore import zoo
    from edgecore.graph import Graph
    from edgecore.optimize import optimize

    options = {"image_size": args.image_size} if args.image_size else {}
    original = Graph.from_proto(zoo.build(name, **options), check=False)
    graph_opt, _ = optimize(original, _config(num_samples=args.samples), backend="cpu_simd")
    engines = {"float32@all": _timer(graph_opt, "all", args.threads)}
    rows = {}
    for label, settings, level in INT8_SWEEP:
        int8 = dict(settings)
        per_channel = int8.pop("per_channel", True)
        config = _config(enable_graph_optimization=False, enable_quantization=True, per_channel=per_channel,
                         num_samples=args.samples, accuracy_budget=INF, custom_options={"int8": {**int8,
                                                                                                  "fallback": False}})
        graph, report = optimize(graph_opt, config, backend="cpu_simd")
        engines[label] = _timer(graph, level, args.threads)
        rows[label] = {"settings": {**int8, "per_channel": per_channel, "onnxruntime_level": level},
                       "details": dict(report.passes[-1].details), "loss": report.final_loss,
                       "bytes": len(graph.to_bytes())}
        print(f"  int8 sweep {name}: {label}: loss {report.final_loss:.4g}", flush=True)
    feeds = _feeds(original, args.sequence)
    for engine in engines.values():
        for _ in range(2):
            engine.run(feeds)
    timing = time_variants(engines, feeds, rounds=args.rounds, calls=args.calls, drop=args.drop)
    for engine in engines.values():
        engine.close()
    base = timing["float32@all"]
    out = []
    for label, row in rows.items():
        t = timing[label]
        out.append({"model": name, "configuration": label, **row, "timing_ms": t,
                    "speedup": {"wall": base["wall_ms"] / t["wall_ms"], "cpu": base["cpu_ms"] / t["cpu_ms"]},
                    "float32_timing_ms": base})
    return out


def _loss_text(row: dict[str, Any]) -> str:
    if row["loss"] is None:
        return "-"
    if row["metric"] == "top1_points":
        return f"{row['loss']:.2f} pts top-1 ({row['original_accuracy']:.1f}% -> {row['accuracy']:.1f}%)"
    agree = f", top-1 agree {row['top1_agreement']:.0%}" if row.get("top1_agreement") is not None else ""
    return f"1-cos {row['loss']:.2g}{agree}"


def table(rows: list[dict[str, Any]]) -> str:
    lines = ["| Optimization | Model | Size reduction | Speedup (CPU time / wall) | Accuracy loss |",
             "| --- | --- | --- | --- | --- |"]
    for row in rows:
        s = row["speedup"]
        speed = f"{s['cpu']:.2f}x / {s['wall']:.2f}x"
        if "speedup_runtime_optimizer_on" in row:
            on = row["speedup_runtime_optimizer_on"]
            speed += f" (ORT optimizer on: {on['cpu']:.2f}x / {on['wall']:.2f}x)"
        lines.append(f"| {row['optimization']} | {row['model']} | {row['size_reduction']:.2f}x | {speed} | "
                     f"{_loss_text(row)} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(ALL_MODELS))
    parser.add_argument("--int8-sweep", default="resnet50", help="model for the int8 settings sweep ('' to skip)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--calls", type=int, default=8)
    parser.add_argument("--drop", type=int, default=2)
    parser.add_argument("--samples", type=int, default=8, help="generated samples for checks and calibration")
    parser.add_argument("--sequence", type=int, default=128, help="sequence length for BERT")
    parser.add_argument("--image-size", type=int, default=0, help="override the image size of zoo CNNs")
    parser.add_argument("--quick", action="store_true", help="3 rounds of 5 calls, 4 samples")
    parser.add_argument("--out", type=Path, default=RESULTS / "optimization_system.json")
    args = parser.parse_args()
    if args.quick:
        args.rounds, args.calls, args.drop, args.samples = 3, 5, 1, 4
    logging.basicConfig(level=logging.WARNING)
    from _common import machine as machine_info  # waits for a quiet machine; ["load"] is live (_common.py)

    machine = machine_info()
    rows, sweep = [], []
    for name in [m for m in args.models.split(",") if m]:
        print(f"{name}:", flush=True)
        rows.extend(benchmark_model(name, args))
    if args.int8_sweep:
        print(f"int8 sweep on {args.int8_sweep}:", flush=True)
        sweep = int8_sweep(args.int8_sweep, args)
    report = {
        "benchmark": "optimization_system",
        "method": (
            f"one process per run; variants built by edgecore.optimize (budget lifted to measure the loss), "
            f"compiled on cpu_simd with {args.threads} intra-op threads and allow_spinning=0, timed in "
            f"{args.rounds} rounds x {args.calls} calls per variant (order rotated per round, first {args.drop} "
            f"calls of each block dropped), batch 1; medians of wall time and of process CPU time; speedup = "
            f"baseline / variant. Accuracy: 1 - cosine and top-1 agreement against the original on "
            f"{args.samples} generated inputs (zoo, seeded weights), top-1 points on the held-out split (digits)."
        ),
        "machine": machine,
        "machine_after": {"load_average": machine_info()["load_average"]},
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "results": rows,
        "int8_sweep": sweep,
        "table": table(rows),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2, default=str) + "\n")
    print(report["table"])
    for row in sweep:
        s = row["speedup"]
        print(f"int8 sweep {row['model']}: {row['configuration']}: {s['cpu']:.2f}x CPU / {s['wall']:.2f}x wall, "
              f"1-cos {row['loss']:.3g}")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
