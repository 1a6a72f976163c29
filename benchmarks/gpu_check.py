"""The torch backend on a GPU: correctness against ONNX Runtime (CPU), latency and throughput against
hand-written PyTorch (eager, and with CUDA graphs) on the same card in the same run, and the
scheduler's batching throughput. Run through ``benchmarks/gpu_check.sh`` on a lent GPU machine.

    python benchmarks/gpu_check.py                       # CUDA: ResNet-50, MobileNet-v2, BERT-base
    python benchmarks/gpu_check.py --device cpu --quick  # the CPU-side smoke run (tiny models)

Method (benchmarks/MEASURING.md): every side is built once in this process; sides run in blocks of
``--iters`` calls (first ``--drop`` dropped), the order flipping every round, ``--rounds`` rounds;
each call is timed from launch to ``torch.cuda.synchronize()``. Inputs and outputs stay on the
device for the three compared sides (edgecore: torch CUDA tensors in, ``output_device="device"``),
so the figures compare the engines, not the copies; edgecore with numpy in and out is a fourth
column. Hand-written models: torchvision's ResNet-50 and MobileNet-v2, transformers' BERT-base
(random weights: speed does not depend on them), fp16, channels-last, cuDNN benchmark mode on for
every side.

Writes ``benchmarks/results/gpu_<card>.json`` (``--out`` for another folder) and prints a table last.
"""

from __future__ import annotations

import argparse
import json
import platform
import re
import statistics
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from edgecore import Engine, EngineConfig
from edgecore.selection import load_graph

RESULTS = Path(__file__).resolve().parent / "results"

#: name -> (zoo model, zoo options, baseline builder key, sequence length or None)
FULL = {
    "ResNet-50": ("resnet50", {}, "resnet50", None),
    "MobileNet-v2": ("mobilenet_v2", {}, "mobilenet_v2", None),
    "BERT-base": ("bert_base", {}, "bert_base", 128),
}
QUICK = {
    "ResNet-tiny": ("resnet_tiny", {}, None, None),
    "MobileNet-v2-tiny": ("mobilenet_v2_tiny", {}, None, None),
    "BERT-tiny": ("bert_tiny", {}, None, 16),
}
CORRECTNESS_ONLY = {"EfficientNet-B0": ("efficientnet_b0", {}, None, None)}


# -- inputs ----------------------------------------------------------------------------------------


def feeds_for(graph, batch: int, sequence: int | None, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    feeds = {}
    for spec in graph.inputs:
        shape = [d if isinstance(d, int) else (batch if i == 0 else sequence) for i, d in enumerate(spec.shape)]
        if spec.dtype.numpy == np.int64:
            if "mask" in spec.name:
                feeds[spec.name] = np.ones(shape, np.int64)
            elif "type" in spec.name:
                feeds[spec.name] = np.zeros(shape, np.int64)
            else:
                feeds[spec.name] = rng.integers(0, 1000, shape).astype(np.int64)
        else:
            feeds[spec.name] = rng.standard_normal(shape).astype(np.float32)
    return feeds


# -- correctness -----------------------------------------------------------------------------------


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.astype(np.float64).ravel(), b.astype(np.float64).ravel()
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b) + 1e-30))


def correctness(name: str, graph, device: str, sequence: int | None) -> dict[str, Any]:
    import onnxruntime

    feeds = feeds_for(graph, 2, sequence, seed=1)
    session = onnxruntime.InferenceSession(graph.to_bytes(), providers=["CPUExecutionProvider"])
    want = dict(zip([o.name for o in session.get_outputs()], session.run(None, feeds)))
    row: dict[str, Any] = {"model": name}
    for precision in ("fp32", "fp16"):
        config = EngineConfig(backend="torch", device=device, precision=precision)
        with Engine(config).load(graph) as engine:
            got = engine.run(feeds)
            got = engine.run(feeds)  # the replayed (and, on CUDA, soon captured) plan
        errors = {k: float(np.abs(got[k] - v).max() / (np.abs(v).max() + 1e-12)) for k, v in want.items()}
        row[precision] = {
            "max_error_of_range": max(errors.values()),
            "cosine": min(_cosine(got[k], v) for k, v in want.items()),
        }
    row["fp32_ok"] = row["fp32"]["max_error_of_range"] < (5e-3 if device != "cpu" else 1e-4)
    row["fp16_ok"] = row["fp16"]["cosine"] > 0.999
    return row


# -- hand-written PyTorch --------------------------------------------------------------------------


