"""Core's default answers to the decision hooks; they run last, so any plugin can override them."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Sequence

from edgecore.hookspecs import hookimpl

if TYPE_CHECKING:
    from edgecore.graph import Graph
    from edgecore.specs import BackendSpec


@hookimpl(trylast=True)
def edgecore_select_backend(graph: Graph, candidates: Sequence[BackendSpec], config: Any) -> BackendSpec | None:
    """The highest-priority candidate that runs every operator of the graph (``config``, the
    engine's :class:`~edgecore.config.EngineConfig`, is not consulted)."""
    from edgecore.backend import backend_for

    for spec in candidates:
        if not backend_for(spec).unsupported_ops(graph):
            return spec
    return None
