"""The compiled-artifact cache: what makes a second start cheap, shared by every backend.

No runtime caches across backends, so core does: an entry holds whatever a backend builds from a
model (an optimized ONNX file with its weights as external data, OpenVINO blobs, TensorRT plans,
timing caches) plus a small JSON of metadata (input/output specs, fingerprint) that lets a cached
start skip parsing the model. Keys (:class:`CacheKey`) are made of everything that changes the
artifact: model content hash, backend, runtime version, device, precision, the options that matter
and the CPU's features.

Layout: ``<root>/<digest>/`` holds the entry's files and ``MANIFEST.json`` (key, metadata, size and
SHA-256 of every file). Entries are built in a temporary folder beside them and renamed into place,
so readers never see half an entry and concurrent writers are safe (the first rename wins; the
loser's copy is dropped). A reader verifies the manifest -- sizes always, SHA-256 digests whenever
the files' identity (inode, size, mtime, ctime) differs from the one recorded when they were last
verified (``.verified`` in the entry, so that a second start of a large model does not hash its
weights again; any write to a file changes its ctime) -- and removes an entry that does not match: a
bad entry is rebuilt, never trusted. The cache is capped in bytes; the least recently used entries
(manifest mtime, touched on every hit) go first -- except entries in use: every entry handed out
holds a shared lock on the entry's ``.pin`` file for as long as the :class:`CacheEntry` (or its
``pin``) lives, and trimming removes an entry only under an exclusive lock it can take at once, so a
live Graph or compiled model never finds its mapped weights evicted by another build, in this process
or another (while entries are in use the cache may stay above its cap).

Concurrency: any number of threads and processes may use one root. Within a process, one lock
serializes builds of the same key; across processes the worst case is that two build the same entry.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
import threading
import time
from pathlib import Path

try:
    import fcntl
except ImportError:  # no flock (Windows): entries in use are not protected from trimming
    fcntl = None
from typing import Any, Callable, Mapping

import attrs

from edgecore.errors import ConfigurationError

logger = logging.getLogger(__name__)

__all__ = ["ArtifactCache", "CacheEntry", "CacheKey", "Pin", "default_cache_dir", "CACHE_ENV"]

CACHE_ENV = "EDGECORE_CACHE_DIR"
MANIFEST = "MANIFEST.json"
VERIFIED = ".verified"
PIN = ".pin"
_FORMAT = 1
_CHUNK = 1 << 20


def default_cache_dir() -> Path:
    """``$EDGECORE_CACHE_DIR/artifacts``, else ``~/.cache/edgecore/artifacts``."""
    configured = os.environ.get(CACHE_ENV)
    base = Path(configured).expanduser() if configured else Path.home() / ".cache" / "edgecore"
    return base / "artifacts"


def _options(value: Mapping[str, Any] | None) -> tuple[tuple[str, str], ...]:
    return tuple(sorted((str(k), json.dumps(v, sort_keys=True, default=repr)) for k, v in (value or {}).items()))


@attrs.frozen(kw_only=True)
class CacheKey:
    """Everything that changes a compiled artifact. ``options`` holds only the settings that change
    what is built (not thread counts, say); ``extra`` anything else the backend needs in the key."""

    model: str  # content hash of the model (weights included)
    backend: str
    runtime: str  # the runtime and its version, e.g. "onnxruntime 1.32.0"
    device: str = "cpu"
    precision: str = ""
    options: tuple[tuple[str, str], ...] = attrs.field(factory=tuple, converter=_options)
    cpu_features: tuple[str, ...] = attrs.field(factory=tuple, converter=lambda v: tuple(sorted(v)))

    def digest(self) -> str:
        return hashlib.sha256(json.dumps(self.to_json(), sort_keys=True).encode()).hexdigest()[:32]

    def to_json(self) -> dict[str, Any]:
        return {
            **attrs.asdict(self, recurse=False),
            "options": [list(o) for o in self.options],
            "cpu_features": list(self.cpu_features),
            "format": _FORMAT,
        }


class Pin:
    """A shared lock on an entry's ``.pin`` file: while it is held (until :meth:`release` or garbage
    collection) trimming leaves the entry alone."""

    def __init__(self, fd: int | None) -> None:
        self._fd = fd

    @classmethod
    def take(cls, folder: Path) -> Pin | None:
        """A pin on ``folder``'s entry, or None when the entry is being removed (or is gone)."""
        if fcntl is None:
            return cls(None)
        try:
            fd = os.open(folder / PIN, os.O_RDONLY | os.O_CREAT, 0o644)
        except OSError:
            return None
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError:  # a trim holds it exclusively: the entry is on its way out
            os.close(fd)
            return None
        if not (folder / MANIFEST).is_file():  # removed between the open and the lock
            os.close(fd)
            return None
        return cls(fd)

    def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)

    def __del__(self) -> None:
        self.release()