def baseline_model(key: str | None, device: str, dtype: torch.dtype) -> tuple[Callable | None, str]:
    """(build(batch, sequence) -> (module, inputs), what it is) or (None, why not)."""
    if key is None:
        return None, "no hand-written model for tiny variants"
    try:
        if key in ("resnet50", "mobilenet_v2"):
            import torchvision

            module = getattr(torchvision.models, key)(weights=None)
            module = module.eval().to(device=device, dtype=dtype).to(memory_format=torch.channels_last)

            def build(batch: int, sequence: int | None):
                x = torch.randn(batch, 3, 224, 224, device=device, dtype=dtype).to(memory_format=torch.channels_last)
                return module, {"x": x}

            return build, f"torchvision {torchvision.__version__} {key}"
        import transformers

        config = transformers.BertConfig()  # bert-base-uncased's shape
        module = transformers.BertModel(config).eval().to(device=device, dtype=dtype)

        def build(batch: int, sequence: int | None):
            ids = torch.randint(0, 1000, (batch, sequence), device=device)
            return module, {
                "input_ids": ids,
                "attention_mask": torch.ones_like(ids),
                "token_type_ids": torch.zeros_like(ids),
            }

        attention = getattr(config, "_attn_implementation", None) or "default"
        return build, f"transformers {transformers.__version__} BertModel (attention: {attention})"
    except Exception as exc:  # torchvision / transformers missing
        return None, f"unavailable: {exc!r}"


def _call(module, inputs):
    if "x" in inputs:
        return lambda: module(inputs["x"])
    return lambda: module(**inputs)


def _graphed(fn: Callable) -> Callable:
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(3):
            fn()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        fn()
    return graph.replay


# -- timing ----------------------------------------------------------------------------------------


def _sync(device: str) -> Callable[[], None]:
    return torch.cuda.synchronize if device.startswith("cuda") or device == "gpu" else (lambda: None)


def interleaved(sides: dict[str, Callable], sync: Callable, rounds: int, iters: int, drop: int) -> dict[str, dict]:
    samples: dict[str, list[float]] = {name: [] for name in sides}
    order = list(sides)
    with torch.no_grad():
        for r in range(rounds):
            for name in order if r % 2 == 0 else list(reversed(order)):
                fn = sides[name]
                for i in range(iters + drop):
                    start = time.perf_counter()
                    fn()
                    sync()
                    if i >= drop:
                        samples[name].append(time.perf_counter() - start)
    return {
        name: {"median_ms": statistics.median(v) * 1e3, "p90_ms": float(np.percentile(v, 90)) * 1e3, "calls": len(v)}
        for name, v in samples.items()
    }


def speed(name: str, zoo_name: str, graph, key: str | None, sequence: int | None, batch: int, args) -> dict[str, Any]:
    device = "cuda" if args.device == "cuda" else "cpu"
    precision = "fp16" if device == "cuda" else "fp32"
    dtype = torch.float16 if device == "cuda" else torch.float32
    options = {"output_device": "device"}
    if device == "cuda":
        options["cudnn_benchmark"] = True
    engine = Engine(EngineConfig(backend="torch", device="gpu" if device == "cuda" else "cpu", precision=precision, custom_options=options)).load(graph)
    host = Engine(EngineConfig(backend="torch", device="gpu" if device == "cuda" else "cpu", precision=precision)).load(graph)
    feeds = feeds_for(graph, batch, sequence)
    device_feeds = {k: torch.from_numpy(v).to(device) for k, v in feeds.items()}
    sides: dict[str, Callable] = {
        "edgecore": lambda: engine.run(device_feeds),
        "edgecore_host_io": lambda: host.run(feeds),
    }
    build, baseline = baseline_model(key, device, dtype)
    notes = []
    if build is not None:
        if device == "cuda":
            torch.backends.cudnn.benchmark = True
        module, inputs = build(batch, sequence)
        with torch.no_grad():
            eager = _call(module, inputs)
            sides["torch_eager"] = eager
            if device == "cuda":
                try:
                    sides["torch_cuda_graphs"] = _graphed(eager)
                except Exception as exc:  # e.g. a model that reads a mask's values while capturing
                    torch.cuda.synchronize()
                    notes.append(f"hand-written CUDA-graph capture failed with the attention mask: {exc!r}")
                    if "attention_mask" in inputs:
                        unmasked = {k: v for k, v in inputs.items() if k != "attention_mask"}
                        try:
                            sides["torch_cuda_graphs"] = _graphed(_call(module, unmasked))
                            notes.append("torch_cuda_graphs ran without attention_mask (all ones: same result)")
                        except Exception as again:
                            torch.cuda.synchronize()
                            notes.append(f"and without it: {again!r}")
    with torch.no_grad():
        for fn in sides.values():  # records plans, captures graphs, tunes cuDNN
            for _ in range(3 + 1):
                fn()
    timings = interleaved(sides, _sync(device), args.rounds, args.iters, args.drop)
    signatures = engine.compiled.signatures()
    engine.close()
    host.close()
    row = {
        "model": name,
        "zoo": zoo_name,
        "batch": batch,
        "precision": precision,
        "baseline": baseline,
        "timings": timings,
        "edgecore_cuda_graph": bool(signatures and signatures[0]["cuda_graph"]),
        "notes": notes,
        "items_per_s": {k: batch / (v["median_ms"] / 1e3) for k, v in timings.items()},
    }
    for reference in ("torch_cuda_graphs", "torch_eager"):
        if reference in timings:
            row[f"edgecore_vs_{reference}"] = timings["edgecore"]["median_ms"] / timings[reference]["median_ms"]
    return row


