"""Memory of a configuration: PSS growth in a fresh process (MEASURING.md: PSS, not RSS).

:func:`measure_pss` starts a fresh interpreter that imports edgecore and the backend's runtime,
reads its proportional set size (``Pss`` of ``/proc/self/smaps_rollup``; memory-mapped weights
count by the share this process maps, not whole as in RSS), loads and compiles the model through
``Engine`` with the candidate's settings, runs a few queries, collects garbage and trims the heap,
and reads PSS again. The growth is what the configuration costs.

Concurrency: one call owns its child process; it is killed past ``timeout_s``.
"""

from __future__ import annotations

import gc
import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any, Mapping

from edgecore.errors import EdgecoreError

__all__ = ["measure_pss", "read_pss_mb", "child_main", "METHOD"]

MARK = "@@edgecore-tune "
METHOD = ("PSS growth (smaps_rollup) of a fresh process from after importing edgecore and the backend's runtime "
          "to after load, compile and warm-up queries (garbage collected, heap trimmed)")
_BOOTSTRAP = "import sys, json; from edgecore.tune.memory import child_main; child_main(json.loads(sys.argv[1]))"


def read_pss_mb() -> tuple[float, str]:
    """This process's PSS in MB and how it was read (RSS where there is no PSS)."""
    try:
        for line in Path("/proc/self/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return float(line.split()[1]) / 1024, "pss"
    except OSError:
        pass
    import psutil

    info = psutil.Process().memory_full_info()
    pss = getattr(info, "pss", None)
    return ((pss if pss is not None else info.rss) / 2**20), ("pss" if pss is not None else "rss")


def _trim() -> None:
    gc.collect()
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def child_main(spec: Mapping[str, Any]) -> None:
    """The child: measure one configuration and write one protocol line."""
    from edgecore.backend import backend_for
    from edgecore.config import EngineConfig
    from edgecore.engine import Engine
    from edgecore.inputs import random_feeds
    from edgecore.plugins import get_plugin_manager

    pm = get_plugin_manager()
    config = EngineConfig(**spec["config"])
    backend_for(pm.backends()[config.backend]).availability()  # imports the runtime
    _trim()
    before, how = read_pss_mb()
    engine = Engine(config, plugin_manager=pm).load(spec["model"])
    feeds = random_feeds(engine.inputs, batch=int(spec.get("batch", 1)), seed=0,
                         sequence=int(spec.get("sequence", 128)))
    for _ in range(int(spec.get("queries", 3))):
        engine.run(feeds)
    _trim()
    after, _ = read_pss_mb()
    sys.stdout.write(MARK + json.dumps({"before_mb": before, "after_mb": after, "how": how}) + "\n")
    sys.stdout.flush()
    engine.close()


def measure_pss(
    model: str, config_fields: Mapping[str, Any], *, batch: int = 1, sequence: int = 128, queries: int = 3,
    timeout_s: float = 300.0,
) -> dict[str, Any]:
    """``{"pss_growth_mb", "before_mb", "after_mb", "how"}`` of ``model`` (a path or ``zoo:NAME``)
    under the EngineConfig ``config_fields``, from a fresh process."""
    spec = {"model": model, "config": dict(config_fields), "batch": batch, "sequence": sequence, "queries": queries}
    try:
        done = subprocess.run([sys.executable, "-c", _BOOTSTRAP, json.dumps(spec, default=str)], capture_output=True,
                              text=True, timeout=timeout_s, cwd=tempfile.gettempdir())
    except subprocess.TimeoutExpired as exc:
        raise EdgecoreError(f"memory measurement of {model} took more than {timeout_s:.0f} s") from exc
    for line in done.stdout.splitlines():
        if line.startswith(MARK):
            data = json.loads(line[len(MARK):])
            return dict(data, pss_growth_mb=data["after_mb"] - data["before_mb"])
    raise EdgecoreError(f"memory measurement child for {model} failed (exit code {done.returncode}): "
                        f"{done.stderr.strip()[-1500:]}")
