"""edgecore-ray: scale edgecore models out on Ray Serve.

:func:`deployment` builds a Ray Serve application whose replicas each hold an Engine, reachable
through a ``DeploymentHandle`` and over KServe v2 HTTP on Ray's ingress; custom request routers
(round robin, weighted) live in :mod:`edgecore_ray.routers`; :class:`Client` retries idempotent
inference on replica death, 5xx and connection errors. Ray is imported on first use.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"
__all__ = ["Client", "build", "deployment", "replica_stats"]


def __getattr__(name: str) -> Any:
    if name in ("build", "deployment", "replica_stats", "model_name"):
        from edgecore_ray import app

        return getattr(app, name)
    if name == "Client":
        from edgecore_ray.client import Client

        return Client
    raise AttributeError(f"module 'edgecore_ray' has no attribute {name!r}")