# -- the scheduler ---------------------------------------------------------------------------------


def scheduler(name: str, graph, args) -> dict[str, Any]:
    """Closed-loop clients through dynamic batching vs one thread calling run (batch 1, numpy I/O)."""
    device = "gpu" if args.device == "cuda" else "cpu"
    precision = "fp16" if args.device == "cuda" else "fp32"
    x = feeds_for(graph, 1, None)
    seconds, clients = (min(args.scheduler_seconds, 1.0), 4) if args.quick else (args.scheduler_seconds, 32)
    serial_engine = Engine(EngineConfig(backend="torch", device=device, precision=precision)).load(graph)
    config = EngineConfig(
        backend="torch", device=device, precision=precision, max_batch_size=32,
        preferred_batch_sizes=(1, 2, 4, 8, 16, 32), max_queue_delay_us=500,
        custom_options={"max_signatures": 64},  # a plan (and CUDA graph) per batch size the scheduler forms
    )
    batched = Engine(config).load(graph)

    def serial() -> int:
        done, end = 0, time.perf_counter() + seconds
        while time.perf_counter() < end:
            serial_engine.run(x)
            done += 1
        return done

    def concurrent() -> int:
        end = time.perf_counter() + seconds
        counts = [0] * clients

        def client(i: int) -> None:
            while time.perf_counter() < end:
                batched.submit(x).result()
                counts[i] += 1

        threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        return sum(counts)

    serial(), concurrent()  # warm-up: plans and graphs for the batch sizes the scheduler forms
    serial_n, batched_n = serial(), concurrent()
    stats = batched.stats()
    serial_engine.close()
    batched.close()
    return {
        "model": name,
        "clients": clients,
        "seconds": seconds,
        "serial_per_s": serial_n / seconds,
        "batched_per_s": batched_n / seconds,
        "speedup": (batched_n / seconds) / max(serial_n / seconds, 1e-9),
        "batch_sizes": {str(k): v for k, v in sorted(stats.batch_size_histogram.items())},
    }


# -- report ----------------------------------------------------------------------------------------


def environment(device: str) -> dict[str, Any]:
    env: dict[str, Any] = {"python": platform.python_version(), "torch": torch.__version__}
    try:
        from edgecore.bench.machine import machine_info

        env["machine"] = machine_info()
    except Exception as exc:
        env["machine"] = {"error": repr(exc)}
    if device == "cuda":
        props = torch.cuda.get_device_properties(0)
        env["gpu"] = {
            "name": props.name,
            "compute_capability": f"{props.major}.{props.minor}",
            "memory_gb": round(props.total_memory / 2**30, 1),
            "multiprocessors": props.multi_processor_count,
            "cuda": torch.version.cuda,
            "cudnn": torch.backends.cudnn.version(),
        }
    return env


