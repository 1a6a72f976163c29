"""``edgecore serve``: the command, added to the ``edgecore`` CLI through the
``edgecore_cli_commands`` hook (see :mod:`edgecore_serve.plugin`). Heavy imports wait until it runs,
so ``edgecore --help`` stays fast.

``--ray`` serves one model on Ray Serve instead (needs ``edgecore-ray``): ``--replicas`` replicas,
each holding its own engine, behind Ray's HTTP proxy speaking the same KServe v2 HTTP protocol.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

__all__ = ["register", "run_command"]

TOKEN_ENV = "EDGECORE_SERVE_TOKEN"


def _size(text: str) -> int:
    from edgecore_serve.server import parse_size

    try:
        return parse_size(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _weights(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(w) for w in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected weights as numbers separated by commas (3,1), got {text!r}") from None


def register(subparsers: Any) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "serve",
        help="serve models over KServe v2 / Open Inference Protocol (HTTP and gRPC; tritonclient works)",
        description="Serve models over KServe v2 (HTTP and gRPC). A model is served under its file's stem "
        "unless given as NAME=PATH; zoo:NAME works. Requests share dynamic batches.",
    )
    p.add_argument("models", nargs="*", metavar="MODEL", help="model file, NAME=PATH, or zoo:NAME")
    p.add_argument("--model-repository", type=Path, metavar="DIR",
                   help="folder of NAME.onnx or NAME/VERSION/model.onnx, loaded on first request")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default: loopback only)")
    p.add_argument("--http-port", type=int, default=8000, help="HTTP port (-1: no HTTP)")
    p.add_argument("--grpc-port", type=int, default=8001, help="gRPC port (-1: no gRPC)")
    p.add_argument("--backend", default="auto", help="backend name, or auto")
    p.add_argument("--device", default="auto", help="auto, cpu, gpu or npu")
    p.add_argument("--num-threads", type=int, default=0, help="runtime threads per instance (0: runtime default)")
    p.add_argument("--max-batch-size", type=int, default=8, help="largest dynamic batch, in items")
    p.add_argument("--max-queue-delay-us", type=int, default=500, help="longest wait for a fuller batch")
    p.add_argument("--preferred-batch-size", type=int, action="append", default=[], metavar="N",
                   help="a preferred batch size (repeatable)")
    p.add_argument("--instances", type=int, default=1, help="compiled model instances per model")
    p.add_argument("--max-queue-size", type=int, default=0, help="queued requests per model before 503 (0: no limit)")
    p.add_argument("--memory-budget", type=_size, default=0, metavar="SIZE",
                   help="keep loaded models within SIZE (e.g. 2GB), unloading the least recently used idle one")
    p.add_argument("--auth-token", default=None,
                   help=f"require 'Authorization: Bearer TOKEN' on every endpoint but health (or ${TOKEN_ENV})")
    p.add_argument("--max-body-size", type=_size, default=64 << 20, metavar="SIZE",
                   help="largest request body, decompressed (default 64MiB)")
    p.add_argument("--max-tensor-elements", type=int, default=1 << 25, help="most elements in one tensor")
    p.add_argument("--request-timeout-ms", type=float, default=0.0, help="per-request timeout (0: none)")
    p.add_argument("--shutdown-grace-s", type=float, default=30.0,
                   help="on SIGTERM, longest wait for accepted requests to be answered")
    ray = p.add_argument_group("Ray Serve (--ray, needs edgecore-ray; HTTP only, one MODEL)")
    ray.add_argument("--ray", action="store_true",
                     help="serve on Ray Serve: replicas each holding an engine, KServe v2 HTTP on Ray's proxy")
    ray.add_argument("--replicas", type=int, default=2, help="replicas (default 2)")
    ray.add_argument("--router", default="power_of_two", choices=("power_of_two", "round_robin", "weighted"),
                     help="how requests are spread over replicas (default: Ray's power of two choices)")
    ray.add_argument("--weights", type=_weights, default=None, metavar="W0,W1,...",
                     help="with --router weighted: one weight per replica, e.g. 3,1")
    ray.add_argument("--replica-cpus", type=float, default=1.0, help="CPUs Ray reserves per replica (default 1)")
    ray.add_argument("--ray-address", default=None, metavar="ADDRESS",
                     help="join this Ray cluster (auto, ray://host:10001); default: start a local one")
    p.set_defaults(func=run_command)
    return p


def config_from_args(args: argparse.Namespace) -> Any:
    from edgecore.config import EngineConfig

    from edgecore_serve.protocol.tensors import Limits
    from edgecore_serve.server import ServeConfig, model_arguments

    engine = EngineConfig(
        backend=args.backend,
        device=args.device,
        num_threads=args.num_threads,
        enable_dynamic_batching=True,
        max_batch_size=args.max_batch_size,
        max_queue_delay_us=args.max_queue_delay_us,
        preferred_batch_sizes=tuple(args.preferred_batch_size),
        instances=args.instances,
        max_queue_size=args.max_queue_size,
    )
    return ServeConfig(
        models=model_arguments(args.models),
        repository=args.model_repository,
        host=args.host,
        http_port=args.http_port,
        grpc_port=args.grpc_port,
        engine=engine,
        limits=Limits(
            max_body_bytes=args.max_body_size,
            max_tensor_elements=args.max_tensor_elements,
            request_timeout_ms=args.request_timeout_ms,
        ),
        token=args.auth_token or os.environ.get(TOKEN_ENV) or None,
        memory_budget=args.memory_budget,
        shutdown_grace_s=args.shutdown_grace_s,
    )


def run_command(args: argparse.Namespace) -> int:
    from edgecore.errors import ConfigurationError

    from edgecore_serve.server import run

    if args.ray:
        return run_ray(args)
    if not args.models and args.model_repository is None:
        raise ConfigurationError("edgecore serve needs at least one MODEL or --model-repository DIR")
    if args.model_repository is not None and not args.model_repository.is_dir():
        raise ConfigurationError(f"--model-repository {args.model_repository} is not a folder")
    return run(config_from_args(args))


def run_ray(args: argparse.Namespace) -> int:
    """``edgecore serve MODEL --ray``: one model on Ray Serve until SIGINT/SIGTERM."""
    from edgecore.errors import ConfigurationError

    refused = [flag for flag, given in (
        ("--model-repository", args.model_repository is not None),
        ("--memory-budget", bool(args.memory_budget)),
        (f"--auth-token (or ${TOKEN_ENV})", bool(args.auth_token or os.environ.get(TOKEN_ENV))),
    ) if given]
    if refused:
        raise ConfigurationError(f"{', '.join(refused)} cannot be used with --ray (one model, HTTP on Ray's proxy)")
    if len(args.models) != 1:
        raise ConfigurationError(f"--ray serves exactly one MODEL, got {len(args.models)}")
    try:
        import edgecore_ray
        from edgecore_ray.launch import serve_forever
    except ImportError as exc:
        raise ConfigurationError(f"--ray needs edgecore-ray (pip install edgecore-ray): {exc}") from None
    config = config_from_args(args)
    (name, source), = config.models
    app = edgecore_ray.deployment(
        source, name=name, num_replicas=args.replicas, router=args.router, weights=args.weights,
        engine_config=config.engine, limits=config.limits, ray_actor_options={"num_cpus": args.replica_cpus},
    )

    def ready() -> None:
        print(f"serving {name} on Ray Serve: {args.replicas} replicas, router {args.router}; "
              f"KServe v2 at http://{config.host}:{config.http_port}/v2/models/{name} (Ctrl-C stops)", flush=True)

    return serve_forever(app, name=name, host=config.host, port=config.http_port, address=args.ray_address,
                         on_ready=ready)
