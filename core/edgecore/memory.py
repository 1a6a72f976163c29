"""Host memory pool: aligned buffers in size classes, reused across runs, under a budget.

Backends and the scheduler take buffers with :meth:`MemoryPool.acquire`; the array they get is
theirs (or their caller's) for as long as any reference to it -- or to any view of it -- lives. When
the last reference goes, its block returns to the pool through a weak-reference callback, so a caller
can never see a buffer change under it, and steady-state inference allocates no fresh memory.

Views: numpy collapses a view's ``base`` to the first array that owns its memory. The pool therefore
builds each array on a ``bytearray`` block (not on an ndarray slice), so that ``pooled[i:j].base`` is
the pooled array itself and a view the caller keeps holds the block out of the pool.

Other arenas (a device plugin's memory) reuse the same size classes, budget, reclamation and
statistics by passing their own :class:`Allocator` to :class:`MemoryPool`.

Concurrency: ``acquire`` may be called from any thread, and release callbacks run in whichever
thread drops the last reference; one lock guards the free lists and counters.
"""

from __future__ import annotations

import math
import threading
import weakref
from typing import Any, Protocol, Sequence

import attrs
import numpy as np

from edgecore.errors import MemoryBudgetExceeded

__all__ = ["Allocator", "HostAllocator", "MemoryPool", "PoolStatistics", "size_class"]

_MIN_CLASS = 256
_STEPS = 4  # size classes per doubling: 1, 1.25, 1.5, 1.75 x 2^k (at most 25% slack)


_CLASSES: dict[int, int] = {}  # nbytes -> size_class(nbytes), memoized for the hot path


def size_class(nbytes: int) -> int:
    """The block size that serves a request of ``nbytes``."""
    if nbytes <= _MIN_CLASS:
        return _MIN_CLASS
    exp = math.floor(math.log2(nbytes))
    base = 1 << exp
    step = base // _STEPS
    return base + step * math.ceil((nbytes - base) / step)


@attrs.frozen(kw_only=True)
class PoolStatistics:
    """A snapshot of a pool's state (bytes and counts since the pool was made)."""

    reserved_bytes: int
    in_use_bytes: int
    requested_in_use_bytes: int
    peak_in_use_bytes: int
    peak_reserved_bytes: int
    cached_bytes: int
    allocations: int
    hits: int
    misses: int
    releases: int
    budget_bytes: int

    @property
    def hit_rate(self) -> float:
        return self.hits / self.allocations if self.allocations else 1.0

    @property
    def fragmentation(self) -> float:
        """Share of the bytes handed out that size-class rounding wastes (0 = none)."""
        if not self.in_use_bytes:
            return 0.0
        return 1.0 - self.requested_in_use_bytes / self.in_use_bytes

    def to_json(self) -> dict[str, float]:
        data = attrs.asdict(self)
        data.update(hit_rate=self.hit_rate, fragmentation=self.fragmentation)
        return data


class Allocator(Protocol):
    """Where a :class:`MemoryPool` gets its blocks: host memory by default, device memory in plugins.

    ``allocate`` returns an opaque block handle and the block's address; ``wrap`` builds the
    (weak-referenceable) array-like object handed to callers on a block; ``free`` gives a block back
    to the system when the pool trims it. Called with the pool's lock held: keep them short.
    """

    def allocate(self, nbytes: int, alignment: int) -> tuple[Any, int]: ...

    def wrap(self, block: Any, shape: Sequence[int], dtype: np.dtype) -> Any: ...

    def free(self, block: Any) -> None: ...


class HostAllocator:
    """Aligned host blocks: a ``bytearray`` plus the offset of its first aligned byte."""

    def allocate(self, nbytes: int, alignment: int) -> tuple[tuple[bytearray, int], int]:
        raw = bytearray(nbytes + alignment)
        address = np.frombuffer(raw, np.uint8).ctypes.data
        offset = -address % alignment
        return (raw, offset), address + offset

    def wrap(self, block: tuple[bytearray, int], shape: Sequence[int], dtype: np.dtype) -> np.ndarray:
        return np.ndarray(shape, dtype, block[0], block[1])

    def free(self, block: Any) -> None:
        """Nothing to do: the bytearray goes with its last reference."""


