"""The Ray Serve deployment: each replica holds one edgecore :class:`~edgecore.Engine`.

A replica answers three ways: ``infer(feeds)`` through a ``DeploymentHandle`` (numpy arrays in and
out), KServe v2 over HTTP on Ray's ingress (``__call__``, see :mod:`edgecore_ray.http`), and Ray's
own calls -- ``check_health`` (a real one-item inference, bounded by a timeout, so a wedged engine
fails it and Ray replaces the replica), ``record_replica_metadata`` (its weight, for
:class:`~edgecore_ray.routers.WeightedRouter`). ``replica_stats()`` reports what this replica
served, counted by the replica itself.

``wedge(seconds)`` is a fault-injection hook (as chaos tests use): for that long every inference of
this replica -- requests and health checks -- hangs, as behind a stuck runtime.

Concurrency: Ray runs these coroutines on the replica's event loop; inference goes to the engine's
scheduler threads (``Engine.submit``, so concurrent requests share dynamic batches) or, with
batching off, to a worker thread. Counters are touched only on the event loop.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, Mapping

import numpy as np
from ray import serve
from starlette.requests import Request
from starlette.responses import Response

from edgecore_serve.protocol.datatypes import protocol_datatype
from edgecore_serve.protocol.errors import BadRequest
from edgecore_serve.protocol.tensors import InferRequest, InferResponse, Limits, OutputTensor

__all__ = ["EdgecoreReplica", "ServedModel"]

logger = logging.getLogger(__name__)


class ServedModel:
    """One replica's engine, its name and limits, and the counts it reports."""

    def __init__(self, *, name: str, engine: Any, replica: str, limits: Limits) -> None:
        self.name = name
        self.version = "1"
        self.engine = engine
        self.replica = replica
        self.limits = limits
        self.requests = 0  # inference requests that reached this replica (handle and HTTP)
        self.failures = 0
        self.probes = 0  # health-check inferences
        self._wedged_until = 0.0

    def wedge(self, seconds: float) -> None:
        self._wedged_until = time.monotonic() + seconds

    async def run(self, feeds: Mapping[str, Any]) -> dict[str, np.ndarray]:
        """The engine's outputs for ``feeds``, awaited without blocking the event loop."""
        while (left := self._wedged_until - time.monotonic()) > 0:
            await asyncio.sleep(min(left, 0.25))
        if self.engine.config.enable_dynamic_batching:
            return await self.engine.run_async(feeds)
        return await asyncio.to_thread(self.engine.run, feeds)

    async def counted(self, feeds: Mapping[str, Any]) -> dict[str, np.ndarray]:
        self.requests += 1
        try:
            return await self.run(feeds)
        except BaseException:
            self.failures += 1
            raise

    async def infer_request(self, request: InferRequest) -> InferResponse:
        """A decoded KServe v2 request run on the engine."""
        from edgecore_ray.http import check_feeds

        feeds = check_feeds(self, request)
        outputs_by_name = {s.name: s for s in self.engine.outputs}
        if request.outputs:
            for item in request.outputs:
                if item.name not in outputs_by_name:
                    raise BadRequest(f"model {self.name!r} has no output {item.name!r}; "
                                     f"its outputs: {', '.join(outputs_by_name)}")
            wanted = [(o.name, request.binary_output if o.binary is None else o.binary) for o in request.outputs]
        else:
            wanted = [(n, request.binary_output) for n in outputs_by_name]
        outputs = await self.counted(feeds)
        return InferResponse(
            model_name=self.name,
            model_version=self.version,
            id=request.id,
            outputs=[
                OutputTensor(name=n, datatype=protocol_datatype(outputs_by_name[n].dtype),
                             shape=outputs[n].shape, data=outputs[n], binary=binary)
                for n, binary in wanted
            ],
        )


@serve.deployment
class EdgecoreReplica:
    """A Ray Serve replica holding one edgecore Engine (built by :func:`edgecore_ray.deployment`)."""

    def __init__(
        self,
        model: Any,
        *,
        name: str,
        engine_config: Any,
        weights: tuple[float, ...] = (),
        probe_timeout_s: float = 5.0,
        limits: Limits = Limits(),
    ) -> None:
        from edgecore import Engine
        from edgecore.inputs import random_feeds

        context = serve.get_replica_context()
        rank = getattr(context.rank, "rank", context.rank)
        self.rank = int(rank) if isinstance(rank, int) else -1
        self.weight = float(weights[self.rank]) if 0 <= self.rank < len(weights) else 1.0
        self.probe_timeout_s = probe_timeout_s
        engine = Engine(engine_config).load(model)
        self.served = ServedModel(name=name, engine=engine, replica=context.replica_id.unique_id, limits=limits)
        self._probe = random_feeds(engine.inputs, batch=1, seed=0)
        logger.info("replica %s (rank %d, weight %g) serves %s on %s", self.served.replica, self.rank,
                    self.weight, name, engine.backend)

    # -- requests ----------------------------------------------------------------------------------

    async def __call__(self, request: Request) -> Response:
        from edgecore_ray.http import handle

        return await handle(request, self.served)

    async def infer(self, feeds: Mapping[str, Any]) -> dict[str, np.ndarray]:
        """Outputs by name for ``feeds`` (input name -> array), as ``Engine.run`` gives them."""
        return await self.served.counted(feeds)

    async def metadata(self) -> dict[str, Any]:
        """The model's KServe v2 metadata (name, inputs, outputs, platform)."""
        from edgecore_serve.protocol.documents import model_metadata

        from edgecore_ray.http import PLATFORM

        engine = self.served.engine
        return model_metadata(self.served.name, [self.served.version], engine.inputs, engine.outputs, PLATFORM)

    async def replica_stats(self) -> dict[str, Any]:
        """What this replica served, counted here: ``replica`` (its id), ``rank``, ``weight``,
        ``requests``, ``failures``, ``probes`` (health-check inferences), ``backend``."""
        s = self.served
        return {"replica": s.replica, "rank": self.rank, "weight": self.weight, "requests": s.requests,
                "failures": s.failures, "probes": s.probes, "backend": s.engine.backend}

    async def wedge(self, seconds: float) -> str:
        """Fault injection: every inference here hangs for ``seconds``. Returns this replica's id."""
        self.served.wedge(float(seconds))
        logger.warning("replica %s wedged for %g s (fault injection)", self.served.replica, seconds)
        return self.served.replica

    # -- Ray's calls -------------------------------------------------------------------------------

    async def check_health(self) -> None:
        """Run a one-item inference; raise when it fails or takes longer than ``probe_timeout_s``."""
        self.served.probes += 1
        try:
            await asyncio.wait_for(self.served.run(self._probe), self.probe_timeout_s)
        except asyncio.TimeoutError:
            raise RuntimeError(
                f"replica {self.served.replica}: a one-item inference took longer than the "
                f"{self.probe_timeout_s:g} s probe timeout; its engine looks wedged"
            ) from None

    def record_replica_metadata(self) -> dict[str, Any]:
        """Static facts Ray hands to the routers: this replica's weight and rank."""
        return {"weight": self.weight, "rank": self.rank}

    def __del__(self) -> None:
        served = getattr(self, "served", None)
        if served is not None:
            served.engine.close(drain=False)
