"""The models a server knows: named on the command line or found in a model repository, each
version loaded into its own :class:`~edgecore.Engine` -- eagerly, on first request, or on an explicit
``load`` -- and unloaded on request or, under a memory budget, when the least recently used idle
model must make room.

Repository layout (``--model-repository DIR``), as Triton's where it can be:

* ``DIR/NAME.onnx``: model ``NAME``, version ``1``;
* ``DIR/NAME/VERSION/model.onnx``: model ``NAME``, version ``VERSION`` (an integer);
* ``DIR/NAME/model.onnx``: model ``NAME``, version ``1``.

A request without a version gets the highest version. Memory per model is measured, not guessed:
the process's RSS growth while it loads (loads run one at a time so that the readings do not mix).
Under ``memory_budget`` a load that would take the models' sum past the budget first unloads the
least recently used models (idle ones first; a busy one answers its accepted requests before it
closes); a model larger than the whole budget (its last measured size, or before its first load its
file's size) runs alone, with a warning: serving it beats refusing it, and the first load's reading
includes the runtime's own start-up memory, so a refusal could be wrong.

Concurrency: every attribute here is read and written on the event loop's thread only (HTTP and
gRPC share one loop). Loading and closing an engine run in worker threads (``asyncio.to_thread``),
one at a time under ``_load_lock``; a model's ``in_flight`` count keeps it from being evicted while
requests use it, and it is preferred as an eviction victim only when no idle model is left.
"""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING, Iterable

import attrs

from edgecore_serve.protocol.errors import BadRequest, NotFound, Unavailable

if TYPE_CHECKING:
    from edgecore.config import EngineConfig
    from edgecore.engine import Engine
    from edgecore.plugins import PluginManager
    from edgecore.tensor import TensorSpec

logger = logging.getLogger(__name__)

__all__ = ["ModelRepository", "ModelVersion", "parse_model_argument", "scan_repository"]

READY, UNAVAILABLE, LOADING, UNLOADING = "READY", "UNAVAILABLE", "LOADING", "UNLOADING"


def parse_model_argument(argument: str) -> tuple[str, str]:
    """``NAME=PATH`` -> (NAME, PATH); a path -> (its stem, path); ``zoo:NAME`` -> (NAME, zoo:NAME)."""
    name, sep, source = argument.partition("=")
    if sep and name and source and "/" not in name and not name.startswith("zoo:"):
        return name, source
    if argument.startswith("zoo:"):
        return argument[4:], argument
    stem = Path(argument).name
    for suffix in (".onnx", ".ort"):
        if stem.endswith(suffix):
            stem = stem[: -len(suffix)]
    return stem, argument


def scan_repository(directory: Path) -> list[tuple[str, str, Path]]:
    """``(name, version, path)`` of every model in a repository folder, sorted."""
    found: list[tuple[str, str, Path]] = []
    for entry in sorted(directory.iterdir()):
        if entry.is_file() and entry.suffix == ".onnx":
            found.append((entry.stem, "1", entry))
        elif entry.is_dir():
            if (entry / "model.onnx").is_file():
                found.append((entry.name, "1", entry / "model.onnx"))
            for sub in sorted(entry.iterdir()):
                if sub.is_dir() and sub.name.isdigit() and (sub / "model.onnx").is_file():
                    found.append((entry.name, sub.name, sub / "model.onnx"))
    return found


class ModelVersion:
    """One version of one model: where it comes from, its engine once loaded, and its counters."""

    def __init__(self, name: str, version: str, source: str) -> None:
        self.name, self.version, self.source = name, version, source
        self.engine: Engine | None = None
        self.state = UNAVAILABLE
        self.reason = ""
        self.disabled = False  # unloaded on request: stays unloaded until loaded on request
        self.in_flight = 0
        self.last_used = 0.0
        self.memory_bytes = 0  # RSS growth measured at the last load
        self.loads = self.evictions = 0
        self.success = [0, 0]  # requests, ns
        self.fail = [0, 0]
        self.last_inference_ms = 0
        self.inputs: tuple[TensorSpec, ...] = ()
        self.outputs: tuple[TensorSpec, ...] = ()
        self.input_names: dict[str, TensorSpec] = {}
        self.output_names: dict[str, TensorSpec] = {}

    @property
    def ready(self) -> bool:
        return self.state == READY and self.engine is not None

    def record(self, ok: bool, ns: int) -> None:
        counts = self.success if ok else self.fail
        counts[0] += 1
        counts[1] += ns
        self.last_inference_ms = int(time.time() * 1000)


