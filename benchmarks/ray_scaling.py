"""Scale-out on Ray Serve (edgecore-ray): throughput and latency with 1 and 2 replicas, the share of
requests each replica served under each router, and a replica's cold start with and without the
compiled-model cache.

One local Ray cluster on this machine (loopback only: Ray's HTTP proxy on 127.0.0.1). The model is
exported from the zoo to an .onnx file that every replica loads by path; every replica's engine has
dynamic batching on and ``--num-threads`` runtime threads. Phases, each ``--seconds`` long and every
client loop also bounded by ``--max-requests`` (bounded load: ``--clients`` closed-loop clients,
each with its own ``tritonclient.http`` client sending binary tensors to Ray's proxy):

* ``replicas_1``: 1 replica, Ray's default router (power of two choices);
* ``power_of_two``, ``round_robin``, ``weighted`` (``--weights``): 2 replicas, that router.

Reported per phase: requests per second, client-side p50/p99 latency, failed requests, and per
replica its share of the phase's requests and its average dynamic batch, as the replicas count them
themselves (``replica_stats``, before and after; health-check probes add a few one-item runs). ``scaling`` = 2-replica (power of two) RPS / 1-replica RPS.
The clients and Ray's proxy run on the same cores as the replicas: on a 2-core machine they take
their part, so the scaling figure is what this box gives, not what two machines would.

``batching`` (1 replica, requests through a ``DeploymentHandle`` so that all three take the same
path): edgecore's scheduler in the replica (``Engine.submit``, ``--max-batch-size``), the same
with ``max_batch_size=1`` (no batching), and Ray's ``@serve.batch`` (same batch size,
``batch_wait_timeout_s`` = ``--max-queue-delay-us``) stacking the feeds into one ``Engine.run``:
requests per second, p50/p99, and the average batch the engine ran.

``cold_start``: seconds from ``serve.run`` to a ready 1-replica application (the replica's process,
the engine's load and compile, its first inference), first with an empty compiled-model cache
(``EngineConfig.cache_dir`` in a fresh folder), then with the cache that first start filled -- what
a replacement replica gains when the cache is on shared storage.

Writes ``benchmarks/results/ray_scaling.json`` (machine, its load per phase, versions, settings,
figures).

    python benchmarks/ray_scaling.py                                   # MobileNet-v2 112 px, 8 clients, 15 s
    python benchmarks/ray_scaling.py --model resnet50 --clients 4 --seconds 30
    python benchmarks/ray_scaling.py --quick --output /tmp/ray.json    # a smoke run
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import attrs
from _common import load_monitor, machine
from serving_load import _free_port, closed_loop, export_model, triton_call

from edgecore.inputs import random_feeds

RESULTS = Path(__file__).resolve().parent / "results"


def _engine_config(args: argparse.Namespace, cache_dir: str | None = None) -> Any:
    from edgecore import EngineConfig

    return EngineConfig(backend=args.backend, num_threads=args.num_threads, enable_dynamic_batching=True,
                        max_batch_size=args.max_batch_size, max_queue_delay_us=args.max_queue_delay_us,
                        cache_dir=cache_dir)


def _counts(handle: Any, replicas: int) -> dict[str, dict[str, Any]]:
    import edgecore_ray

    return {r["replica"]: r for r in edgecore_ray.replica_stats(handle, replicas=replicas)}


def phase(name: str, model: Path, served: str, feeds: dict, args: argparse.Namespace, port: int, *,
          replicas: int, router: str, weights: tuple[float, ...] | None = None) -> dict:
    """Deploy, load the deployment with the closed-loop clients, and delete it."""
    import tritonclient.http as httpclient
    from ray import serve

    import edgecore_ray

    app = edgecore_ray.deployment(str(model), name=served, num_replicas=replicas, router=router, weights=weights,
                                  engine_config=_engine_config(args),
                                  ray_actor_options={"num_cpus": args.replica_cpus},
                                  max_ongoing_requests=args.max_ongoing_requests)
    handle = serve.run(app, name=name, route_prefix="/")
    try:
        def make_call() -> Callable[[], None]:
            return triton_call(httpclient, f"127.0.0.1:{port}", served, feeds, connection_timeout=60,
                               network_timeout=60)

        closed_loop(make_call, 1, 1.0, 20)  # warm the proxy's router and the replicas' first batches
        before = _counts(handle, replicas)
        monitor = load_monitor()
        since = monitor.windows
        result = closed_loop(make_call, args.clients, args.seconds, args.max_requests)
        summary = monitor.summary(since)
        after = _counts(handle, replicas)
        zero = {"requests": 0, "items": 0, "executions": 0}
        delta = {rid: {k: row[k] - before.get(rid, zero)[k] for k in zero} for rid, row in after.items()}
        served_by = {rid: d["requests"] for rid, d in delta.items()}
        total = sum(served_by.values()) or 1
        result["replicas"] = [
            {"rank": after[rid]["rank"], "weight": after[rid]["weight"], "requests": n, "share": n / total,
             "average_batch": delta[rid]["items"] / delta[rid]["executions"] if delta[rid]["executions"] else None}
            for rid, n in sorted(served_by.items(), key=lambda kv: after[kv[0]]["rank"])
        ]
        result.update(replica_count=replicas, router=router, weights=list(weights) if weights else None,
                      load={"quiet": summary["quiet"], "during": summary["during"]})
        return result
    finally:
        serve.delete(name)


def _serve_batch_app(model: Path, args: argparse.Namespace) -> Any:
    """One replica whose ``infer`` is Ray's ``@serve.batch``: the feeds of a batch stacked into one
    ``Engine.run`` (engine batching off), the outputs split back per request."""
    import asyncio

    import numpy as np
    from ray import serve

    from edgecore import Engine

    max_batch, wait_s = args.max_batch_size, args.max_queue_delay_us / 1e6
    config = attrs.evolve(_engine_config(args), enable_dynamic_batching=False)

    @serve.deployment(ray_actor_options={"num_cpus": args.replica_cpus},
                      max_ongoing_requests=args.max_ongoing_requests)
    class ServeBatched:
        def __init__(self) -> None:
            self.engine = Engine(config).load(str(model))
            self.requests = self.items = self.executions = 0  # counted here: direct runs count as batch 1

        @serve.batch(max_batch_size=max_batch, batch_wait_timeout_s=wait_s)
        async def infer(self, batch: list[dict]) -> list[dict]:
            sizes = [len(next(iter(feeds.values()))) for feeds in batch]
            stacked = {k: np.concatenate([feeds[k] for feeds in batch]) for k in batch[0]}
            outputs = await asyncio.to_thread(self.engine.run, stacked)
            self.requests, self.items, self.executions = self.requests + len(batch), self.items + sum(sizes), \
                self.executions + 1
            bounds = np.cumsum([0, *sizes])
            return [{k: v[a:b] for k, v in outputs.items()} for a, b in zip(bounds[:-1], bounds[1:])]

        async def replica_stats(self) -> dict:
            return {"replica": "serve_batch", "rank": 0, "weight": 1.0, "requests": self.requests,
                    "items": self.items, "executions": self.executions}

    return ServeBatched.bind()


def batching(model: Path, served: str, feeds: dict, args: argparse.Namespace) -> dict:
    """edgecore's scheduler vs no batching vs ``@serve.batch``, 1 replica, through a handle."""
    from ray import serve

    import edgecore_ray

    out = {}
    variants = {
        "edgecore_scheduler": lambda: edgecore_ray.deployment(
            str(model), name=served, num_replicas=1, engine_config=_engine_config(args),
            ray_actor_options={"num_cpus": args.replica_cpus}, max_ongoing_requests=args.max_ongoing_requests),
        "no_batching": lambda: edgecore_ray.deployment(
            str(model), name=served, num_replicas=1,
            engine_config=attrs.evolve(_engine_config(args), max_batch_size=1),
            ray_actor_options={"num_cpus": args.replica_cpus}, max_ongoing_requests=args.max_ongoing_requests),
        "serve_batch": lambda: _serve_batch_app(model, args),
    }
    for variant, build in variants.items():
        handle = serve.run(build(), name="batching", route_prefix="/")
        try:
            def make_call() -> Callable[[], None]:
                return lambda: handle.infer.remote(feeds).result(timeout_s=60)

            closed_loop(make_call, 1, 1.0, 20)
            (before,) = edgecore_ray.replica_stats(handle, replicas=1)
            monitor = load_monitor()
            since = monitor.windows
            result = closed_loop(make_call, args.clients, args.seconds, args.max_requests)
            summary = monitor.summary(since)
            (after,) = edgecore_ray.replica_stats(handle, replicas=1)
            executions = after["executions"] - before["executions"]
            result["average_batch"] = (after["items"] - before["items"]) / executions if executions else None
            result["load"] = {"quiet": summary["quiet"], "during": summary["during"]}
            out[variant] = result
        finally:
            serve.delete("batching")
    return out