def _try_exclusive(folder: Path) -> int | None:
    """An exclusive lock on ``folder``'s pin file if no one holds the entry (its fd), else None."""
    if fcntl is None:
        return -1
    try:
        fd = os.open(folder / PIN, os.O_RDONLY | os.O_CREAT, 0o644)
    except OSError:
        return -1  # cannot even create it: nobody can hold it either
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        return None
    return fd


@attrs.frozen(kw_only=True)
class CacheEntry:
    """A verified entry: its folder, its metadata, whether this call built it, and the pin that keeps
    it from being trimmed while this record (or whoever keeps ``pin``) lives."""

    path: Path
    metadata: Mapping[str, Any]
    files: tuple[str, ...]
    built: bool = False
    pin: Pin | None = attrs.field(default=None, eq=False, repr=False)

    def file(self, name: str) -> Path:
        return self.path / name


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


#: entries whose checksums were verified in this process, by their files' identity (a file rewritten
#: since gets a new mtime and ctime and is verified again); any ArtifactCache on the same root shares it
_verified: set[tuple] = set()
_verified_lock = threading.Lock()


def _stamp(path: Path, files: Mapping[str, Any]) -> tuple | str:
    """``(folder, (name, size, mtime, inode, ctime)...)`` of an entry's files, or what is wrong with them."""
    parts: list[tuple] = []
    for name, (size, _) in sorted(files.items()):
        try:
            stat = (path / name).stat()
        except OSError:
            return f"{name} is missing"
        if stat.st_size != size:
            return f"{name} has the wrong size"
        parts.append((name, stat.st_size, stat.st_mtime_ns, stat.st_ino, stat.st_ctime_ns))
    return (str(path.resolve()), tuple(parts))


def _recorded(path: Path, stamp: tuple) -> bool:
    """Whether the entry at ``path`` records ``stamp`` as verified (by this or another process)."""
    try:
        return (path / VERIFIED).read_text() == json.dumps(stamp)
    except OSError:
        return False


def _record(path: Path, stamp: tuple) -> None:
    with _verified_lock:
        _verified.add(stamp)
    staging = path / f"{VERIFIED}.{os.getpid()}.{threading.get_ident()}"
    try:
        staging.write_text(json.dumps(stamp))
        os.replace(staging, path / VERIFIED)
    except OSError:  # a read-only cache: verified again by the next process
        staging.unlink(missing_ok=True)


