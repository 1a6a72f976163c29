"""Serving under load: N concurrent closed-loop clients against ``edgecore serve`` over HTTP and gRPC
(the real tritonclient clients), beside the same load through ``Engine.submit`` in-process.

For each model the script exports it to an .onnx file, starts ``python -m edgecore serve`` on free
loopback ports (127.0.0.1 only) with the batching settings given, and runs three phases of
``--seconds`` each (every client loop is also bounded by ``--max-requests``):

* ``in_process``: N threads, each ``engine.submit(feeds).result()`` on an engine with the same
  configuration, in this process (the server is idle meanwhile);
* ``http``: N threads, each with its own ``tritonclient.http`` client, binary tensors;
* ``grpc``: N threads, each with its own ``tritonclient.grpc`` client.

Reported per phase: requests per second, client-side p50/p99 latency, failed requests, and the
average dynamic batch (inference_count / execution_count over the phase, from the server's
statistics or the engine's). ``ratio`` = protocol RPS / in-process RPS: the cost of the protocol.
The clients run in this process and share the machine's cores with the server: on a small machine
the ratio includes the clients' own CPU.

Writes ``benchmarks/results/serving_load.json`` (machine, versions, settings, figures).

    python benchmarks/serving_load.py                                  # MobileNet-v2 112 px (~1 ms), ResNet-50
    python benchmarks/serving_load.py --models digits_cnn --clients 32 --seconds 20
    python benchmarks/serving_load.py --quick --output /tmp/serving.json  # a smoke run
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any, Callable

import numpy as np
from _common import machine

from edgecore import Engine, EngineConfig
from edgecore.inputs import random_feeds

RESULTS = Path(__file__).resolve().parent / "results"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def export_model(name: str, folder: Path) -> Path:
    """``NAME`` or ``NAME:key=value,...`` (zoo builder options) as an .onnx file in ``folder``."""
    import onnx

    from edgecore import zoo

    base, _, options = name.partition(":")
    kwargs = {k: int(v) if v.isdigit() else float(v) for k, v in (o.split("=") for o in options.split(",") if o)}
    path = folder / f"{name.replace(':', '_').replace('=', '').replace(',', '_')}.onnx"
    onnx.save(zoo.build(base, **kwargs), path)
    return path


class Server:
    def __init__(self, model: Path, args: argparse.Namespace, log: Path) -> None:
        self.http_port, self.grpc_port = _free_port(), _free_port()
        self._log = open(log, "wb")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "edgecore", "serve", str(model), "--host", "127.0.0.1",
             "--http-port", str(self.http_port), "--grpc-port", str(self.grpc_port),
             "--max-batch-size", str(args.max_batch_size), "--max-queue-delay-us", str(args.max_queue_delay_us),
             "--instances", str(args.instances)],
            stdout=self._log, stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"edgecore serve exited with {self.process.returncode}; see {log}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.http_port}/v2/health/ready", timeout=2):
                    return
            except OSError:
                time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"edgecore serve was not ready within 300 s; see {log}")

    def batch_counts(self, model: str) -> tuple[int, int]:
        url = f"http://127.0.0.1:{self.http_port}/v2/models/{model}/stats"
        with urllib.request.urlopen(url, timeout=30) as response:
            stats = json.loads(response.read())["model_stats"][0]
        return stats["inference_count"], stats["execution_count"]

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(120)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return self.process.wait(30)
        finally:
            self._log.close()


def closed_loop(make_call: Callable[[], Callable[[], None]], clients: int, seconds: float, max_requests: int) -> dict:
    """``clients`` threads, each calling its own ``make_call()`` until the time or request bound."""
    latencies: list[list[float]] = [[] for _ in range(clients)]
    failures = [0] * clients
    errors: list[str] = []
    ready = threading.Barrier(clients + 1)
    state = {"deadline": float("inf")}

    def client(slot: int) -> None:
        call = make_call()
        ready.wait()
        out = latencies[slot]
        for _ in range(max_requests):
            if time.perf_counter() > state["deadline"]:
                break
            started = time.perf_counter()
            try:
                call()
            except Exception as exc:  # noqa: BLE001 - counted and reported
                failures[slot] += 1
                if len(errors) < 5:
                    errors.append(f"{type(exc).__name__}: {exc}")
                continue
            out.append(time.perf_counter() - started)

    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(clients)]
    for thread in threads:
        thread.start()
    state["deadline"] = time.perf_counter() + seconds
    began = time.perf_counter()
    ready.wait()
    for thread in threads:
        thread.join(seconds + 120)
    elapsed = time.perf_counter() - began
    flat = np.array([x for per in latencies for x in per]) * 1e3
    return {
        "requests": int(flat.size),
        "failed": int(sum(failures)),
        "errors": errors,
        "seconds": elapsed,
        "rps": flat.size / elapsed if elapsed else 0.0,
        "p50_ms": float(np.percentile(flat, 50)) if flat.size else None,
        "p99_ms": float(np.percentile(flat, 99)) if flat.size else None,
    }


def bench_model(name: str, args: argparse.Namespace, folder: Path) -> dict:
    import tritonclient.grpc as grpcclient
    import tritonclient.http as httpclient

    path = export_model(name, folder)
    served = path.stem
    config = EngineConfig(enable_dynamic_batching=True, max_batch_size=args.max_batch_size,
                          max_queue_delay_us=args.max_queue_delay_us, instances=args.instances)
    out: dict[str, Any] = {"model": name}
    with Engine(config) as engine:
        engine.load(str(path))
        feeds = random_feeds(engine.inputs)
        before = engine.stats()

        def in_process() -> Callable[[], None]:
            return lambda: engine.submit(feeds).result()

        out["in_process"] = closed_loop(in_process, args.clients, args.seconds, args.max_requests)
        after = engine.stats()
        items = sum(k * v for k, v in after.batch_size_histogram.items()) - sum(
            k * v for k, v in before.batch_size_histogram.items())
        executions = after.total_executions - before.total_executions
        out["in_process"]["average_batch"] = items / executions if executions else None

    server = Server(path, args, folder / f"{served}.log")
    try:
        for protocol, module, url in (
            ("http", httpclient, f"127.0.0.1:{server.http_port}"),
            ("grpc", grpcclient, f"127.0.0.1:{server.grpc_port}"),
        ):
            if protocol not in args.protocols:
                continue

            def make_call(module=module, url=url) -> Callable[[], None]:
                return triton_call(module, url, served, feeds)

            items0, executions0 = server.batch_counts(served)
            result = closed_loop(make_call, args.clients, args.seconds, args.max_requests)
            items1, executions1 = server.batch_counts(served)
            result["average_batch"] = (items1 - items0) / (executions1 - executions0) if executions1 > executions0 else None
            base = out["in_process"]["rps"]
            result["ratio"] = result["rps"] / base if base else None
            out[protocol] = result
    finally:
        out["server_exit_code"] = server.stop()
    return out


def triton_call(module: Any, url: str, model: str, feeds: dict[str, np.ndarray], **client_options: Any
                ) -> Callable[[], None]:
    """One request of ``feeds`` to ``model`` through a new ``module`` (tritonclient.http or .grpc)
    client of its own, ready to send again and again (binary tensors over HTTP)."""
    from tritonclient.utils import np_to_triton_dtype

    client = module.InferenceServerClient(url=url, **client_options)
    inputs = []
    for key, value in feeds.items():
        tensor = module.InferInput(key, list(value.shape), np_to_triton_dtype(value.dtype))
        tensor.set_data_from_numpy(value)
        inputs.append(tensor)
    return lambda: client.infer(model, inputs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["mobilenet_v2:image_size=112", "resnet50"])
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--max-requests", type=int, default=200_000, help="per client, per phase")
    parser.add_argument("--protocols", nargs="+", default=["http", "grpc"], choices=["http", "grpc"])
    parser.add_argument("--max-batch-size", type=int, default=8)
    parser.add_argument("--max-queue-delay-us", type=int, default=500)
    parser.add_argument("--instances", type=int, default=1)
    parser.add_argument("--quick", action="store_true", help="digits_cnn, 4 clients, 2 s: a smoke run")
    parser.add_argument("--output", type=Path, default=RESULTS / "serving_load.json")
    args = parser.parse_args()
    if args.quick:
        args.models, args.clients, args.seconds = ["digits_cnn"], 4, 2.0
    with tempfile.TemporaryDirectory(prefix="serving_load_") as tmp:
        results = [bench_model(name, args, Path(tmp)) for name in args.models]
    report = {
        "benchmark": "serving_load",
        "machine": machine(),
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "method": __doc__.split("Writes")[0].strip(),
        "results": results,
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=2))
    for r in results:
        line = [f"{r['model']}: in-process {r['in_process']['rps']:.0f} rps (batch {r['in_process']['average_batch'] or 0:.2f})"]
        for protocol in ("http", "grpc"):
            if protocol in r:
                p = r[protocol]
                line.append(f"{protocol} {p['rps']:.0f} rps = {p['ratio'] or 0:.2f}x, p99 {p['p99_ms'] or 0:.1f} ms, "
                            f"batch {p['average_batch'] or 0:.2f}, failed {p['failed']}")
                if os.environ.get("VERBOSE") and p["errors"]:
                    line.append(str(p["errors"]))
        print("; ".join(line))
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
