"""Lazy access to the OpenVINO runtime: nothing here imports ``openvino`` until it is asked for.

``runtime()`` imports ``openvino`` once (ImportError propagates, so that ``availability`` can say
why); ``core()`` builds the process-wide ``openvino.Core`` once. ``ov.Core`` is thread-safe for
``compile_model``/``read_model``/``get_property``, so every backend and thread shares it.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Any

__all__ = ["runtime", "core", "version", "cache_root", "CACHE_ENV"]

#: Overrides where compiled blobs are cached (default: ``$XDG_CACHE_HOME/edgecore/openvino``).
CACHE_ENV = "EDGECORE_OPENVINO_CACHE_DIR"


@functools.cache
def runtime() -> Any:
    """The ``openvino`` module (raises ImportError when it is missing or broken)."""
    import openvino

    return openvino


@functools.cache
def core() -> Any:
    """The process-wide ``openvino.Core``."""
    return runtime().Core()


@functools.cache
def version() -> str:
    """OpenVINO's build version, e.g. ``2026.4.1-22982-e213a147257-releases/2026/4``."""
    return str(runtime().get_version())


def short_version() -> str:
    """The release part of :func:`version` (``2026.4.1-22982``), safe in a folder name."""
    release = version().split("-")
    return "-".join(release[:2]) if len(release) > 1 else release[0]


def cache_root() -> Path:
    """Per-user folder for OpenVINO's compiled blobs (``$EDGECORE_OPENVINO_CACHE_DIR`` overrides)."""
    configured = os.environ.get(CACHE_ENV)
    if configured:
        return Path(configured).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "edgecore" / "openvino"
