"""Run one application on Ray Serve until SIGINT/SIGTERM: what ``edgecore serve MODEL --ray`` does.

Without an address a local Ray cluster is started for the process and shut down at the end; with
one (``auto``, ``ray://host:10001``, ...) the application joins that cluster and only the
application is deleted at the end (Ray Serve and the cluster keep running).

Concurrency: the calling thread blocks on an event that the signal handlers set.
"""

from __future__ import annotations

import logging
import signal
import threading
from typing import Any, Callable

__all__ = ["serve_forever"]

logger = logging.getLogger(__name__)


def serve_forever(
    app: Any,
    *,
    name: str,
    host: str = "127.0.0.1",
    port: int = 8000,
    address: str | None = None,
    on_ready: Callable[[], None] | None = None,
) -> int:
    """Start Ray Serve's HTTP proxy on ``host:port``, run ``app`` as application ``name`` at route
    ``/`` (KServe v2 paths), call ``on_ready`` once every replica is up, and wait for SIGINT/SIGTERM.
    Returns the exit code (0)."""
    import ray
    from ray import serve

    stop = threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGINT, signal.SIGTERM)}
    ray.init(address=address, include_dashboard=False, configure_logging=False)
    try:
        serve.start(http_options={"host": host, "port": port})
        serve.run(app, name=name, route_prefix="/")
        if on_ready is not None:
            on_ready()
        while not stop.wait(0.5):
            pass
        logger.info("stopping: deleting application %s", name)
        if address:
            serve.delete(name)
        else:
            serve.shutdown()
    finally:
        ray.shutdown()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 0