@attrs.frozen(kw_only=True)
class RepositoryEvent:
    """A load or eviction, for the log and the statistics."""

    kind: str
    name: str
    version: str
    memory_bytes: int = 0


def _rss() -> int:
    import psutil

    return int(psutil.Process().memory_info().rss)


class ModelRepository:
    """Name -> version -> :class:`ModelVersion`; loads engines through ``engine_factory``."""

    def __init__(
        self,
        config: EngineConfig,
        *,
        plugin_manager: PluginManager | None = None,
        directory: Path | None = None,
        memory_budget: int = 0,
    ) -> None:
        self.config = config
        self._pm = plugin_manager
        self.directory = Path(directory) if directory is not None else None
        self.memory_budget = int(memory_budget)
        self._models: dict[str, dict[str, ModelVersion]] = {}
        self._load_lock: asyncio.Lock | None = None
        self.events: list[RepositoryEvent] = []
        self.closed = False
        if self.directory is not None:
            self.rescan()

    # -- what is known ---------------------------------------------------------------------------

    def add(self, name: str, source: str, version: str = "1") -> ModelVersion:
        versions = self._models.setdefault(name, {})
        if version in versions:
            raise BadRequest(f"model {name!r} version {version} is named twice ({versions[version].source} and {source})")
        versions[version] = entry = ModelVersion(name, version, source)
        return entry

    def rescan(self) -> None:
        """Add models that appeared in the repository folder since the last scan."""
        if self.directory is None:
            return
        for name, version, path in scan_repository(self.directory):
            if version not in self._models.get(name, {}):
                self.add(name, str(path), version)

    def names(self) -> list[str]:
        return sorted(self._models)

    def versions(self, name: str) -> list[ModelVersion]:
        try:
            versions = self._models[name]
        except KeyError:
            raise NotFound(
                f"unknown model {name!r}; models served: {', '.join(self.names()) or 'none'}"
            ) from None
        return [versions[v] for v in sorted(versions, key=_version_key)]

    def find(self, name: str, version: str = "") -> ModelVersion:
        """The version asked (the highest when ``version`` is empty); :class:`NotFound` otherwise."""
        versions = self.versions(name)
        if not version:
            return versions[-1]
        for entry in versions:
            if entry.version == version:
                return entry
        raise NotFound(
            f"unknown version {version!r} of model {name!r}; versions: {', '.join(v.version for v in versions)}"
        )

    def all_versions(self) -> Iterable[ModelVersion]:
        for name in self.names():
            yield from self.versions(name)

    @property
    def used_bytes(self) -> int:
        return sum(v.memory_bytes for v in self.all_versions() if v.engine is not None)

    # -- loading ---------------------------------------------------------------------------------

    async def acquire(self, name: str, version: str = "") -> ModelVersion:
        """The version, loaded (lazily if need be), with one more request in flight: call
        :meth:`release` when the request is answered."""
        entry = self.find(name, version)
        if not entry.ready:
            if entry.disabled:
                raise Unavailable(
                    f"model {name!r} version {entry.version} was unloaded; load it with "
                    f"POST /v2/repository/models/{name}/load"
                )
            await self._load(entry)
        entry.in_flight += 1
        entry.last_used = time.monotonic()
        return entry

    @staticmethod
    def release(entry: ModelVersion) -> None:
        entry.in_flight -= 1

    async def load(self, name: str) -> None:
        """Load every version of ``name`` (the repository extension's load)."""
        self.rescan()
        for entry in self.versions(name):
            entry.disabled = False
            await self._load(entry)

    async def unload(self, name: str) -> None:
        """Unload every version of ``name``; its accepted requests are answered first."""
        for entry in self.versions(name):
            entry.disabled = True
            await self._unload(entry, kind="unload")

    async def load_all(self) -> None:
        for entry in list(self.all_versions()):
            await self._load(entry)

    def _lock(self) -> asyncio.Lock:
        if self._load_lock is None:
            self._load_lock = asyncio.Lock()
        return self._load_lock

    async def _load(self, entry: ModelVersion) -> None:
        async with self._lock():
            if entry.ready:
                return
            if self.closed:
                raise Unavailable("the server is shutting down")
            if self.memory_budget:
                await self._make_room(entry, entry.memory_bytes or _estimate(entry.source))
            entry.state, entry.reason = LOADING, ""
            try:
                engine, grown = await asyncio.to_thread(self._load_engine, entry.source)
            except Exception as exc:
                entry.state, entry.reason = UNAVAILABLE, str(exc)
                logger.warning("loading model %s version %s failed: %s", entry.name, entry.version, exc)
                raise
            entry.engine, entry.state = engine, READY
            entry.memory_bytes = max(grown, 0)
            entry.loads += 1
            entry.inputs, entry.outputs = tuple(engine.inputs), tuple(engine.outputs)
            entry.input_names = {s.name: s for s in entry.inputs}
            entry.output_names = {s.name: s for s in entry.outputs}
            self.events.append(RepositoryEvent(kind="load", name=entry.name, version=entry.version,
                                               memory_bytes=entry.memory_bytes))
            if self.memory_budget:  # the measured size may exceed the estimate: evict what it displaced
                await self._make_room(entry, 0, strict=False)
            logger.info("loaded model %s version %s on %s (%.1f MiB)", entry.name, entry.version, engine.backend,
                        entry.memory_bytes / 2**20)

    def _load_engine(self, source: str) -> tuple[Engine, int]:
        from edgecore.engine import Engine

        before = _rss()
        engine = Engine(self.config, plugin_manager=self._pm)
        try:
            engine.load(source)
        except BaseException:
            engine.close()
            raise
        return engine, _rss() - before

    async def _make_room(self, entry: ModelVersion, needed: int, *, strict: bool = True) -> None:
        """Unload least recently used models (idle ones first) until ``needed`` more bytes fit the
        budget. Evicting a busy model is safe: every request that acquired it has already been
        submitted (no await lies between), and closing the engine answers them first."""
        if strict and needed > self.memory_budget:
            logger.warning(
                "model %s needs about %.1f MiB, more than the whole memory budget of %.1f MiB: it runs alone",
                entry.name, needed / 2**20, self.memory_budget / 2**20,
            )
        while self.used_bytes + needed > self.memory_budget:
            loaded = [v for v in self.all_versions() if v.engine is not None and v is not entry]
            if not loaded:
                return  # the model runs alone, whatever its measured size
            victim = min(loaded, key=lambda v: (v.in_flight > 0, v.last_used))
            await self._unload(victim, kind="evict")

    async def _unload(self, entry: ModelVersion, *, kind: str) -> None:
        engine = entry.engine
        if engine is None:
            return
        entry.engine, entry.state = None, UNLOADING
        await asyncio.to_thread(engine.close)  # answers the requests it accepted first
        entry.state = UNAVAILABLE
        entry.reason = "unloaded" if kind == "unload" else "evicted to stay within the memory budget"
        if kind == "evict":
            entry.evictions += 1
        self.events.append(RepositoryEvent(kind=kind, name=entry.name, version=entry.version,
                                           memory_bytes=entry.memory_bytes))
        logger.info("%s model %s version %s", "evicted" if kind == "evict" else "unloaded", entry.name, entry.version)

    async def close(self) -> None:
        """Close every engine, answering their accepted requests first."""
        self.closed = True
        for entry in list(self.all_versions()):
            if entry.engine is not None:
                engine, entry.engine, entry.state = entry.engine, None, UNAVAILABLE
                await asyncio.to_thread(engine.close)


def _estimate(source: str) -> int:
    """A first guess at a model's memory before it was ever loaded: its file's size (the weights)."""
    try:
        return Path(source).stat().st_size
    except OSError:  # zoo: names and the like: measured at their first load
        return 0


def _version_key(version: str) -> tuple[int, int | str]:
    return (0, int(version)) if version.isdigit() else (1, version)
