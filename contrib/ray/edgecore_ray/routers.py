"""Request routers for Ray Serve's ``RequestRouter`` API (``ray.serve.request_router``): round robin
and weighted, besides Ray's default (power of two choices).

A router lives in every process that sends requests to the deployment (each ``DeploymentHandle``'s
owner and each HTTP proxy) and picks a replica for each request. ``choose_replicas`` returns ranks
of replicas, most preferred first; Ray sends the request to the least loaded replica of the first
rank that has room (queue below ``max_ongoing_requests``), and backs off and asks again when none
has. Both routers put their pick alone in the first rank and every other replica in the second, so
a full replica is passed over instead of waited on.

* :class:`RoundRobinRouter`: replicas in a fixed order (their ids), one after the other.
* :class:`WeightedRouter`: smooth weighted round robin (nginx's): replica *i* gets ``w_i / sum(w)``
  of the requests, spread evenly, deterministic. A replica's weight comes from the replica itself
  (``record_replica_metadata`` returns ``{"weight": w}``, from its rank and the deployment's
  ``weights``), so a replacement replica of the same rank has the same weight.

Concurrency: Ray calls a router's methods on one asyncio event loop (the router's), never from two
threads at once; the routers keep plain attributes.
"""

from __future__ import annotations

from typing import Any, List, Optional

from ray.serve.request_router import FIFOMixin, PendingRequest, RequestRouter, RunningReplica

__all__ = ["ROUTERS", "RoundRobinRouter", "WeightedRouter", "replica_weight"]


def _key(replica: RunningReplica) -> str:
    return replica.replica_id.unique_id


def replica_weight(replica: RunningReplica, default: float = 1.0) -> float:
    """The weight a replica reported (``replica_metadata["weight"]``), else ``default``."""
    try:
        weight = float(replica.replica_metadata.get("weight", default))
    except (TypeError, ValueError):
        return default
    return weight if weight > 0 else default


class _PickOne(FIFOMixin, RequestRouter):
    """Replicas in id order; :meth:`_pick` chooses one, the others follow as the fallback rank."""

    async def choose_replicas(
        self, candidate_replicas: List[RunningReplica], pending_request: Optional[PendingRequest] = None
    ) -> List[List[RunningReplica]]:
        if not candidate_replicas:
            return []
        ordered = sorted(candidate_replicas, key=_key)
        chosen = self._pick(ordered)
        rest = [r for r in ordered if r is not chosen]
        return [[chosen], rest] if rest else [[chosen]]

    def _pick(self, ordered: List[RunningReplica]) -> RunningReplica:
        raise NotImplementedError


class RoundRobinRouter(_PickOne):
    """Each request to the next replica, in the order of their ids."""

    def initialize_state(self, **kwargs: Any) -> None:
        self._turn = 0

    def _pick(self, ordered: List[RunningReplica]) -> RunningReplica:
        chosen = ordered[self._turn % len(ordered)]
        self._turn += 1
        return chosen


class WeightedRouter(_PickOne):
    """Smooth weighted round robin over the weights the replicas report."""

    def initialize_state(self, **kwargs: Any) -> None:
        self._current: dict[str, float] = {}

    def _pick(self, ordered: List[RunningReplica]) -> RunningReplica:
        weights = {_key(r): replica_weight(r) for r in ordered}
        current = {key: self._current.get(key, 0.0) + weight for key, weight in weights.items()}
        chosen = max(ordered, key=lambda r: current[_key(r)])  # ties: the first in id order
        current[_key(chosen)] -= sum(weights.values())
        self._current = current  # replicas gone since the last call are forgotten here
        return chosen


#: Router names accepted by :func:`edgecore_ray.deployment`; None = Ray's default (power of two choices).
ROUTERS: dict[str, type | None] = {
    "power_of_two": None,
    "round_robin": RoundRobinRouter,
    "weighted": WeightedRouter,
}
