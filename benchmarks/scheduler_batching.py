"""Dynamic batching against serial batch-1 inference, with N concurrent clients (threads and asyncio).

For each model every engine is loaded once, in one process, and the variants run in interleaved
blocks (``--rounds`` rounds of ``--seconds`` each, the first ``--warmup`` seconds of a block
dropped), so that figures are compared inside one process as ``benchmarks/MEASURING.md`` asks:

* ``serial``: one thread calling ``engine.run`` (batch 1), the baseline every ratio divides by;
* ``off``: N clients through the scheduler with ``max_batch_size=1``;
* ``fixed-B``: N clients, batches of up to B (Triton rules, ``max_queue_delay_us`` as given);
* ``adaptive``: N clients, adaptive batch size up to ``--max-batch``;
* ``adaptive-2x1``: the same with ``instances=2`` of one thread each.

Each client sends one request, waits for it, and sends the next (closed loop). Throughput is
requests answered per second; p50/p99 are client-side latencies. Also measured:

* ``overhead``: scheduling overhead at batch 1 on an Identity model, one caller: ``submit().result()``
  and ``engine.run`` through the queue, minus a direct ``CompiledModel.run``, beside a bare thread
  handoff (SimpleQueue + Future, what any worker-thread design pays at least);
* ``stress``: ``--stress`` requests from 64 threads with random priorities, short timeouts, bursts
  past a bounded queue and ``close()`` while in flight; every answer checked against a direct run.

Writes ``benchmarks/results/scheduler_batching.json`` (machine, versions, method, figures).

    python benchmarks/scheduler_batching.py                      # digits, MobileNet-v2 112/224, ResNet-50
    python benchmarks/scheduler_batching.py --models mobilenet_v2 --clients thread:32
    python benchmarks/scheduler_batching.py --quick              # a smoke run
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import json
import os
import queue
import random
import statistics
import sys
import threading
import time
from pathlib import Path

import numpy as np
from _common import machine

from edgecore import Engine, EngineConfig, QueueFullError, RequestTimeoutError
from edgecore.errors import EngineClosedError

RESULTS = Path(__file__).resolve().parent / "results"
SECONDS = {"mobilenet_v2:image_size=112": 4.0, "mobilenet_v2": 5.0, "resnet50": 10.0}  # per-block seconds for slow models (default: --seconds)


# -- clients -------------------------------------------------------------------------------------


def _percentiles(latencies: list[float]) -> dict:
    if not latencies:
        return {"p50_ms": None, "p99_ms": None}
    p50, p99 = np.percentile(np.array(latencies) * 1e3, (50, 99))
    return {"p50_ms": round(float(p50), 3), "p99_ms": round(float(p99), 3)}


def run_serial(engine: Engine, feeds: list[dict], seconds: float, warmup: float) -> dict:
    latencies = []
    start = time.perf_counter()
    measure_from, stop = start + warmup, start + warmup + seconds
    i = 0
    while True:
        t0 = time.perf_counter()
        if t0 >= stop:
            break
        engine.run(feeds[i % len(feeds)])
        i += 1
        if t0 >= measure_from:
            latencies.append(time.perf_counter() - t0)
    return {"throughput": len(latencies) / seconds, **_percentiles(latencies)}


def run_threads(engine: Engine, feeds: list[dict], clients: int, seconds: float, warmup: float) -> dict:
    start = time.perf_counter()
    measure_from, stop = start + warmup, start + warmup + seconds
    per_client: list[list[float]] = [[] for _ in range(clients)]

    def client(index: int) -> None:
        mine = per_client[index]
        feed = feeds[index % len(feeds)]
        while True:
            t0 = time.perf_counter()
            if t0 >= stop:
                return
            engine.submit(feed).result()
            if t0 >= measure_from:
                mine.append(time.perf_counter() - t0)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    latencies = [x for mine in per_client for x in mine]
    return {"throughput": len(latencies) / seconds, **_percentiles(latencies)}


def run_asyncio(engine: Engine, feeds: list[dict], clients: int, seconds: float, warmup: float) -> dict:
    latencies: list[float] = []

    async def client(index: int, measure_from: float, stop: float) -> None:
        feed = feeds[index % len(feeds)]
        while True:
            t0 = time.perf_counter()
            if t0 >= stop:
                return
            await engine.run_async(feed)
            if t0 >= measure_from:
                latencies.append(time.perf_counter() - t0)

    async def main() -> None:
        start = time.perf_counter()
        await asyncio.gather(*(client(i, start + warmup, start + warmup + seconds) for i in range(clients)))

    asyncio.run(main())
    return {"throughput": len(latencies) / seconds, **_percentiles(latencies)}


# -- throughput ----------------------------------------------------------------------------------


def variants(max_batch: int, fixed: list[int], delay_us: int) -> dict[str, dict]:
    out = {"serial": {}, "off": {"max_batch_size": 1}}
    for size in fixed:
        out[f"fixed-{size}"] = {"max_batch_size": size, "adaptive_batching": False, "max_queue_delay_us": delay_us}
    out["adaptive"] = {"max_batch_size": max_batch, "adaptive_batching": True, "max_queue_delay_us": delay_us}
    out["adaptive-2x1"] = {
        "max_batch_size": max_batch, "adaptive_batching": True, "max_queue_delay_us": delay_us,
        "instances": 2, "num_threads": 1,
    }
    return out


def load_source(name: str):
    """``NAME`` or ``NAME:key=value,...`` (zoo builder options, e.g. ``mobilenet_v2:image_size=112``)."""
    if ":" not in name:
        return f"zoo:{name}"
    from edgecore import zoo

    base, _, options = name.partition(":")
    kwargs = {k: int(v) if v.isdigit() else float(v) for k, v in (o.split("=") for o in options.split(","))}
    return zoo.build(base, **kwargs)


def bench_model(name: str, args: argparse.Namespace) -> dict:
    threads = args.threads or os.cpu_count() or 1
    seconds = args.seconds if args.quick else {**SECONDS, **args.model_seconds}.get(name, args.seconds)
    configs = variants(args.max_batch, args.fixed, args.delay_us)
    engines = {}
    source = load_source(name)
    for label, overrides in configs.items():
        config = EngineConfig(**{"num_threads": threads, **overrides})
        engines[label] = Engine(config).load(source)
    spec = engines["serial"].inputs[0]
    shape = tuple(d if isinstance(d, int) else 1 for d in spec.shape)
    rng = np.random.default_rng(0)
    feeds = [{spec.name: rng.standard_normal(shape).astype(spec.dtype.numpy)} for _ in range(16)]
    for label, engine in engines.items():  # compile every batch shape the runs may meet, once
        engine.run(feeds[0])
    print(f"\n{name}: input {spec.describe()}, {threads} threads, variants {list(configs)}", file=sys.stderr)

    combos = [tuple(c.split(":")) for c in args.clients]
    blocks: dict[str, dict[str, list[dict]]] = {}
    for round_ in range(args.rounds):
        serial = run_serial(engines["serial"], feeds, seconds, args.warmup)
        blocks.setdefault("serial", {}).setdefault("serial", []).append(serial)
        print(f"  round {round_}: serial {serial['throughput']:.1f}/s", file=sys.stderr)
        for kind, count in combos:
            combo = f"{kind}:{count}"
            for label in configs:
                if label == "serial":
                    continue
                runner = run_threads if kind == "thread" else run_asyncio
                before = dict(engines[label].stats().batch_size_histogram)
                result = runner(engines[label], feeds, int(count), seconds, args.warmup)
                after = engines[label].stats().batch_size_histogram
                result["batch_sizes"] = {k: v - before.get(k, 0) for k, v in after.items() if v - before.get(k, 0)}
                scheduler = engines[label]._scheduler
                if scheduler is not None and scheduler.adaptive is not None:
                    result["adaptive_chosen"] = scheduler.adaptive.chosen
                    result["adaptive_items_per_s_by_limit"] = scheduler.adaptive.snapshot()
                blocks.setdefault(combo, {}).setdefault(label, []).append(result)
                print(
                    f"  round {round_} {combo:10s} {label:13s} {result['throughput']:8.1f}/s "
                    f"p50 {result['p50_ms']} p99 {result['p99_ms']} ms",
                    file=sys.stderr,
                )
    for engine in engines.values():
        engine.close()

    serial_tp = statistics.median(b["throughput"] for b in blocks["serial"]["serial"])
    summary: dict = {"serial": _summarize(blocks["serial"]["serial"], serial_tp)}
    for combo, by_label in blocks.items():
        if combo == "serial":
            continue
        rows = {label: _summarize(runs, serial_tp) for label, runs in by_label.items()}
        fixed_best = max([serial_tp] + [rows[l]["throughput"] for l in rows if l.startswith("fixed-")])
        for row in rows.values():
            row["vs_best_of_serial_and_fixed"] = round(row["throughput"] / fixed_best, 3)
        summary[combo] = rows
    return {"input": spec.describe(), "threads": threads, "seconds_per_block": seconds, "blocks": blocks, "summary": summary}


def _summarize(runs: list[dict], serial_tp: float) -> dict:
    tp = statistics.median(r["throughput"] for r in runs)
    row = {
        "throughput": round(tp, 2),
        "vs_serial": round(tp / serial_tp, 3),
        "p50_ms": statistics.median(r["p50_ms"] for r in runs if r["p50_ms"] is not None),
        "p99_ms": statistics.median(r["p99_ms"] for r in runs if r["p99_ms"] is not None),
    }
    if "adaptive_chosen" in runs[-1]:
        row["adaptive_chosen"] = runs[-1]["adaptive_chosen"]
    return row


# -- overhead ------------------------------------------------------------------------------------


def bench_overhead(args: argparse.Namespace) -> dict:
    """Batch-1 scheduling overhead on an Identity model: every path timed in interleaved blocks."""
    from onnx import TensorProto, helper

    from edgecore.testing.graphs import make_model

    model = make_model(
        [helper.make_node("Identity", ["x"], ["y"])],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 16])],
    )
    feeds = {"x": np.ones((1, 16), np.float32)}
    off = Engine(EngineConfig(num_threads=1, max_batch_size=1)).load(model)
    adaptive = Engine(EngineConfig(num_threads=1, max_batch_size=32)).load(model)
    fixed = Engine(EngineConfig(num_threads=1, max_batch_size=32, adaptive_batching=False, max_queue_delay_us=0)).load(model)
    queued_run = Engine(EngineConfig(num_threads=1, max_batch_size=32, enable_dynamic_batching=True)).load(model)
    compiled = off.compiled
    handoff: queue.SimpleQueue = queue.SimpleQueue()

    def worker() -> None:
        while (item := handoff.get()) is not None:
            item[0].set_result(compiled.run(item[1]))

    thread = threading.Thread(target=worker, daemon=True)
    thread.start()

    def timed(fn):
        def call() -> int:
            t0 = time.perf_counter_ns()
            fn()
            return time.perf_counter_ns() - t0

        return call

    def floor() -> None:
        future: concurrent.futures.Future = concurrent.futures.Future()
        handoff.put((future, feeds))
        future.result()

    paths = {
        "compiled.run (direct)": timed(lambda: compiled.run(feeds)),
        "engine.run (direct, checked)": timed(lambda: off.run(feeds)),
        "bare thread handoff (SimpleQueue+Future)": timed(floor),
        "submit().result(), max_batch_size=1": timed(lambda: off.submit(feeds).result()),
        "submit().result(), adaptive, max 32": timed(lambda: adaptive.submit(feeds).result()),
        "submit().result(), fixed max 32, delay 0": timed(lambda: fixed.submit(feeds).result()),
        "engine.run with enable_dynamic_batching (adaptive, max 32)": timed(lambda: queued_run.run(feeds)),
    }
    samples: dict[str, list[int]] = {name: [] for name in paths}
    block = 200
    for round_ in range(args.overhead_rounds + 1):
        for name, call in paths.items():
            times = [call() for _ in range(block)]
            if round_:  # round 0 warms every path up
                samples[name].extend(times[10:])
    handoff.put(None)
    for engine in (off, adaptive, fixed, queued_run):
        engine.close()
    medians = {name: statistics.median(times) / 1e3 for name, times in samples.items()}
    direct = medians["compiled.run (direct)"]
    return {
        "method": f"median of {args.overhead_rounds} interleaved blocks of {block} calls per path (first 10 of a block dropped), one caller thread",
        "median_us": {name: round(v, 2) for name, v in medians.items()},
        "overhead_us_vs_direct": {name: round(v - direct, 2) for name, v in medians.items()},
    }


# -- stress --------------------------------------------------------------------------------------


def bench_stress(total: int) -> dict:
    """``total`` requests from 64 threads; close(drain=False) after 70% were answered."""
    from edgecore.testing import OP_CASES

    case = OP_CASES["Conv"]
    inputs = [case.feeds(seed=s)["x"] for s in range(256)]
    config = EngineConfig(num_threads=1, max_batch_size=16, max_queue_delay_us=300, priority_levels=3, max_queue_size=128)
    engine = Engine(config).load(case.build())
    expected = [engine.compiled.run({"x": x})["y"].copy() for x in inputs]
    clients = 64
    per_client = total // clients
    outcome = dict.fromkeys(["ok", "timed_out", "rejected", "closed", "sent", "wrong", "unresolved"], 0)
    lock = threading.Lock()

    def client(seed: int) -> None:
        rng = random.Random(seed)
        counts = dict.fromkeys(outcome, 0)
        sent = 0
        while sent < per_client:
            burst = []
            for _ in range(min(rng.randint(1, 4), per_client - sent)):
                index = rng.randrange(len(inputs))
                timeout = rng.choice([0.05, 0.5]) if rng.random() < 0.1 else None
                sent += 1
                counts["sent"] += 1
                try:
                    burst.append((index, engine.submit({"x": inputs[index]}, priority=rng.randrange(3), timeout_ms=timeout)))
                except QueueFullError:
                    counts["rejected"] += 1
                except EngineClosedError:
                    counts["closed"] += 1
            for index, future in burst:
                try:
                    y = future.result(timeout=120)["y"]
                except RequestTimeoutError:
                    counts["timed_out"] += 1
                except EngineClosedError:
                    counts["closed"] += 1
                except concurrent.futures.TimeoutError:
                    counts["unresolved"] += 1
                else:
                    counts["ok"] += 1
                    counts["wrong"] += not np.array_equal(y, expected[index])
        with lock:
            for k, v in counts.items():
                outcome[k] += v

    started = time.perf_counter()
    threads = [threading.Thread(target=client, args=(seed,)) for seed in range(clients)]
    for t in threads:
        t.start()
    while engine.stats().total_inferences < 0.7 * clients * per_client and any(t.is_alive() for t in threads):
        time.sleep(0.01)
    engine.close(drain=False)
    for t in threads:
        t.join()
    wall = time.perf_counter() - started
    sent = clients * per_client
    answered = outcome["ok"] + outcome["timed_out"] + outcome["rejected"] + outcome["closed"]
    return {
        "requests": sent,
        "clients": clients,
        "wall_s": round(wall, 2),
        "outcome": outcome,
        "all_accounted": answered == sent == outcome["sent"] and not outcome["unresolved"],
        "bit_exact": outcome["wrong"] == 0,
        "histogram": dict(engine.stats().batch_size_histogram),
    }


# -- main ----------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["digits_cnn", "mobilenet_v2:image_size=112", "mobilenet_v2", "resnet50"],
                        help="zoo names, optionally NAME:key=value,... builder options")
    parser.add_argument("--clients", nargs="+", default=["thread:32", "thread:64", "asyncio:64"],
                        help="KIND:N pairs, KIND thread or asyncio")
    parser.add_argument("--fixed", nargs="+", type=int, default=[8, 32])
    parser.add_argument("--max-batch", type=int, default=32)
    parser.add_argument("--delay-us", type=int, default=500)
    parser.add_argument("--threads", type=int, default=0, help="intra-op threads per engine (0 = cores)")
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--model-seconds", nargs="*", default=[], metavar="NAME=S",
                        help=f"per-model block seconds (defaults {SECONDS})")
    parser.add_argument("--warmup", type=float, default=0.5)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--overhead-rounds", type=int, default=30)
    parser.add_argument("--stress", type=int, default=100_000, help="requests in the stress run (0 = skip)")
    parser.add_argument("--quick", action="store_true", help="smoke run: short blocks, one round, small stress")
    parser.add_argument("--out", type=Path, default=RESULTS / "scheduler_batching.json")
    args = parser.parse_args(argv)
    args.model_seconds = {k: float(v) for k, v in (item.split("=", 1) for item in args.model_seconds)}
    if args.quick:
        args.seconds, args.warmup, args.rounds, args.overhead_rounds = 1.0, 0.2, 1, 5
        args.stress = min(args.stress, 5000)

    report: dict = {
        "benchmark": "scheduler_batching",
        "machine": machine(),
        "method": (
            "one process; every engine loaded up front; variants run in interleaved blocks, "
            f"{args.rounds} rounds x {args.seconds} s (per model: {({**SECONDS, **args.model_seconds})} s) after a "
            f"{args.warmup} s warm-up per block; closed-loop clients; throughput = answered/s; ratios "
            "divide medians over rounds by the serial batch-1 median of the same run"
        ),
        "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "models": {},
    }
    report["overhead"] = bench_overhead(args)
    print(json.dumps(report["overhead"], indent=1), file=sys.stderr)
    for name in args.models:
        report["models"][name] = bench_model(name, args)
    if args.stress:
        report["stress"] = bench_stress(args.stress)
        print(json.dumps(report["stress"]), file=sys.stderr)
    report["machine"]["load_average_end"] = list(os.getloadavg())
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1, default=str) + "\n")
    summary = {name: data["summary"] for name, data in report["models"].items()}
    print(json.dumps(summary, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
