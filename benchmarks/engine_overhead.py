"""What edgecore adds over the raw runtime: Engine.run vs onnxruntime.InferenceSession.run, and (when
edgecore-openvino-npu is installed) Engine.run on the openvino backend vs OpenVINO's InferRequest.infer.

Same model, same session options (taken from the cpu_simd backend itself), same thread count, one
process. The two sides alternate in blocks of calls and the first calls of each block are dropped, so
that one side's spinning worker threads do not tax the other (see MEASURING.md). Figures: median
latency per side over every kept call, and the median over blocks of the per-block ratio.

    python benchmarks/engine_overhead.py [--blocks 40] [--calls 40] [--threads 2]

Writes benchmarks/results/engine_overhead.json.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
from _common import interleaved, machine

RESULTS = Path(__file__).resolve().parent / "results"

#: (label, zoo model, builder options). On this project's 2-core AVX2 machines: MobileNet-v2 at 224 px
#: ~11 ms, at 64 px ~1.8 ms ("about 2 ms"), EfficientNet-tiny at 64 px ~0.5 ms.
MODELS = (
    ("mobilenet_v2@224", "mobilenet_v2", {}),
    ("mobilenet_v2@64", "mobilenet_v2", {"image_size": 64}),
    ("efficientnet_tiny@64", "efficientnet_tiny", {"image_size": 64}),
)


def measure_cpu_simd(label: str, name: str, options: dict, args) -> dict:
    import onnxruntime as ort

    from edgecore import Engine, EngineConfig, zoo
    from edgecore.inputs import random_feeds

    model = zoo.build(name, **options)
    config = EngineConfig(backend="cpu_simd", num_threads=args.threads)
    engine = Engine(config).load(model)
    # The raw side calls the very InferenceSession edgecore compiled (same options, same thread pool):
    # two sessions would each keep a pool of spinning threads that tax the other on 2 cores.
    session = engine.compiled.session
    assert isinstance(session, ort.InferenceSession)
    feeds = random_feeds(engine.inputs, batch=1)
    want = session.run(None, feeds)
    got = engine.run(feeds)
    agree = all(np.allclose(got[o.name], w, rtol=1e-5, atol=1e-6) for o, w in zip(session.get_outputs(), want))
    for _ in range(20):  # warm both
        session.run(None, feeds)
        engine.run(feeds)
    result = interleaved(
        {"onnxruntime": lambda: session.run(None, feeds), "edgecore": lambda: engine.run(feeds)},
        blocks=args.blocks, calls=args.calls, drop=args.drop,
    )
    engine.close()
    result.update(model=label, backend="cpu_simd", runtime="onnxruntime.InferenceSession.run", outputs_agree=agree,
                  overhead_us=(result["median_ms"]["edgecore"] - result["median_ms"]["onnxruntime"]) * 1e3)
    return result


def measure_openvino(label: str, name: str, options: dict, args) -> dict | None:
    """Engine.run on the openvino backend vs OpenVINO's fastest raw call on the same compiled settings.

    The raw side is ``InferRequest.infer(feeds, share_inputs=True, share_outputs=True)`` on a model
    compiled with the properties the backend itself resolves (device CPU, LATENCY hint, f32, threads).
    """
    try:
        from edgecore_openvino_npu.baseline import openvino_request
    except ImportError:
        return None
    from edgecore import Engine, EngineConfig, zoo
    from edgecore.inputs import random_feeds

    model = zoo.build(name, **options)
    config = EngineConfig(backend="openvino", device="cpu", num_threads=args.threads)
    engine = Engine(config).load(model)
    compiled, request, properties = openvino_request(engine.graph, config.compile_options())
    feeds = random_feeds(engine.inputs, batch=1)
    want = request.infer(feeds)
    got = engine.run(feeds)
    agree = all(np.allclose(got[o.get_any_name()], want[o], rtol=1e-5, atol=1e-6) for o in compiled.outputs)
    infer = request.infer
    for _ in range(20):  # warm both
        infer(feeds, share_inputs=True, share_outputs=True)
        engine.run(feeds)
    result = interleaved(
        {"openvino": lambda: infer(feeds, share_inputs=True, share_outputs=True), "edgecore": lambda: engine.run(feeds)},
        blocks=args.blocks, calls=args.calls, drop=args.drop,
    )
    engine.close()
    result.update(model=label, backend="openvino", runtime="openvino InferRequest.infer(share_inputs, share_outputs)",
                  outputs_agree=agree, settings={k: str(v) for k, v in properties.items()},
                  overhead_us=(result["median_ms"]["edgecore"] - result["median_ms"]["openvino"]) * 1e3)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--blocks", type=int, default=40)
    parser.add_argument("--calls", type=int, default=40)
    parser.add_argument("--drop", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=RESULTS / "engine_overhead.json")
    args = parser.parse_args()
    rows = []
    for label, name, options in MODELS:
        for measure, raw in ((measure_cpu_simd, "onnxruntime"), (measure_openvino, "openvino")):
            row = measure(label, name, options, args)
            if row is None:
                continue
            rows.append(row)
            print(
                f"{row['backend']:10s} {label:18s} raw {row['median_ms'][raw]:.3f} ms  "
                f"edgecore {row['median_ms']['edgecore']:.3f} ms  ratio {row['ratio']['edgecore']:.4f} "
                f"(IQR {row['ratio_iqr']['edgecore'][0]:.3f}-{row['ratio_iqr']['edgecore'][1]:.3f})  "
                f"overhead {row['overhead_us']:.1f} us"
            )
    report = {
        "benchmark": "engine_overhead",
        "method": (
            f"one process; sides alternate in {args.blocks} blocks of {args.calls} calls (order flipped each "
            f"block), first {args.drop} calls of each block dropped; batch 1, {args.threads} intra-op threads, "
            "identical settings; cpu_simd's raw side is onnxruntime.InferenceSession.run on the session edgecore "
            "compiled (one thread pool); openvino's raw side is InferRequest.infer on a model compiled with the "
            "properties the backend resolves; ratio = edgecore / raw runtime"
        ),
        "machine": machine(),
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "results": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
