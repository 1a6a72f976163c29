"""The models a server knows: named on the command line or found in a model repository, each
version loaded into its own :class:`~edgecore.Engine` -- eagerly, on first request, or on an explicit
``load`` -- and unloaded on request or, under a memory budget, when the least recently used idle
model must make room.

Repository layout (``--model-repository DIR``), as Triton's where it can be:

* ``DIR/NAME.onnx``: model ``NAME``, version ``1``;
* ``DIR/NAME/VERSION/model.onnx``: model ``NAME``, version ``VERSION`` (an integer);
* ``DIR/NAME/model.onnx``: model ``NAME``, version ``1``.

A request without a version gets the highest version.

Under ``memory_budget`` a load that would take the models' sum past the budget first unloads the
least recently used models (idle ones first; a busy one answers its accepted requests before it
closes). What a model takes is measured, not guessed: the process's RSS growth while it loads and
runs once on random inputs (weights mapped from the compiled-artifact cache count only once
touched; that run goes to the compiled model directly, so the statistics do not count it), or its
own bytes (its file, or what its backend reports holding) if those are more; loads run one at a time so that the readings do not
mix. Two things keep that reading the model's own: the runtime is started once, on a one-node
model, before the first measured load (:meth:`ModelRepository.warm_up`), so the first model is not
charged for the runtime's libraries and thread pools; and freed memory goes back to the operating
system after every load and unload (blocks of 4 MiB and more are mapped on their own, see
:func:`map_large_blocks`; the rest is trimmed with glibc's ``malloc_trim``), so RSS falls when a
model goes and the next load's growth is not hidden by memory an evicted model left behind. Before
its first load a model is guessed at its file's size times the largest memory-to-file ratio
measured so far.

The budget counts what loaded models hold; a load's own transient (the file parsed, the runtime's
session built) comes on top of it while that one load runs. A model whose own bytes -- its file,
or what its backend reports holding -- exceed the whole budget is refused with
:class:`~edgecore.errors.MemoryBudgetExceeded` (503 with Retry-After: it cannot fit at all), and
the other models keep serving; one that only measures more than the budget (RSS readings carry
other threads' noise) is loaded alone, with a warning. Without a budget the reading is the load's RSS growth alone
(no first run, no trimming: loads cost nothing more than loading).

Concurrency: every attribute here is read and written on the event loop's thread only (HTTP and
gRPC share one loop). Loading and closing an engine run in worker threads (``asyncio.to_thread``),
one at a time under ``_load_lock``; a model's ``in_flight`` count keeps it from being evicted while
requests use it, and it is preferred as an eviction victim only when no idle model is left.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import gc
import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable

import attrs
import numpy as np

from edgecore.tuned import TOML, load_tuned

from edgecore_serve.protocol.errors import BadRequest, NotFound, Unavailable

if TYPE_CHECKING:
    from edgecore.config import EngineConfig
    from edgecore.engine import Engine
    from edgecore.plugins import PluginManager
    from edgecore.tensor import TensorSpec

logger = logging.getLogger(__name__)

__all__ = [
    "ModelRepository",
    "ModelVersion",
    "map_large_blocks",
    "parse_model_argument",
    "tuned_source",
    "scan_repository",
    "trim_heap",
]

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


def tuned_source(source: str, serving: EngineConfig) -> tuple[str, EngineConfig]:
    """``(model, config)`` to serve ``source`` with: a folder ``edgecore tune`` wrote gives its chosen
    model and configuration (dynamic batching on, with the server's batching settings unless tune
    chose its own); anything else is served as given with the server's configuration."""
    folder = Path(source)
    if not (folder.is_dir() and (folder / TOML).is_file()):
        return source, serving
    model, tuned = load_tuned(folder)
    if not tuned.enable_dynamic_batching:
        batching = ("max_batch_size", "max_queue_delay_us", "preferred_batch_sizes", "max_queue_size")
        tuned = attrs.evolve(tuned, enable_dynamic_batching=True, **{f: getattr(serving, f) for f in batching})
    return str(model), tuned


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
        self.memory_bytes = 0  # RSS growth measured at the last load (and first run)
        self.own_bytes = _file_size(source)  # at least this much, whatever the reading: its weights
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


_libc: Any = None
_M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter
#: Under a budget, blocks from this size up get a mapping of their own (see :func:`map_large_blocks`).
LARGE_BLOCK = 4 << 20


def _glibc() -> Any:
    """glibc through ctypes, or False where the C library is another."""
    global _libc
    if _libc is None:
        try:
            libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
            libc.malloc_trim, libc.mallopt  # noqa: B018 - glibc has both
            _libc = libc
        except (OSError, AttributeError):  # not glibc
            _libc = False
    return _libc


