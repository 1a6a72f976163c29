"""``cpu_simd``'s compiled artifacts in edgecore's cache (:mod:`edgecore.cache`).

The first compile of a model creates a session at the requested optimization level that writes
what ONNX Runtime made of the model (``SessionOptions.optimized_model_filepath``): the optimized
graph in ``model.onnx`` and every initializer of 1 KiB or more -- and, with
``session.save_external_prepacked_constant_initializers=1``, the weights its kernels pre-packed --
in ``model.data`` (``session.optimized_model_external_initializers_file_name``). That session is
dropped; the compiled model runs a session created from the cached file at ``ORT_DISABLE_ALL``, as
every later start does: no optimizer time, and the weights, pre-packed ones included, are mapped
from the file (shared, reclaimable) instead of copied to the heap.

Key (:class:`edgecore.cache.CacheKey`): the model's content hash, the ONNX Runtime version, the
optimization level, precision, memory mode, the custom options that change what is built, and the
CPU's SIMD features (level "all" writes layouts for this CPU's vector width). A damaged entry
(checksums) is removed and rebuilt by the cache; one ONNX Runtime refuses to load is removed here,
and the model compiles without the cache. A cache that cannot be written (read-only, full) is
logged and skipped.

Caching applies (custom option ``artifact_cache``: "auto", True or False) by default to models with
1 MiB of weights or more: a small model compiles in milliseconds anyway.

Concurrency: :meth:`edgecore.cache.ArtifactCache.get_or_build` serializes builds of one key within a
process; across processes the worst case is two builds of the same entry, the second discarded.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import attrs

from edgecore.backend import CompileOptions
from edgecore.cache import CacheKey
from edgecore.errors import ConfigurationError
from edgecore_cpu_simd.cpuinfo import cpu_description
from edgecore_cpu_simd.session import ort

if TYPE_CHECKING:
    from edgecore.graph import Graph

logger = logging.getLogger(__name__)

__all__ = ["cached_model", "cache_key", "wants_cache", "OPTION", "RUNTIME_ONLY"]

MODEL = "model.onnx"
DATA = "model.data"
OPTION = "artifact_cache"
#: custom options that change how a session runs, not what is built (left out of the key)
RUNTIME_ONLY = frozenset({
    OPTION, "allow_spinning", "execution_mode", "log_severity_level", "enable_cpu_mem_arena", "enable_mem_pattern",
    "optimized_model_filepath", "session.intra_op.allow_spinning", "session.inter_op.allow_spinning",
})


def wants_cache(graph: Graph, options: CompileOptions) -> bool:
    """Whether ``graph`` compiled with ``options`` goes through the artifact cache."""
    setting = options.options.get(OPTION, "auto")
    if setting not in ("auto", True, False):
        raise ConfigurationError(f"cpu_simd option {OPTION!r} must be 'auto', True or False, got {setting!r}")
    if setting != "auto":
        return bool(setting)
    if options.profile_ops:
        return False
    from edgecore.modelfile import INLINE_MAX  # profiling sessions are renewed from the model, and are not what users time
    return graph.weight_bytes >= INLINE_MAX


def cache_key(graph: Graph, options: CompileOptions, level: str) -> CacheKey:
    built = {k: v for k, v in options.options.items() if k not in RUNTIME_ONLY}
    built.update(level=level, hardware=options.enable_hardware_acceleration, memory_mode=options.memory_mode)
    return CacheKey(
        model=graph.fingerprint,
        backend="cpu_simd",
        runtime=f"onnxruntime {ort().__version__}",
        device="cpu",
        precision=options.precision or "",
        options=built,
        cpu_features=cpu_description()[1],
    )


def _builder(model: str | bytes, build_options: Any) -> Callable[[Path], dict[str, Any]]:
    def build(folder: Path) -> dict[str, Any]:
        so = build_options
        so.optimized_model_filepath = str(folder / MODEL)
        so.add_session_config_entry("session.optimized_model_external_initializers_file_name", DATA)
        so.add_session_config_entry("session.optimized_model_external_initializers_min_size_in_bytes", "1024")
        if not _config_is(so, "session.disable_prepacking", "1"):
            so.add_session_config_entry("session.save_external_prepacked_constant_initializers", "1")
        session = ort().InferenceSession(model, so, providers=["CPUExecutionProvider"])
        del session  # what it pre-packed is on the heap: the served session maps the file instead
        if not (folder / MODEL).is_file():
            raise OSError(f"onnxruntime wrote no optimized model into {folder}")
        return {"source": str(model) if isinstance(model, str) else "<bytes>"}

    return build


def _config_is(so: Any, key: str, value: str) -> bool:
    try:
        return so.get_session_config_entry(key) == value
    except RuntimeError:  # not set
        return False


def cached_model(
    graph: Graph, options: CompileOptions, session_options: Callable[[CompileOptions], Any], level: str
) -> tuple[Path | None, bool, Any]:
    """``(path of the cached optimized model, whether this call built it, the entry's pin)``, or
    ``(None, False, None)`` when the cache cannot be used (logged); whoever keeps the pin keeps the
    entry from being trimmed. ``session_options`` builds ORT options for a :class:`CompileOptions`;
    ``level`` is the optimization level they carry."""
    try:
        cache = options.artifact_cache()
        key = cache_key(graph, options, level)
        model = graph.runtime_model(options.cache_dir)
        plain = attrs.evolve(options, memory_pool=None, profile_ops=False)
        entry = cache.get_or_build(key, _builder(model, session_options(plain)))
    except ConfigurationError:
        raise
    except Exception as exc:  # an unwritable cache, a model ORT cannot serialize: compile without it
        logger.warning("cpu_simd: compiling %s without the artifact cache: %s: %s", graph.name, type(exc).__name__, exc)
        return None, False, None
    return entry.file(MODEL), entry.built, entry.pin


def discard(path: Path, why: BaseException) -> None:
    """Remove the cache entry holding ``path`` (ONNX Runtime refused to load it)."""
    logger.warning("cpu_simd: the cached model %s does not load (%s); removing it", path.parent, why)
    shutil.rmtree(path.parent, ignore_errors=True)
