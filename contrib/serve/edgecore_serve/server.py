"""Run the HTTP (uvicorn) and gRPC (grpc.aio) front ends in one asyncio loop, and stop them well.

Start: under a memory budget the runtime is started first (see
:meth:`~edgecore_serve.models.ModelRepository.warm_up`); the models named on the command line are
loaded (the server reports ready once they are; one larger than the whole budget is logged and left
unloaded), repository models wait for their first request; then both listeners open.

Shutdown (SIGTERM or SIGINT): readiness turns false at once; both listeners close, so no new
connection or RPC is accepted; every request already accepted is answered (uvicorn finishes the
requests in flight and closes idle keep-alive connections; gRPC's ``stop(grace)`` lets running RPCs
finish); then the engines close, draining their queues, and :func:`serve` returns 0. The counts of
accepted and answered inference requests are logged last.

Concurrency: one event loop owns everything (see :mod:`edgecore_serve.service`); engines run
requests in their own worker threads.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from pathlib import Path
from typing import Any, Iterator, Sequence

import attrs

from edgecore_serve.protocol.tensors import Limits

logger = logging.getLogger(__name__)

__all__ = ["ServeConfig", "run", "serve"]


@attrs.frozen(kw_only=True)
class ServeConfig:
    """Everything ``edgecore serve`` needs. A port of -1 turns that front end off."""

    models: tuple[tuple[str, str], ...] = attrs.field(default=(), converter=tuple)  # (name, source)
    repository: Path | None = None
    host: str = "127.0.0.1"
    http_port: int = 8000
    grpc_port: int = 8001
    engine: Any = None  # EngineConfig; None = dynamic batching with edgecore's defaults
    limits: Limits = Limits()
    token: str | None = attrs.field(default=None, repr=False)
    memory_budget: int = 0
    shutdown_grace_s: float = 30.0


def _engine_config(config: ServeConfig) -> Any:
    if config.engine is not None:
        return config.engine
    from edgecore.config import EngineConfig

    return EngineConfig(enable_dynamic_batching=True)


def _uvicorn_server(app: Any, config: ServeConfig) -> Any:
    import uvicorn

    class Server(uvicorn.Server):
        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:  # our loop handles signals (uvicorn would re-raise them)
            yield

    return Server(uvicorn.Config(
        app,
        host=config.host,
        port=config.http_port,
        log_level=logging.getLogger("uvicorn").getEffectiveLevel(),
        access_log=False,
        lifespan="off",
        timeout_graceful_shutdown=config.shutdown_grace_s,
        limit_concurrency=None,
        backlog=2048,
    ))


async def serve(config: ServeConfig) -> int:
    """Serve until SIGTERM/SIGINT; returns the exit code (0 after a clean shutdown)."""
    from edgecore.errors import MemoryBudgetExceeded

    from edgecore_serve.grpc_app import build_grpc_server
    from edgecore_serve.http_app import build_app
    from edgecore_serve.models import ModelRepository
    from edgecore_serve.service import InferenceService
    from edgecore_serve.telemetry import ServerMetrics

    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

    repository = ModelRepository(
        _engine_config(config), directory=config.repository, memory_budget=config.memory_budget
    )
    for name, source in config.models:
        repository.add(name, source)
    service = InferenceService(repository, limits=config.limits)
    metrics = ServerMetrics(repository)
    named = [repository.find(name) for name, _ in config.models]
    if config.memory_budget:
        await repository.warm_up()  # the runtime's own memory is the base, not the first model's
    for entry in named:
        try:
            await repository.acquire(entry.name, entry.version)
        except MemoryBudgetExceeded:  # logged; larger than the budget, the others are served
            continue
        repository.release(entry)
    if not named and not repository.names():
        logger.warning("no models: name some, or give --model-repository")

    http = grpc_server = None
    tasks: list[asyncio.Task] = []
    if config.http_port >= 0:
        http = _uvicorn_server(build_app(service, token=config.token, metrics=metrics), config)
        tasks.append(asyncio.ensure_future(http.serve()))
    if config.grpc_port >= 0:
        grpc_server = build_grpc_server(
            service, host=config.host, port=config.grpc_port, token=config.token, metrics=metrics
        )
        await grpc_server.start()
    if http is not None:
        while not http.started and not tasks[0].done():
            await asyncio.sleep(0.01)
        if tasks[0].done():  # uvicorn could not start (port taken...): it logged why
            if grpc_server is not None:
                await grpc_server.stop(0)
            await repository.close()
            return 1
    service.started = True
    logger.warning(
        "edgecore serve: %s%s; models: %s",
        f"HTTP on http://{config.host}:{config.http_port}" if http else "no HTTP",
        f", gRPC on {config.host}:{config.grpc_port}" if grpc_server else "",
        ", ".join(repository.names()) or "none",
    )

    waiters = [asyncio.ensure_future(stop.wait()), *tasks]
    await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
    logger.warning("edgecore serve: shutting down; answering the requests accepted so far")
    service.started = False
    closing = []
    if http is not None:
        http.should_exit = True
        closing.append(tasks[0])
    if grpc_server is not None:
        closing.append(asyncio.ensure_future(grpc_server.stop(config.shutdown_grace_s)))
    await asyncio.gather(*closing, return_exceptions=True)
    service.accepting = False
    await repository.close()
    waiters[0].cancel()
    logger.warning(
        "edgecore serve: stopped; inference requests accepted %d, answered %d", service.accepted, service.answered
    )
    return 0 if service.accepted == service.answered else 1


def run(config: ServeConfig) -> int:
    return asyncio.run(serve(config))


def parse_size(text: str) -> int:
    """``"2GB"``, ``"512MiB"``, ``"1.5G"`` or a byte count -> bytes (KB/MB/GB are powers of 1000,
    KiB/MiB/GiB and K/M/G of 1024)."""
    units = {
        "": 1, "b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12,
        "k": 2**10, "m": 2**20, "g": 2**30, "t": 2**40, "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40,
    }
    s = text.strip().lower()
    number = s.rstrip("abcdefghijklmnopqrstuvwxyz ")
    unit = s[len(number):].strip()
    try:
        value = float(number)
    except ValueError:
        raise ValueError(f"expected a size such as 2GB, 512MiB or 1048576, got {text!r}") from None
    if unit not in units or value < 0:
        raise ValueError(f"expected a size such as 2GB, 512MiB or 1048576, got {text!r}")
    return int(value * units[unit])


def model_arguments(arguments: Sequence[str]) -> list[tuple[str, str]]:
    from edgecore_serve.models import parse_model_argument

    return [parse_model_argument(a) for a in arguments]