def trim_heap() -> None:
    """Hand freed heap back to the operating system (glibc's ``malloc_trim``; elsewhere nothing)."""
    libc = _glibc()
    if libc:
        libc.malloc_trim(0)


def map_large_blocks() -> None:
    """Give every block of :data:`LARGE_BLOCK` or more its own mapping, returned to the operating
    system when freed (glibc's ``M_MMAP_THRESHOLD``, fixed). Without it glibc raises that threshold
    to the largest block freed so far (up to 32 MiB), so a model's weight-sized buffers come from the
    heap arenas of whichever threads loaded and ran it, and an evicted model's memory stays in them
    where ``malloc_trim`` does not reach it. Elsewhere nothing."""
    libc = _glibc()
    if libc:
        libc.mallopt(_M_MMAP_THRESHOLD, LARGE_BLOCK)


#: Longest first run of a model measured under a budget (a model slow on random inputs is measured
#: as loaded rather than holding up every load behind it).
FIRST_RUN_TIMEOUT_MS = 10_000

#: Files smaller than this teach nothing about memory per byte of model (fixed costs dominate).
_RATIO_MIN_FILE = 1 << 20


def _one_node_model() -> Any:
    """y = Identity(x), x float [1]: what :meth:`ModelRepository.warm_up` starts the runtime on."""
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["y"])],
        "edgecore_serve_warm_up",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


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
        self._warm = False
        self._ratio = 1.0  # largest measured memory / file size so far
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

    def release(self, entry: ModelVersion) -> None:
        entry.in_flight -= 1
        if entry.in_flight == 0 and entry.engine is None and self.memory_budget:
            # an evicted model's last request is answered: what still held its engine let go now
            asyncio.get_running_loop().run_in_executor(None, _collect)

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

    async def warm_up(self) -> None:
        """Before the first load under a budget: large blocks get mappings of their own
        (:func:`map_large_blocks`), and the runtime is started once (a one-node model, loaded and
        closed) so that the first measured load is not charged for the runtime's own memory.
        Failures are logged, never fatal."""
        if self._warm:
            return
        self._warm = True
        map_large_blocks()

        def start() -> None:
            from edgecore.engine import Engine

            with Engine(self.config, plugin_manager=self._pm) as engine:
                engine.load(_one_node_model())
                engine.run({"x": np.zeros(1, np.float32)})
            trim_heap()

        try:
            await asyncio.to_thread(start)
        except Exception as exc:  # noqa: BLE001 - the real load will report a real problem
            logger.warning("starting the runtime on a one-node model failed: %s", exc)

    def expected_bytes(self, entry: ModelVersion) -> int:
        """Memory the model takes once loaded: as measured at its last load, else its file's size
        times the largest memory-to-file ratio measured so far."""
        if entry.memory_bytes:
            return entry.memory_bytes
        return int(_file_size(entry.source) * self._ratio)

    def _too_large(self, entry: ModelVersion, needed: int) -> Exception:
        from edgecore.errors import MemoryBudgetExceeded

        loaded = [v.name for v in self.all_versions() if v.ready and v is not entry]
        message = (
            f"model {entry.name!r} version {entry.version} holds at least {needed / 2**20:.1f} MiB (its "
            f"weights), more than the whole memory budget of {self.memory_budget / 2**20:.1f} MiB; it is not "
            f"loaded (raise --memory-budget to serve it); models served within the budget: "
            f"{', '.join(loaded) or 'none loaded now'}"
        )
        entry.state, entry.reason = UNAVAILABLE, message
        logger.warning("%s", message)
        return MemoryBudgetExceeded(message)

    async def _load(self, entry: ModelVersion) -> None:
        async with self._lock():
            if entry.ready:
                return
            if self.closed:
                raise Unavailable("the server is shutting down")
            if self.memory_budget:
                await self.warm_up()
                if entry.own_bytes > self.memory_budget:
                    raise self._too_large(entry, entry.own_bytes)
                await self._make_room(entry, self.expected_bytes(entry))
            entry.state, entry.reason = LOADING, ""
            try:
                engine, grown = await asyncio.to_thread(self._load_engine, entry.source)
            except Exception as exc:
                entry.state, entry.reason = UNAVAILABLE, str(exc)
                logger.warning("loading model %s version %s failed: %s", entry.name, entry.version, exc)
                raise
            entry.own_bytes = max(_file_size(entry.source), engine.metrics().model_memory_bytes)
            entry.memory_bytes = max(grown, entry.own_bytes, 1)  # at least its weights, whatever RSS said
            size = _file_size(entry.source)
            if size >= _RATIO_MIN_FILE:
                self._ratio = max(self._ratio, entry.memory_bytes / size)
            if self.memory_budget and entry.own_bytes > self.memory_budget:
                held = [engine]
                del engine
                await asyncio.to_thread(_close, held)
                raise self._too_large(entry, entry.own_bytes)
            if self.memory_budget and entry.memory_bytes > self.memory_budget:
                logger.warning(
                    "model %s version %s measured %.1f MiB at its load, more than the memory budget of %.1f MiB: "
                    "it runs alone",
                    entry.name, entry.version, entry.memory_bytes / 2**20, self.memory_budget / 2**20,
                )
            entry.engine, entry.state = engine, READY
            entry.loads += 1
            entry.inputs, entry.outputs = tuple(engine.inputs), tuple(engine.outputs)
            entry.input_names = {s.name: s for s in entry.inputs}
            entry.output_names = {s.name: s for s in entry.outputs}
            self.events.append(RepositoryEvent(kind="load", name=entry.name, version=entry.version,
                                               memory_bytes=entry.memory_bytes))
            if self.memory_budget:  # the measured size may exceed the guess: evict what it displaced
                await self._make_room(entry, 0)
            logger.info("loaded model %s version %s on %s (%.1f MiB)", entry.name, entry.version, engine.backend,
                        entry.memory_bytes / 2**20)

    def _load_engine(self, source: str) -> tuple[Engine, int]:
        from edgecore.engine import Engine

        measure = bool(self.memory_budget)
        if measure:
            gc.collect()
            trim_heap()
        before = _rss()
        source, config = tuned_source(source, self.config)
        engine = Engine(config, plugin_manager=self._pm)
        try:
            engine.load(source)
        except BaseException:
            held = [engine]
            del engine
            _close(held)
            raise
        if not measure:
            return engine, max(_rss() - before, 0)
        _first_run(engine)
        trim_heap()  # what the load freed (the serialized model, parse buffers) is not the model's
        return engine, max(_rss() - before, engine.metrics().model_memory_bytes)

    async def _make_room(self, entry: ModelVersion, needed: int) -> None:
        """Unload least recently used models (idle ones first) until ``needed`` more bytes fit the
        budget. Evicting a busy model is safe: every request that acquired it has already been
        submitted (no await lies between), and closing the engine answers them first."""
        while self.used_bytes + needed > self.memory_budget:
            loaded = [v for v in self.all_versions() if v.engine is not None and v is not entry]
            if not loaded:
                return
            victim = min(loaded, key=lambda v: (v.in_flight > 0, v.last_used))
            await self._unload(victim, kind="evict")

    async def _unload(self, entry: ModelVersion, *, kind: str) -> None:
        if entry.engine is None:
            return
        held, entry.engine, entry.state = [entry.engine], None, UNLOADING
        await asyncio.to_thread(_close, held)  # answers the requests it accepted first
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
                held, entry.engine, entry.state = [entry.engine], None, UNAVAILABLE
                await asyncio.to_thread(_close, held)


