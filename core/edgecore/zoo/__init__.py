"""The model zoo: architecture-exact ONNX models with seeded weights, so that nothing is downloaded.

Models come from the ``edgecore_models`` hook; the built-in ones (:mod:`edgecore.zoo.plugin`) are
``mobilenet_v2``, ``resnet50``, ``efficientnet_b0``, ``bert_base``, tiny variants of each for tests
(``mobilenet_v2_tiny``, ``resnet_tiny``, ``efficientnet_tiny``, ``bert_tiny``) and ``digits_cnn``,
a small CNN trained on scikit-learn's digits with its held-out split (:func:`digits_test_split`)::

    from edgecore import zoo

    model = zoo.build("resnet50", seed=0)        # onnx.ModelProto, cached on disk
    zoo.export("bert_base", "bert.onnx")
    images, labels = zoo.digits_test_split()

Builds are cached on disk, keyed by name, seed, options and edgecore version, in
``$EDGECORE_CACHE_DIR`` or else ``~/.cache/edgecore/zoo``; files are written to a temporary name and
moved into place, so concurrent builds never see a half-written model. Safe to call from several
threads or processes: the worst case is that two of them build the same model.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import logging
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgecore._lazy import lazy_exports
from edgecore.errors import ModelLoadError
from edgecore.specs import ModelSpec

if TYPE_CHECKING:
    import onnx

    from edgecore.zoo._builder import count_parameters
    from edgecore.zoo._digits import digits_test_split
    from edgecore.plugins import PluginManager

logger = logging.getLogger(__name__)

__all__ = ["list_models", "get_spec", "build", "export", "cache_dir", "count_parameters", "digits_test_split"]

CACHE_ENV = "EDGECORE_CACHE_DIR"

# Listing the zoo (every plugin manager does) imports neither onnx nor numpy; building does.
__getattr__, __dir__ = lazy_exports(
    __name__,
    {"count_parameters": "edgecore.zoo._builder", "digits_test_split": "edgecore.zoo._digits"},
    globals(),
)


def list_models(plugin_manager: PluginManager | None = None) -> dict[str, ModelSpec]:
    """Every model registered through ``edgecore_models`` (of ``plugin_manager``, else the
    process-wide manager), by name."""
    if plugin_manager is None:
        from edgecore.plugins import get_plugin_manager

        plugin_manager = get_plugin_manager()
    return dict(plugin_manager.models())


def get_spec(name: str, plugin_manager: PluginManager | None = None) -> ModelSpec:
    """The :class:`ModelSpec` of ``name``; :class:`ModelLoadError` naming the available ones if none."""
    models = list_models(plugin_manager)
    try:
        return models[name]
    except KeyError:
        available = ", ".join(sorted(models)) or "none"
        raise ModelLoadError(f"no zoo model named {name!r}; available: {available}") from None


def cache_dir() -> Path:
    """Where built models are cached: ``$EDGECORE_CACHE_DIR`` or ``~/.cache/edgecore/zoo``."""
    configured = os.environ.get(CACHE_ENV)
    return Path(configured).expanduser() if configured else Path.home() / ".cache" / "edgecore" / "zoo"


def build(
    name: str, *, seed: int = 0, cache: bool = True, plugin_manager: PluginManager | None = None, **options: Any
) -> onnx.ModelProto:
    """Build zoo model ``name`` with weights drawn from ``seed``; ``options`` go to its builder.

    A second call with the same name, seed, options and edgecore version loads the cached file
    instead of building (``cache=False`` skips the cache both ways; builders marked
    ``cacheable = False``, such as loaders of packaged files, are never cached). Raises
    :class:`ModelLoadError` for an unknown name or an option the builder does not take.
    ``plugin_manager`` is where ``name`` is looked up (default: the process-wide manager).
    """
    spec = get_spec(name, plugin_manager)
    _check_options(spec, seed, options)
    use_cache = cache and getattr(spec.builder, "cacheable", True)
    path = cache_dir() / _cache_name(name, seed, options) if use_cache else None
    import onnx

    if path is not None and path.is_file():
        try:
            model = onnx.load_model(str(path))
            logger.debug("zoo model %s (seed %d) loaded from cache %s", name, seed, path)
            return model
        except Exception as exc:  # a damaged cache file is rebuilt, never fatal
            logger.warning("ignoring unreadable zoo cache file %s: %r", path, exc)
    start = time.perf_counter()
    model = spec.builder(seed=seed, **options)
    logger.info("built zoo model %s (seed %d) in %.2f s", name, seed, time.perf_counter() - start)
    if path is not None:
        try:
            _write_atomic(path, model.SerializeToString())
        except OSError as exc:  # a read-only or full cache only costs a rebuild next time
            logger.warning("could not cache zoo model %s at %s: %r", name, path, exc)
    return model


def export(name: str, path: str | os.PathLike, *, seed: int = 0, **options: Any) -> Path:
    """Build zoo model ``name`` (through the cache) and write it to ``path``; return the path."""
    model = build(name, seed=seed, **options)
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    _write_atomic(target, model.SerializeToString())
    return target


# -- helpers ----------------------------------------------------------------------------------------------


def _check_options(spec: ModelSpec, seed: int, options: dict[str, Any]) -> None:
    try:
        signature = inspect.signature(spec.builder)
    except (TypeError, ValueError):  # builtins or odd callables: let the builder judge
        return
    try:
        signature.bind(seed=seed, **options)
    except TypeError as exc:
        accepted = ", ".join(p for p in signature.parameters if p != "seed") or "none"
        raise ModelLoadError(f"zoo model {spec.name!r}: {exc}; options it takes: {accepted}") from None


def _version() -> str:
    version = getattr(sys.modules.get("edgecore"), "__version__", None)
    if version:
        return str(version)
    try:
        from importlib.metadata import version as dist_version

        return dist_version("edgecore")
    except Exception:
        return "unknown"


def _cache_name(name: str, seed: int, options: dict[str, Any]) -> str:
    import onnx

    key = json.dumps(
        {"name": name, "seed": seed, "options": options, "edgecore": _version(), "onnx": onnx.__version__},
        sort_keys=True,
        default=repr,
    )
    digest = hashlib.sha256(key.encode()).hexdigest()[:16]
    return f"{name}-seed{seed}-{digest}.onnx"


def _write_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file in the same folder and ``os.replace``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, 0o644)  # mkstemp makes it private; a model file is not a secret
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
