"""The openvino backend's own figures: compile cache, bf16/f16 vs f32, and NNCF INT8 vs f32.

- cache: ``OpenVinoBackend.compile`` of ResNet-50 into an empty ``cache_dir`` (cold) and again into
  the same folder (warm: the blob is imported), alternated ``--cache-repeats`` times in one process,
  plus one cold/warm pair in fresh processes (what a restarted service sees; the once-per-process
  setup -- OpenVINO Core and plugin loading, ONNX serialization, fingerprint -- timed apart);
- precision: ``EngineConfig.precision`` f32 (default) vs bf16 vs f16 on ResNet-50 and MobileNet-v2:
  the precision OpenVINO actually ran (``INFERENCE_PRECISION_HINT`` of the compiled model), error
  against f32 (cosine, largest difference relative to the output's range) and speed;
- int8: ``quantize_int8`` (NNCF, QDQ) of ResNet-50 calibrated on seeded random images, speed vs f32;
  and the digits CNN calibrated on scikit-learn's digits *training* split (the split
  ``tools/train_digits.py`` trained on), top-1 on the held-out split, f32 vs INT8.

Speed is compared in one process: the sides alternate in ``--blocks`` blocks of ``--calls`` calls
(order flipped every block), the first ``--drop`` calls of each block are dropped, and the figure is
the median over blocks of the per-block ratio of medians (see MEASURING.md).

    python benchmarks/openvino_backend.py [--blocks 8] [--calls 8] [--drop 2] [--threads 2]
                                          [--only cache,precision,int8]

Writes benchmarks/results/openvino_backend.json.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from _common import interleaved, machine

RESULTS = Path(__file__).resolve().parent / "results"
SECTIONS = ("cache", "precision", "int8")


# -- helpers ------------------------------------------------------------------------------------------


def _engine(graph, threads: int, **config):
    from edgecore import Engine, EngineConfig

    return Engine(EngineConfig(backend="openvino", device="cpu", num_threads=threads, **config)).load(graph)


def _feeds(graph, batch: int = 1, seed: int = 0) -> dict:
    from edgecore.inputs import random_feeds

    return random_feeds(graph.inputs, batch=batch, seed=seed)


def _agreement(reference: np.ndarray, other: np.ndarray) -> dict:
    a, b = reference.ravel().astype(np.float64), other.ravel().astype(np.float64)
    cosine = float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b) or 1.0))
    span = float(a.max() - a.min()) or 1.0
    return {"cosine": cosine, "max_abs_diff_over_range": float(np.abs(a - b).max() / span),
            "top1_agreement": None}


# -- sections -----------------------------------------------------------------------------------------


_CHILD = """
import json, sys, time
from edgecore.selection import load_graph
from edgecore.graph import Graph
from edgecore.config import EngineConfig
from edgecore_openvino_npu import _ov
from edgecore_openvino_npu.backend import OpenVinoBackend
graph = load_graph(sys.argv[1])
start = time.perf_counter()
graph.to_bytes(), graph.fingerprint, _ov.core().available_devices  # once per process and graph
setup = time.perf_counter() - start
options = EngineConfig(device="cpu", num_threads=int(sys.argv[3]), custom_options={"cache_dir": sys.argv[2]}).compile_options()
start = time.perf_counter()
model = OpenVinoBackend().compile(graph, options)
seconds = time.perf_counter() - start
print(json.dumps({"compile_s": seconds, "process_setup_s": setup, "loaded_from_cache": model.describe().get("loaded_from_cache")}))
"""


def cache_section(args) -> dict:
    from edgecore.config import EngineConfig
    from edgecore.graph import Graph
    from edgecore_openvino_npu.backend import OpenVinoBackend

    graph = load_graph("zoo:resnet50")
    graph.fingerprint  # hashed once per Graph, outside the timings
    backend = OpenVinoBackend()
    rows = []
    with tempfile.TemporaryDirectory() as root:
        for repeat in range(args.cache_repeats):
            folder = str(Path(root) / f"r{repeat}")
            options = EngineConfig(device="cpu", num_threads=args.threads,
                                   custom_options={"cache_dir": folder}).compile_options()
            row = {}
            for phase in ("cold", "warm"):
                start = time.perf_counter()
                model = backend.compile(graph, options)
                row[phase + "_s"] = time.perf_counter() - start
                row[phase + "_loaded_from_cache"] = model.describe().get("loaded_from_cache")
                model.close()
            rows.append(row)
            print(f"cache  resnet50 in-process   cold {row['cold_s']:.3f} s  warm {row['warm_s']:.3f} s")
        path = Path(root) / "model.onnx"
        path.write_bytes(graph.to_bytes())
        fresh = {}
        for phase in ("cold", "warm"):
            done = subprocess.run([sys.executable, "-c", _CHILD, str(path), str(Path(root) / "fresh"),
                                   str(args.threads)], capture_output=True, text=True, timeout=600)
            fresh[phase] = json.loads(done.stdout.strip().splitlines()[-1]) if done.returncode == 0 else done.stderr[-500:]
        print(f"cache  resnet50 fresh process cold {fresh['cold']}\n       warm {fresh['warm']}")
    cold = float(np.median([r["cold_s"] for r in rows]))
    warm = float(np.median([r["warm_s"] for r in rows]))
    return {
        "model": "resnet50",
        "what": "OpenVinoBackend.compile (ONNX bytes -> ov.CompiledModel), CPU, LATENCY, f32",
        "in_process": rows,
        "median_cold_s": cold,
        "median_warm_s": warm,
        "warm_over_cold": warm / cold,
        "fresh_processes": fresh,
        "fresh_processes_note": (
            "process_setup_s is paid once per process whether the cache is warm or not: OpenVINO's Core and "
            "CPU plugin loading, the Graph's ONNX serialization and its SHA-256 fingerprint"
        ),
        "fresh_warm_over_cold": _ratio(fresh, "compile_s"),
        "fresh_warm_over_cold_with_setup": _ratio(fresh, "compile_s", "process_setup_s"),
    }


def _ratio(fresh: dict, *keys: str) -> float | None:
    if not all(isinstance(fresh.get(phase), dict) for phase in ("cold", "warm")):
        return None
    total = {phase: sum(fresh[phase][k] for k in keys) for phase in ("cold", "warm")}
    return total["warm"] / total["cold"]


def precision_section(args) -> list[dict]:
    from edgecore.graph import Graph

    rows = []
    for name in ("resnet50", "mobilenet_v2"):
        graph = load_graph(f"zoo:{name}")
        engines = {p: _engine(graph, args.threads, precision=p) for p in ("f32", "bf16", "f16")}
        samples = [_feeds(graph, seed=s) for s in range(4)]
        reference = [engines["f32"].run(f) for f in samples]
        row = {"model": name, "precisions": {}}
        for precision, engine in engines.items():
            outputs = [engine.run(f) for f in samples]
            first = graph.outputs[0].name
            stacked_ref = np.concatenate([r[first] for r in reference])
            stacked = np.concatenate([o[first] for o in outputs])
            agreement = _agreement(stacked_ref, stacked)
            agreement["top1_agreement"] = float((stacked_ref.argmax(-1) == stacked.argmax(-1)).mean())
            row["precisions"][precision] = {
                "effective": engine.compiled.describe().get("inference_precision_hint"), **agreement,
            }
        feeds = samples[0]
        speed = interleaved({p: (lambda e=e: e.run(feeds)) for p, e in engines.items()},
                            blocks=args.blocks, calls=args.calls, drop=args.drop)
        row["speed"] = speed
        for engine in engines.values():
            engine.close()
        rows.append(row)
        for p, facts in row["precisions"].items():
            print(f"precision {name:12s} {p:5s} ran {facts['effective']:5s} cosine {facts['cosine']:.6f} "
                  f"median {speed['median_ms'][p]:.2f} ms")
    return rows


def int8_section(args) -> dict:
    from edgecore import zoo
    from edgecore.graph import Graph
    from edgecore_openvino_npu.quantize import quantize_int8

    graph = load_graph("zoo:resnet50")
    rng = np.random.default_rng(0)
    calibration = {"input": rng.standard_normal((args.calibration, 3, 224, 224)).astype(np.float32)}
    start = time.perf_counter()
    quantized = quantize_int8(graph, calibration, subset_size=args.calibration)
    quantize_s = time.perf_counter() - start
    f32, int8 = _engine(graph, args.threads), _engine(quantized, args.threads)
    feeds = _feeds(graph, seed=1)
    agreement = _agreement(f32.run(feeds)["logits"], int8.run(feeds)["logits"])
    speed = interleaved({"f32": lambda: f32.run(feeds), "int8": lambda: int8.run(feeds)},
                        blocks=args.blocks, calls=args.calls, drop=args.drop)
    f32.close()
    int8.close()
    speedup = 1.0 / speed["ratio"]["int8"]
    print(f"int8   resnet50 f32 {speed['median_ms']['f32']:.2f} ms  int8 {speed['median_ms']['int8']:.2f} ms  "
          f"speedup {speedup:.2f}x (quantized in {quantize_s:.1f} s)")

    images, labels = zoo.digits_test_split()
    calibration_source = "scikit-learn digits training split (stratified 75%, seed 0, pixels / 16)"
    try:
        from sklearn.datasets import load_digits
        from sklearn.model_selection import train_test_split

        digits = load_digits()
        x = (digits.images / 16.0).astype(np.float32)[:, None]
        train, _, _, _ = train_test_split(x, digits.target, test_size=0.25, stratify=digits.target, random_state=0)
        train = train[:300]
    except ImportError:
        train, images, labels = images[:150], images[150:], labels[150:]
        calibration_source = "first 150 images of the held-out split (scikit-learn missing); evaluated on the rest"
    digits_graph = load_graph("zoo:digits_cnn")
    digits_int8 = quantize_int8(digits_graph, {"input": train}, subset_size=len(train))
    top1 = {}
    for label, g in (("f32", digits_graph), ("int8", digits_int8)):
        with _engine(g, args.threads) as engine:
            top1[label] = float((engine.run({"input": images})["logits"].argmax(1) == labels).mean())
    loss = 100 * (top1["f32"] - top1["int8"])
    print(f"int8   digits_cnn top-1 f32 {top1['f32']:.4f} int8 {top1['int8']:.4f} loss {loss:.2f} points")
    return {
        "resnet50": {
            "calibration": f"{args.calibration} seeded standard-normal images (weights are seeded too)",
            "quantize_s": quantize_s,
            "speed": speed,
            "speedup_int8_over_f32": speedup,
            "agreement_with_f32": agreement,
        },
        "digits_cnn": {
            "calibration": calibration_source,
            "calibration_samples": int(len(train)),
            "test_samples": int(len(labels)),
            "top1": top1,
            "top1_loss_points": loss,
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--blocks", type=int, default=8)
    parser.add_argument("--calls", type=int, default=8)
    parser.add_argument("--drop", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--cache-repeats", type=int, default=3)
    parser.add_argument("--calibration", type=int, default=16, help="ResNet-50 calibration images")
    parser.add_argument("--only", default=",".join(SECTIONS), help=f"comma-separated subset of {SECTIONS}")
    parser.add_argument("--out", type=Path, default=RESULTS / "openvino_backend.json")
    args = parser.parse_args()
    only = [s for s in args.only.split(",") if s]
    unknown = sorted(set(only) - set(SECTIONS))
    if unknown:
        parser.error(f"unknown sections {unknown}; known: {SECTIONS}")
    report = {
        "benchmark": "openvino_backend",
        "method": (
            f"one process per section; speed: sides alternate in {args.blocks} blocks of {args.calls} calls "
            f"(order flipped each block), first {args.drop} calls of each block dropped, batch 1, "
            f"{args.threads} threads, CPU device, LATENCY hint; ratio = median over blocks of per-block medians"
        ),
        "machine": machine(),
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    if args.out.exists():  # keep sections measured by an earlier --only run
        previous = json.loads(args.out.read_text())
        report.update({k: previous[k] for k in SECTIONS if k in previous and k not in only})
    for section in only:
        report[section] = {"cache": cache_section, "precision": precision_section, "int8": int8_section}[section](args)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