def table(report: dict[str, Any]) -> str:
    lines = [f"edgecore torch backend on {report['card']} ({report['device']})", ""]
    lines.append(f"{'model':<18}{'batch':>6}{'edgecore ms':>13}{'torch+graphs':>14}{'torch eager':>13}{'ratio':>8}{'items/s':>11}{'host I/O ms':>13}")
    for row in report["speed"]:
        t = row["timings"]
        graphs = t.get("torch_cuda_graphs", {}).get("median_ms")
        eager = t.get("torch_eager", {}).get("median_ms")
        ratio = row.get("edgecore_vs_torch_cuda_graphs") or row.get("edgecore_vs_torch_eager")
        lines.append(
            f"{row['model']:<18}{row['batch']:>6}{t['edgecore']['median_ms']:>13.3f}"
            f"{graphs if graphs is not None else float('nan'):>14.3f}{eager if eager is not None else float('nan'):>13.3f}"
            f"{ratio if ratio is not None else float('nan'):>8.2f}{row['items_per_s']['edgecore']:>11.0f}"
            f"{t['edgecore_host_io']['median_ms']:>13.3f}"
        )
    lines.append("ratio = edgecore / torch with CUDA graphs (eager where no graphs); goal <= 1.10 at batch 1")
    lines.append("")
    for row in report["correctness"]:
        lines.append(
            f"{row['model']:<18} vs ORT CPU: fp32 max error {row['fp32']['max_error_of_range']:.2e} of range "
            f"({'ok' if row['fp32_ok'] else 'FAIL'}), fp16 cosine {row['fp16']['cosine']:.5f} ({'ok' if row['fp16_ok'] else 'FAIL'})"
        )
    s = report.get("scheduler")
    if s:
        lines.append(
            f"scheduler ({s['model']}, {s['clients']} clients, batch-1 requests): {s['batched_per_s']:.0f}/s batched vs "
            f"{s['serial_per_s']:.0f}/s serial = {s['speedup']:.2f}x; batch sizes {s['batch_sizes']}"
        )
    if report.get("tests"):
        lines.append(f"tests: {report['tests']}")
    return "\n".join(lines)


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    parser.add_argument("--quick", action="store_true", help="tiny models, few calls (the CPU-side smoke run)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--iters", type=int, default=50)
    parser.add_argument("--drop", type=int, default=5)
    parser.add_argument("--scheduler-seconds", type=float, default=4.0)
    parser.add_argument("--batches", default="1,32")
    parser.add_argument("--models", help="comma-separated names from the table (default: all)")
    parser.add_argument("--pytest-log", type=Path, help="pytest's output, whose summary goes in the report")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        print("no CUDA device: torch.cuda.is_available() is False (use --device cpu)", file=sys.stderr)
        return 2
    if args.quick:
        args.rounds, args.iters, args.drop = min(args.rounds, 2), min(args.iters, 5), min(args.drop, 1)
        if args.batches == "1,32":
            args.batches = "1,4"
    models = QUICK if args.quick else FULL
    if args.models:
        wanted = args.models.split(",")
        unknown = sorted(set(wanted) - set(models))
        if unknown:
            parser.error(f"unknown models {unknown}; known: {sorted(models)}")
        models = {k: v for k, v in models.items() if k in wanted}
    batches = [int(b) for b in args.batches.split(",")]
    card = torch.cuda.get_device_name(0) if args.device == "cuda" else "cpu"
    report: dict[str, Any] = {"card": card, "device": args.device, "quick": args.quick, "environment": environment(args.device)}
    report["method"] = __doc__.split("Method (benchmarks/MEASURING.md): ")[1].split("\n\nWrites")[0].replace("\n", " ")
    report["correctness"], report["speed"] = [], []
    correctness_models = dict(models, **({} if args.quick or args.models else CORRECTNESS_ONLY))
    for name, (zoo_name, options, key, sequence) in correctness_models.items():
        graph = load_graph(f"zoo:{zoo_name}")
        print(f"correctness: {name}", flush=True)
        report["correctness"].append(correctness(name, graph, "gpu" if args.device == "cuda" else "cpu", sequence))
        if name in models:
            for batch in batches:
                print(f"speed: {name} batch {batch}", flush=True)
                report["speed"].append(speed(name, zoo_name, graph, key, sequence, batch, args))
        del graph
    print("scheduler", flush=True)
    sched_model = "mobilenet_v2_tiny" if args.quick else "mobilenet_v2"
    report["scheduler"] = scheduler(sched_model, load_graph(f"zoo:{sched_model}"), args)
    if args.pytest_log and args.pytest_log.is_file():
        summary = [l for l in args.pytest_log.read_text().splitlines() if re.search(r"\d+ (passed|failed|error)", l)]
        report["tests"] = summary[-1].strip("= ") if summary else "no summary line"
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / (f"gpu_{_slug(card)}.json" if args.device == "cuda" else "gpu_check_cpu.json")
    path.write_text(json.dumps(report, indent=2, default=str))
    print(f"wrote {path}\n")
    print(table(report))
    failed = [r["model"] for r in report["correctness"] if not (r["fp32_ok"] and r["fp16_ok"])]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