class MemoryPool:
    """An arena of ``alignment``-aligned blocks (host memory unless ``allocator`` says otherwise).

    ``max_memory_usage`` (bytes, 0 = unlimited) bounds the bytes the pool reserves: a request past it
    first frees cached blocks, then raises :class:`MemoryBudgetExceeded`. ``pool_size`` (bytes,
    0 = unlimited) bounds the idle bytes kept cached for reuse.
    """

    def __init__(
        self,
        *,
        alignment: int = 64,
        max_memory_usage: int = 0,
        pool_size: int = 0,
        name: str = "host",
        allocator: Allocator | None = None,
    ) -> None:
        if alignment <= 0 or alignment & (alignment - 1):
            raise ValueError(f"MemoryPool alignment must be a power of two, got {alignment}")
        if max_memory_usage < 0 or pool_size < 0:
            raise ValueError("MemoryPool max_memory_usage and pool_size must be >= 0")
        self.alignment = alignment
        self.max_memory_usage = max_memory_usage
        self.pool_size = pool_size
        self.name = name
        self.allocator: Allocator = allocator or HostAllocator()
        self._wrap = self.allocator.wrap
        self._lock = threading.Lock()
        self._free: dict[int, list[tuple[Any, int]]] = {}  # block size -> [(block, address)]
        self._live: dict[int, tuple[int, int, tuple[Any, int], weakref.ref]] = {}
        self._reserved = self._in_use = self._requested = self._cached = 0
        self._peak_in_use = self._peak_reserved = 0
        self._allocations = self._hits = self._misses = self._releases = 0

    def acquire(self, shape: Sequence[int], dtype: np.dtype | type) -> np.ndarray:
        """An uninitialized array of ``shape`` and ``dtype`` from the pool."""
        return self.acquire_with_address(shape, dtype)[0]

    def acquire_with_address(self, shape: Sequence[int], dtype: np.dtype | type) -> tuple[np.ndarray, int]:
        """:meth:`acquire`, plus the array's data address (for binding it into a runtime)."""
        dtype = np.dtype(dtype)
        nbytes = math.prod(shape) * dtype.itemsize
        block_size = _CLASSES.get(nbytes) or _CLASSES.setdefault(nbytes, size_class(nbytes))
        with self._lock:
            self._allocations += 1
            free = self._free.get(block_size)
            if free:
                block, address = free.pop()
                self._hits += 1
                self._cached -= block_size
            else:
                block, address = self._allocate(block_size)
            self._in_use += block_size
            self._requested += nbytes
            if self._in_use > self._peak_in_use:
                self._peak_in_use = self._in_use
        try:
            array = self._wrap(block, shape, dtype)
        except BaseException:
            self._release_block(block_size, nbytes, (block, address))
            raise
        ref = weakref.ref(array, self._release)
        self._live[id(ref)] = (block_size, nbytes, (block, address), ref)
        return array, address

    def _allocate(self, block_size: int) -> tuple[Any, int]:
        """A fresh aligned block; called with the lock held."""
        if self.max_memory_usage and self._reserved + block_size > self.max_memory_usage:
            self._trim(self._reserved + block_size - self.max_memory_usage)
            if self._reserved + block_size > self.max_memory_usage:
                raise MemoryBudgetExceeded(
                    f"memory pool {self.name!r}: a {block_size}-byte buffer would take reserved memory to "
                    f"{self._reserved + block_size} bytes, over max_memory_usage={self.max_memory_usage} "
                    f"({self._in_use} bytes in use); raise max_memory_usage or lower the batch size"
                )
        block = self.allocator.allocate(block_size, self.alignment)
        self._misses += 1
        self._reserved += block_size
        self._peak_reserved = max(self._peak_reserved, self._reserved)
        return block

    def _trim(self, wanted: int) -> None:
        """Free cached blocks, largest first, until ``wanted`` bytes are freed or none is left."""
        for block_size in sorted(self._free, reverse=True):
            blocks = self._free[block_size]
            while blocks and wanted > 0:
                self.allocator.free(blocks.pop()[0])
                self._reserved -= block_size
                self._cached -= block_size
                wanted -= block_size

    def _release(self, ref: weakref.ref) -> None:
        block_size, nbytes, block, _ = self._live.pop(id(ref))
        self._release_block(block_size, nbytes, block)

    def _release_block(self, block_size: int, nbytes: int, block: tuple[Any, int]) -> None:
        with self._lock:
            self._releases += 1
            self._in_use -= block_size
            self._requested -= nbytes
            if self.pool_size and self._cached + block_size > self.pool_size:
                self._reserved -= block_size
                self.allocator.free(block[0])
                return
            self._free.setdefault(block_size, []).append(block)
            self._cached += block_size

    def clear(self) -> None:
        """Free every cached block (blocks in use are freed when released)."""
        with self._lock:
            self._trim(self._cached)

    def statistics(self) -> PoolStatistics:
        with self._lock:
            return PoolStatistics(
                reserved_bytes=self._reserved,
                in_use_bytes=self._in_use,
                requested_in_use_bytes=self._requested,
                peak_in_use_bytes=self._peak_in_use,
                peak_reserved_bytes=self._peak_reserved,
                cached_bytes=self._cached,
                allocations=self._allocations,
                hits=self._hits,
                misses=self._misses,
                releases=self._releases,
                budget_bytes=self.max_memory_usage,
            )
