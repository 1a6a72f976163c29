"""The Ray Serve deployment: each replica holds one edgecore :class:`~edgecore.Engine`.

A replica is a one-model ``edgecore serve``: it keeps the model in an
:class:`~edgecore_serve.models.ModelRepository` behind an
:class:`~edgecore_serve.service.InferenceService`, and its HTTP ingress on Ray's proxy is
``edgecore serve``'s own KServe v2 application (:func:`edgecore_serve.http_app.build_app`, without
the repository endpoints) -- the same parsing, encoding, compression, documents and error statuses,
not a copy. It answers:

* ``infer(feeds)`` through a ``DeploymentHandle`` (numpy arrays in and out, as ``Engine.run``);
* KServe v2 over HTTP on Ray's ingress (health, metadata, config, statistics, infer, ``/metrics``);
* Ray's own calls: ``check_health`` (a real one-item inference bounded by ``probe_timeout_s``, so a
  wedged engine fails it and Ray replaces the replica) and ``record_replica_metadata`` (its weight,
  for :class:`~edgecore_ray.routers.WeightedRouter`).

``replica_stats()`` reports what this replica served, counted by the replica itself (the
repository's success and failure counts, which both paths feed). ``wedge(seconds)`` is a fault
injection hook for chaos tests, reachable through a handle only (not over HTTP): for that long every
inference of this replica -- handle, HTTP and health check -- hangs, as behind a stuck runtime.

Concurrency: Ray runs these coroutines on the replica's event loop, which owns the repository and
the service (as in ``edgecore serve``); inference goes to the engine's scheduler threads through
``Engine.submit``, so concurrent requests of both paths share dynamic batches.
"""

from __future__ import annotations

import asyncio
import logging
import os
import tempfile
import time
from typing import Any, Mapping

import numpy as np
from ray import serve

from edgecore_serve.protocol.tensors import Limits

__all__ = ["EdgecoreReplica"]

logger = logging.getLogger(__name__)

_now = time.perf_counter_ns


class _Gate:
    """The fault-injection gate in front of every inference: closed until ``wedged_until``."""

    def __init__(self) -> None:
        self.wedged_until = 0.0

    async def wait(self) -> None:
        while (left := self.wedged_until - time.monotonic()) > 0:
            await asyncio.sleep(min(left, 0.25))


class _GatedInfer:
    """ASGI wrapper: ``POST .../infer`` waits at the gate before ``edgecore serve``'s application."""

    def __init__(self, app: Any, gate: _Gate) -> None:
        self.app, self.gate = app, gate

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["path"].endswith("/infer"):
            await self.gate.wait()
        await self.app(scope, receive, send)


