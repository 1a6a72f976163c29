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

The budget (``max_memory_usage``, bytes, 0 = none):

* The pool never reserves more than the budget: a request that would take it past the budget first
  frees cached blocks, then raises :class:`~edgecore.errors.MemoryBudgetExceeded` *before* a buffer
  is handed out -- also on the first request of a shape.
* Arrays a runtime allocates itself and hands to the caller (outputs whose shape depends on the
  data) are checked with :meth:`MemoryPool.check_budget` after the run, beside what the pool
  reserves, and refused the same way (the backend drops them). The pool cannot see how long the
  caller keeps them, so they are checked per request, not summed across requests.
* A runtime's working memory (intermediate tensors) is not the pool's to see. A backend caps it at
  the same budget where its runtime lets it: ``cpu_simd`` gives each budgeted session its own ONNX
  Runtime arena of ``max_mem = max_memory_usage`` (see that plugin's backend module), so an
  intermediate past the budget fails the run with ``MemoryBudgetExceeded`` instead of growing the
  process. The pool and the runtime's arena are capped separately: together they may hold up to
  twice the budget.
* Caller-given ``out`` buffers, model weights and string tensors are not counted.

Concurrency: ``acquire`` may be called from any thread. A released array's weak-reference callback
runs in whichever thread drops the last reference -- and, through the cyclic garbage collector, at
any allocation, including one made while that same thread holds the pool's lock. So the callback
takes no lock: it only appends the lease to a :class:`queue.SimpleQueue` (reentrant), which
``acquire``, ``statistics``, ``check_budget`` and ``clear`` drain under the pool's lock. One lock
guards the free lists and counters; the allocator is called with it held.
"""

from __future__ import annotations

import math
import queue
import threading
import weakref
from typing import Any, Protocol, Sequence

import attrs
import numpy as np

from edgecore.errors import MemoryBudgetExceeded

__all__ = ["Allocator", "HostAllocator", "MemoryPool", "PoolStatistics", "size_class"]

_MIN_CLASS = 256
_STEPS = 4  # size classes per doubling: 1, 1.25, 1.5, 1.75 x 2^k (at most 25% slack)
_REQUESTS = 4096  # (shape, dtype) requests whose byte count and size class are remembered
_ndarray = np.ndarray
_lease = weakref.ref


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
    to the system when the pool trims it. ``allocate`` and ``free`` are called with the pool's lock
    held: keep them short (they may trigger a garbage collection: the pool is ready for that).
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
    first frees cached blocks, then raises :class:`MemoryBudgetExceeded` (see the module docstring
    for what else the budget covers). ``pool_size`` (bytes, 0 = unlimited) bounds the idle bytes
    kept cached for reuse.
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
        self._host = type(self.allocator) is HostAllocator  # wrapped inline on the hot path
        self._lock = threading.Lock()
        self._free: dict[int, list[tuple[Any, int]]] = {}  # block size -> [(block, address)]
        # id(lease) -> (block size, bytes asked, (block, address), lease): a lease is a weak reference
        # to a handed-out array; it must live for its callback to run.
        self._live: dict[int, tuple[int, int, tuple[Any, int], weakref.ref]] = {}
        self._returned: queue.SimpleQueue[weakref.ref] = queue.SimpleQueue()
        self._return = self._returned.put  # the weakref callback: reentrant, takes no lock
        self._requests: dict[tuple, tuple] = {}  # (shape, dtype) -> request
        self._reserved = self._in_use = self._requested = self._cached = 0
        self._peak_in_use = self._peak_reserved = 0
        self._allocations = self._hits = self._misses = self._releases = 0
        self._recycled = 0  # blocks handed out again straight from a release (each also one of the three)

    def acquire(self, shape: Sequence[int], dtype: np.dtype | type) -> np.ndarray:
        """An uninitialized array of ``shape`` and ``dtype`` from the pool."""
        return self.take(self.request(shape, dtype))[0]

    def acquire_with_address(self, shape: Sequence[int], dtype: np.dtype | type) -> tuple[np.ndarray, int]:
        """:meth:`acquire`, plus the array's data address (for binding it into a runtime)."""
        return self.take(self.request(shape, dtype))

    def request(self, shape: Sequence[int], dtype: np.dtype | type) -> tuple:
        """A request for ``shape`` and ``dtype`` with its byte count and size class worked out, for
        :meth:`take` (callers on a hot path keep it instead of asking each time)."""
        key = (shape, dtype)
        try:
            return self._requests[key]
        except KeyError:
            pass
        except TypeError:  # a list for a shape
            key = (tuple(shape), dtype)
        dtype = np.dtype(dtype)
        nbytes = math.prod(key[0]) * dtype.itemsize
        request = (tuple(key[0]), dtype, nbytes, size_class(nbytes))
        if len(self._requests) >= _REQUESTS:
            self._requests = {}
        self._requests[key] = request
        return request

    def take(self, request: tuple) -> tuple[np.ndarray, int]:
        """An array for a :meth:`request`, and its data address: the hot path of every run.

        Taking the lock once, it takes back the first block whose array died; when that has this
        request's size class (a run loop's steady state) it is handed out again directly, else all
        returned blocks go back to their free lists first. Nothing is allocated on a hit but the
        array and its lease.
        """
        shape, dtype, nbytes, block_size = request
        returned = self._returned
        with self._lock:
            if returned.empty():
                block = self._hand_out(block_size, nbytes)
            else:
                size, size_nbytes, block, _ = self._live.pop(id(returned.get_nowait()))
                if size == block_size:  # one came back, the same size goes out (others wait their turn)
                    self._recycled += 1  # a release, an allocation and a hit at once
                    self._requested += nbytes - size_nbytes
                else:
                    self._put_back(size, size_nbytes, block)
                    self._drain()
                    block = self._hand_out(block_size, nbytes)
        handle = block[0]
        try:
            if self._host:
                array = _ndarray(shape, dtype, handle[0], handle[1])
            else:
                array = self._wrap(handle, shape, dtype)
        except BaseException:
            with self._lock:
                self._put_back(block_size, nbytes, block)
            raise
        lease = _lease(array, self._return)
        self._live[id(lease)] = (block_size, nbytes, block, lease)
        return array, block[1]

    def _hand_out(self, block_size: int, nbytes: int) -> tuple[Any, int]:
        """A cached block of ``block_size``, or a fresh one, counted as handed out; lock held."""
        free = self._free.get(block_size)
        if free:
            block = free.pop()
            self._hits += 1
            self._cached -= block_size
        else:
            block = self._allocate(block_size)
        self._allocations += 1
        self._in_use += block_size
        self._requested += nbytes
        if self._in_use > self._peak_in_use:
            self._peak_in_use = self._in_use
        return block

    def check_budget(self, nbytes: int, what: str = "memory the runtime allocated") -> None:
        """Raise :class:`MemoryBudgetExceeded` unless ``nbytes`` more bytes (held outside the pool,
        e.g. outputs a runtime allocated itself) fit in ``max_memory_usage`` beside the bytes the
        pool reserves; cached blocks are freed first to make room."""
        if not self.max_memory_usage:
            return
        with self._lock:
            if not self._returned.empty():
                self._drain()
            over = self._reserved + nbytes - self.max_memory_usage
            if over > 0:
                self._trim(over)
                if self._reserved + nbytes > self.max_memory_usage:
                    raise MemoryBudgetExceeded(
                        f"memory pool {self.name!r}: {what} ({nbytes} bytes) beside the {self._reserved} "
                        f"bytes the pool reserves is over max_memory_usage={self.max_memory_usage}; raise "
                        f"max_memory_usage or lower the batch size"
                    )

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

    def _drain(self) -> None:
        """Take back the blocks whose arrays died (their leases wait in ``_returned``); lock held."""
        returned, live = self._returned, self._live
        while not returned.empty():  # only this thread takes from it (the lock is held)
            block_size, nbytes, block, _ = live.pop(id(returned.get_nowait()))
            self._put_back(block_size, nbytes, block)

    def _put_back(self, block_size: int, nbytes: int, block: tuple[Any, int]) -> None:
        """Return a block to its free list (or to the system past ``pool_size``); lock held."""
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
            self._drain()
            self._trim(self._cached)

    def statistics(self) -> PoolStatistics:
        with self._lock:
            self._drain()
            return PoolStatistics(
                reserved_bytes=self._reserved,
                in_use_bytes=self._in_use,
                requested_in_use_bytes=self._requested,
                peak_in_use_bytes=self._peak_in_use,
                peak_reserved_bytes=self._peak_reserved,
                cached_bytes=self._cached,
                allocations=self._allocations + self._recycled,
                hits=self._hits + self._recycled,
                misses=self._misses,
                releases=self._releases + self._recycled,
                budget_bytes=self.max_memory_usage,
            )