def cold_start(model: Path, served: str, args: argparse.Namespace, folder: Path) -> dict:
    """Seconds to a ready 1-replica application: empty compiled-model cache, then the filled one."""
    from ray import serve

    import edgecore_ray

    cache = folder / "compiled_cache"
    cache.mkdir()
    out: dict[str, Any] = {"cache_dir": "a fresh folder, then the same folder"}
    for label in ("empty_cache_s", "warm_cache_s"):
        app = edgecore_ray.deployment(str(model), name=served, num_replicas=1,
                                      engine_config=_engine_config(args, cache_dir=str(cache)),
                                      ray_actor_options={"num_cpus": args.replica_cpus})
        started = time.perf_counter()
        serve.run(app, name="cold_start", route_prefix="/")
        out[label] = time.perf_counter() - started
        serve.delete("cold_start")
    out["cache_bytes"] = sum(p.stat().st_size for p in cache.rglob("*") if p.is_file())
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="mobilenet_v2:image_size=112", help="zoo NAME or NAME:key=value,...")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--max-requests", type=int, default=100_000, help="per client, per phase")
    parser.add_argument("--routers", nargs="+", default=["power_of_two", "round_robin", "weighted"],
                        choices=["power_of_two", "round_robin", "weighted"])
    parser.add_argument("--weights", default="3,1", help="for the weighted router, one per replica")
    parser.add_argument("--backend", default="auto")
    parser.add_argument("--num-threads", type=int, default=1, help="runtime threads per replica")
    parser.add_argument("--replica-cpus", type=float, default=1.0, help="CPUs Ray reserves per replica")
    parser.add_argument("--max-batch-size", type=int, default=8)
    parser.add_argument("--max-queue-delay-us", type=int, default=500)
    parser.add_argument("--max-ongoing-requests", type=int, default=16)
    parser.add_argument("--no-cold-start", action="store_true", help="skip the cold-start phase")
    parser.add_argument("--no-batching", action="store_true", help="skip the batching comparison")
    parser.add_argument("--quick", action="store_true", help="digits_cnn, 2 clients, 1 s, 0.5 CPU each: a smoke run")
    parser.add_argument("--output", type=Path, default=RESULTS / "ray_scaling.json")
    args = parser.parse_args()
    if args.quick:
        args.model, args.clients, args.seconds, args.replica_cpus = "digits_cnn", 2, 1.0, 0.5
    weights = tuple(float(w) for w in args.weights.split(","))

    import ray
    from ray import serve

    from edgecore import Engine

    report: dict[str, Any] = {"benchmark": "ray_scaling", "machine": machine()}  # waits for a quiet machine first
    port = _free_port()
    with tempfile.TemporaryDirectory(prefix="ray_scaling_") as tmp:
        folder = Path(tmp)
        model = export_model(args.model, folder)
        served = model.stem
        with Engine(_engine_config(args)) as engine:
            engine.load(str(model))
            feeds = random_feeds(engine.inputs)
        ray.init(num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False, configure_logging=False)
        try:
            serve.start(http_options={"host": "127.0.0.1", "port": port})
            phases = {"replicas_1": phase("replicas_1", model, served, feeds, args, port,
                                          replicas=1, router="power_of_two")}
            for router in args.routers:
                phases[router] = phase(router, model, served, feeds, args, port, replicas=2, router=router,
                                       weights=weights if router == "weighted" else None)
            if not args.no_batching:
                report["batching"] = batching(model, served, feeds, args)
            if not args.no_cold_start:
                report["cold_start"] = cold_start(model, served, args, folder)
        finally:
            serve.shutdown()
            ray.shutdown()
    one, two = phases["replicas_1"]["rps"], phases.get("power_of_two", {}).get("rps")
    report.update(
        settings={k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        method=__doc__.split("Writes")[0].strip(),
        phases=phases,
        scaling=(two / one) if one and two else None,
    )
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=2))
    for name, p in phases.items():
        shares = ", ".join(f"rank {r['rank']} {r['share']:.0%} (batch {r['average_batch'] or 0:.1f})"
                           for r in p["replicas"])
        print(f"{name}: {p['rps']:.0f} rps, p50 {p['p50_ms'] or 0:.1f} ms, p99 {p['p99_ms'] or 0:.1f} ms, "
              f"failed {p['failed']}; {shares}")
    if report["scaling"]:
        print(f"2 replicas / 1 replica: {report['scaling']:.2f}x")
    for variant, b in report.get("batching", {}).items():
        print(f"batching, {variant}: {b['rps']:.0f} rps, p50 {b['p50_ms'] or 0:.1f} ms, p99 {b['p99_ms'] or 0:.1f} ms, "
              f"average batch {b['average_batch'] or 0:.2f}")
    if "cold_start" in report:
        c = report["cold_start"]
        print(f"cold start: {c['empty_cache_s']:.1f} s with an empty cache, {c['warm_cache_s']:.1f} s warm")
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