@serve.deployment
@serve.ingress()
class EdgecoreReplica:
    """A Ray Serve replica holding one edgecore Engine (built by :func:`edgecore_ray.deployment`)."""

    async def __init__(
        self,
        model: Any,
        *,
        name: str,
        engine_config: Any,
        weights: tuple[float, ...] = (),
        probe_timeout_s: float = 5.0,
        limits: Limits = Limits(),
    ) -> None:
        from edgecore.inputs import random_feeds

        from edgecore_serve.models import ModelRepository
        from edgecore_serve.service import InferenceService

        context = serve.get_replica_context()
        rank = getattr(context.rank, "rank", context.rank)
        self.rank = int(rank) if isinstance(rank, int) else -1
        self.weight = float(weights[self.rank]) if 0 <= self.rank < len(weights) else 1.0
        self.replica = context.replica_id.unique_id
        self.name = name
        self.probe_timeout_s = probe_timeout_s
        self.probes = 0  # health-check inferences
        self._gate = _Gate()
        self._temp = None
        if isinstance(model, bytes):  # a ModelProto's bytes: the repository loads files and zoo names
            fd, self._temp = tempfile.mkstemp(prefix=f"edgecore_ray_{name}_", suffix=".onnx")
            with os.fdopen(fd, "wb") as f:
                f.write(model)
            model = self._temp
        self.repository = ModelRepository(engine_config)
        self.entry = self.repository.add(name, model)
        self.service = InferenceService(self.repository, limits=limits)
        self.repository.release(await self.repository.acquire(name))
        self.service.started = True
        engine = self.entry.engine
        self._probe = random_feeds(engine.inputs, batch=1, seed=0)
        logger.info("replica %s (rank %d, weight %g) serves %s on %s", self.replica, self.rank, self.weight, name,
                    engine.backend)

    def __serve_build_asgi_app__(self) -> Any:
        from edgecore_serve.http_app import build_app

        return _GatedInfer(build_app(self.service, repository_endpoints=False), self._gate)

    # -- requests ----------------------------------------------------------------------------------

    async def infer(self, feeds: Mapping[str, Any]) -> dict[str, np.ndarray]:
        """Outputs by name for ``feeds`` (input name -> array), as ``Engine.run`` gives them."""
        await self._gate.wait()
        started = _now()
        entry = await self.repository.acquire(self.name)
        ok = False
        try:
            timeout_ms = self.service.limits.request_timeout_ms or None
            outputs = await asyncio.wrap_future(entry.engine.submit(feeds, timeout_ms=timeout_ms))
            ok = True
            return outputs
        finally:
            self.repository.release(entry)
            entry.record(ok, _now() - started)

    async def metadata(self) -> dict[str, Any]:
        """The model's KServe v2 metadata (name, versions, inputs, outputs, platform)."""
        return await self.service.model_metadata(self.name)

    async def replica_stats(self) -> dict[str, Any]:
        """What this replica served, counted here: ``replica`` (its id), ``rank``, ``weight``,
        ``requests`` (inference requests over both paths), ``failures``, ``probes`` (health-check
        inferences), ``backend``, and the engine's batching: ``items`` run in ``executions`` runtime
        calls (so far, probes included; ``items / executions`` is the average dynamic batch)."""
        entry, engine = self.entry, self.entry.engine
        stats = engine.stats() if engine is not None else None
        return {"replica": self.replica, "rank": self.rank, "weight": self.weight,
                "requests": entry.success[0] + entry.fail[0], "failures": entry.fail[0], "probes": self.probes,
                "backend": engine.backend if engine is not None else "",
                "items": sum(k * v for k, v in stats.batch_size_histogram.items()) if stats else 0,
                "executions": stats.total_executions if stats else 0}

    async def wedge(self, seconds: float) -> str:
        """Fault injection: every inference here hangs for ``seconds``. Returns this replica's id."""
        self._gate.wedged_until = time.monotonic() + float(seconds)
        logger.warning("replica %s wedged for %g s (fault injection)", self.replica, seconds)
        return self.replica

    # -- Ray's calls -------------------------------------------------------------------------------

    async def check_health(self) -> None:
        """Run a one-item inference; raise when it fails or takes longer than ``probe_timeout_s``."""
        self.probes += 1

        async def probe() -> None:
            await self._gate.wait()
            await asyncio.wrap_future(self.entry.engine.submit(self._probe))

        try:
            await asyncio.wait_for(probe(), self.probe_timeout_s)
        except asyncio.TimeoutError:
            raise RuntimeError(
                f"replica {self.replica}: a one-item inference took longer than the "
                f"{self.probe_timeout_s:g} s probe timeout; its engine looks wedged"
            ) from None

    def record_replica_metadata(self) -> dict[str, Any]:
        """Static facts Ray hands to the routers: this replica's weight and rank."""
        return {"weight": self.weight, "rank": self.rank}

    async def __del__(self) -> None:
        repository = getattr(self, "repository", None)
        if repository is not None:
            await repository.close()  # answers the requests its engine accepted, then closes it
        if getattr(self, "_temp", None):
            os.unlink(self._temp)