class ArtifactCache:
    """A folder of compiled artifacts, capped at ``max_bytes`` (0 = no cap), least recently used out."""

    def __init__(self, root: str | os.PathLike | None = None, *, max_bytes: int = 4 << 30) -> None:
        if max_bytes < 0:
            raise ConfigurationError(f"ArtifactCache max_bytes must be >= 0 (0 = no cap), got {max_bytes}")
        self.root = Path(root).expanduser() if root is not None else default_cache_dir()
        self.max_bytes = max_bytes
        self._locks: dict[str, threading.Lock] = {}
        self._locks_lock = threading.Lock()

    # -- reading ---------------------------------------------------------------------------------

    def get(self, key: CacheKey) -> CacheEntry | None:
        """The entry for ``key`` if present and intact; a damaged one is removed (None)."""
        digest = key.digest()
        path = self.root / digest
        try:
            manifest = json.loads((path / MANIFEST).read_text())
        except (FileNotFoundError, NotADirectoryError):
            return None
        except (OSError, ValueError) as exc:
            return self._discard(path, f"unreadable manifest ({exc})")
        pin = Pin.take(path)
        if pin is None:  # being trimmed right now: a miss
            return None
        problem = self._check(path, digest, key, manifest)
        if problem:
            pin.release()
            return self._discard(path, problem)
        try:
            os.utime(path / MANIFEST)  # least recently used goes first
        except OSError:
            pass
        return CacheEntry(path=path, metadata=manifest.get("metadata", {}), files=tuple(manifest["files"]), pin=pin)

    def _check(self, path: Path, digest: str, key: CacheKey, manifest: Mapping[str, Any]) -> str | None:
        if manifest.get("key") != key.to_json():
            return "its key does not match (a hash collision or an edited manifest)"
        files = manifest.get("files")
        if not isinstance(files, dict):
            return "its manifest lists no files"
        stamp = _stamp(path, files)
        if isinstance(stamp, str):
            return stamp
        if stamp in _verified:
            return None
        if _recorded(path, stamp):
            with _verified_lock:
                _verified.add(stamp)
            return None
        for name, (_, sha) in files.items():
            if _sha256(path / name) != sha:
                return f"{name} fails its checksum"
        _record(path, stamp)
        return None

    def _discard(self, path: Path, why: str) -> None:
        logger.warning("edgecore cache: discarding entry %s: %s; it will be rebuilt", path.name, why)
        shutil.rmtree(path, ignore_errors=True)
        return None

    # -- writing ---------------------------------------------------------------------------------

    def get_or_build(
        self, key: CacheKey, build: Callable[[Path], Mapping[str, Any] | None]
    ) -> CacheEntry:
        """The entry for ``key``, built by ``build(folder)`` if absent or damaged.

        ``build`` writes the artifact's files into ``folder`` and returns the metadata to keep (JSON
        values). A build that raises leaves nothing behind.
        """
        entry = self.get(key)
        if entry is not None:
            return entry
        digest = key.digest()
        with self._lock_for(digest):
            entry = self.get(key)  # another thread may have built it meanwhile
            if entry is not None:
                return entry
            return self._build(key, digest, build)

    def _build(self, key: CacheKey, digest: str, build: Callable[[Path], Mapping[str, Any] | None]) -> CacheEntry:
        self.root.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(dir=self.root, prefix=f".{digest}."))
        try:
            metadata = dict(build(staging) or {})
            files = {
                str(p.relative_to(staging)): (p.stat().st_size, _sha256(p))
                for p in sorted(staging.rglob("*"))
                if p.is_file()
            }
            manifest = {"key": key.to_json(), "metadata": metadata, "files": files, "created": time.time()}
            (staging / MANIFEST).write_text(json.dumps(manifest, sort_keys=True, default=repr))
            target, ours = self.root / digest, True
            try:
                os.rename(staging, target)
            except OSError:  # another process won the race, or a damaged entry sits there
                if self.get(key) is None:
                    shutil.rmtree(target, ignore_errors=True)
                    os.rename(staging, target)
                else:  # theirs, verified by get()
                    shutil.rmtree(staging, ignore_errors=True)
                    ours = False
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        stamp = _stamp(target, files)
        if ours and not isinstance(stamp, str):
            _record(target, stamp)  # just hashed while writing
        self.trim(keep=digest)
        entry = self.get(key)
        if entry is None:
            raise OSError(f"edgecore cache: the entry just written at {target} cannot be read back")
        return attrs.evolve(entry, built=True)

    def _lock_for(self, digest: str) -> threading.Lock:
        with self._locks_lock:
            return self._locks.setdefault(digest, threading.Lock())

    # -- housekeeping ----------------------------------------------------------------------------

    def entries(self) -> list[tuple[Path, int, float]]:
        """``(folder, bytes, last use)`` of every complete entry, least recently used first."""
        found = []
        if not self.root.is_dir():
            return found
        for path in self.root.iterdir():
            manifest = path / MANIFEST
            if path.name.startswith(".") or not manifest.is_file():
                continue
            size = sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
            found.append((path, size, manifest.stat().st_mtime))
        return sorted(found, key=lambda item: item[2])

    def size_bytes(self) -> int:
        return sum(size for _, size, _ in self.entries())

    def trim(self, *, keep: str | None = None) -> int:
        """Remove least recently used entries until the cache fits ``max_bytes``, and staging folders
        left by writers that died over an hour ago; return bytes freed."""
        self._remove_stale_staging()
        if not self.max_bytes:
            return 0
        entries = self.entries()
        total, freed = sum(size for _, size, _ in entries), 0
        for path, size, _ in entries:
            if total <= self.max_bytes:
                break
            if path.name == keep:
                continue
            lock = _try_exclusive(path)
            if lock is None:  # in use by a live Graph or compiled model, here or in another process
                continue
            try:
                shutil.rmtree(path, ignore_errors=True)
            finally:
                if lock >= 0:
                    os.close(lock)
            total -= size
            freed += size
        return freed

    def _remove_stale_staging(self, age_s: float = 3600.0) -> None:
        if not self.root.is_dir():
            return
        now = time.time()
        for path in self.root.glob(".*"):
            try:
                if now - path.stat().st_mtime > age_s:
                    shutil.rmtree(path, ignore_errors=True)
            except OSError:
                pass

    def clear(self) -> None:
        """Remove every entry (and stale staging folders)."""
        if self.root.is_dir():
            for path in self.root.iterdir():
                shutil.rmtree(path, ignore_errors=True)