def _file_size(source: str) -> int:
    """A model file's size (its weights, mostly); 0 for ``zoo:`` names and the like."""
    try:
        return Path(source).stat().st_size
    except OSError:
        return 0


def _first_run(engine: Engine) -> None:
    """One inference on random inputs, so that the reading includes what a model touches only when
    it runs: weights mapped from the compiled-artifact cache are paged in, the runtime's arena is
    sized. It runs on the compiled model, not through the engine, so the statistics count only
    requests. A model that cannot run on random inputs, or not within :data:`FIRST_RUN_TIMEOUT_MS`,
    is measured as loaded (logged)."""
    from edgecore.backend import deadline_after
    from edgecore.inputs import random_feeds

    try:
        compiled = engine.compiled
        feeds = compiled.check(random_feeds(engine.inputs, batch=1))
        compiled.execute(feeds, None, deadline_after(FIRST_RUN_TIMEOUT_MS))
    except Exception as exc:  # noqa: BLE001 - its real requests will say what is wrong
        logger.info("model measured without a first run (random inputs failed: %s)", exc)


def _collect() -> None:
    gc.collect()
    trim_heap()


def _close(held: list[Engine]) -> None:
    """Close the engine in ``held`` (its accepted requests are answered first), drop it, and give
    its memory back: an engine's parts refer to each other, so only the cycle collector frees them,
    and only then can the heap be trimmed. The caller passes the only reference, in a list."""
    engine = held.pop()
    try:
        engine.close()
    finally:
        del engine
        gc.collect()
        trim_heap()


def _version_key(version: str) -> tuple[int, int | str]:
    return (0, int(version)) if version.isdigit() else (1, version)
