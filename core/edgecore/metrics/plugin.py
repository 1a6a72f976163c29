"""Built-in plugin: keeps the registry of live engines (:func:`edgecore.metrics.default_collector`)
through the engine life hooks, so that ``start_http_server(port)`` serves every loaded engine
without the engine knowing this module."""

from __future__ import annotations

from typing import TYPE_CHECKING

from edgecore.hookspecs import hookimpl

if TYPE_CHECKING:
    from edgecore.engine import Engine

__all__ = ["edgecore_engine_started", "edgecore_engine_closed"]


@hookimpl
def edgecore_engine_started(engine: Engine) -> None:
    """Expose the engine (held weakly: a collected engine disappears from the exposition)."""
    from edgecore.metrics.exposition import track

    track(engine)


@hookimpl
def edgecore_engine_closed(engine: Engine) -> None:
    from edgecore.metrics.exposition import untrack

    untrack(engine)
