"""MemoryPool: aligned size classes, reuse, views that keep their block, the budget, statistics."""

from __future__ import annotations

import gc
import os
import threading

import numpy as np
import pytest

from edgecore import Engine, EngineConfig, MemoryBudgetExceeded
from edgecore.memory import HostAllocator, MemoryPool, size_class


@pytest.mark.parametrize("alignment", [16, 64, 4096])
def test_buffers_are_aligned(alignment):
    pool = MemoryPool(alignment=alignment)
    arrays = [pool.acquire_with_address((n, 3), np.float32) for n in (1, 7, 100, 1000)]
    for array, address in arrays:
        assert address % alignment == 0 and array.ctypes.data == address
        assert array.flags.c_contiguous and array.flags.writeable


def test_alignment_must_be_a_power_of_two():
    with pytest.raises(ValueError, match="power of two"):
        MemoryPool(alignment=48)


def test_size_classes_waste_at_most_a_quarter():
    previous = 0
    for nbytes in list(range(1, 5000, 7)) + [2**20 + 1, 3 * 2**20, 10**8]:
        block = size_class(nbytes)
        assert nbytes <= block and (block <= 256 or block <= nbytes * 1.25)
        assert block >= previous or nbytes < previous
        previous = block


def test_a_released_buffer_is_reused():
    pool = MemoryPool()
    first = pool.acquire((10, 10), np.float32)
    address = first.ctypes.data
    del first
    again = pool.acquire((10, 10), np.float32)
    stats = pool.statistics()
    assert again.ctypes.data == address
    assert (stats.allocations, stats.hits, stats.misses) == (2, 1, 1)
    assert stats.in_use_bytes == size_class(400) and stats.requested_in_use_bytes == 400


def test_a_view_keeps_its_block_out_of_the_pool():
    """numpy collapses view bases to the memory's owner: a view must still pin the pooled array."""
    pool = MemoryPool()
    batch = pool.acquire((4, 8), np.float32)
    batch[:] = np.arange(4, dtype=np.float32)[:, None]
    kept = [batch[i : i + 1] for i in range(4)]
    row = batch[2]
    del batch
    gc.collect()
    assert pool.statistics().in_use_bytes > 0
    other = pool.acquire((4, 8), np.float32)  # must not get the block the views still read
    other[:] = -1
    assert [float(v[0, 0]) for v in kept] == [0, 1, 2, 3] and float(row[0]) == 2
    del kept, row, other
    gc.collect()
    assert pool.statistics().in_use_bytes == 0


def test_the_budget_frees_cached_blocks_then_refuses():
    pool = MemoryPool(max_memory_usage=4096)
    a = pool.acquire((512,), np.float32)  # 2048 bytes
    b = pool.acquire((256,), np.float32)  # 1024 bytes
    del b  # cached
    c = pool.acquire((448,), np.float32)  # 1792: fits only once the cached 1024 are freed
    assert pool.statistics().reserved_bytes <= 4096
    with pytest.raises(MemoryBudgetExceeded, match="max_memory_usage=4096"):
        pool.acquire((1024,), np.float32)
    del a, c
    assert pool.acquire((1024,), np.float32).shape == (1024,)  # the pool still serves


def test_pool_size_bounds_the_cached_bytes():
    pool = MemoryPool(pool_size=1024)
    arrays = [pool.acquire((256,), np.float32) for _ in range(4)]  # 4 x 1024 bytes
    del arrays
    stats = pool.statistics()
    assert stats.cached_bytes == 1024 and stats.reserved_bytes == 1024 and stats.in_use_bytes == 0


def test_statistics_are_a_frozen_snapshot():
    pool = MemoryPool()
    kept = pool.acquire((300,), np.uint8)
    stats = pool.statistics()
    with pytest.raises(AttributeError):
        stats.hits = 3
    assert stats.peak_in_use_bytes == stats.in_use_bytes == size_class(300)
    assert 0 < stats.fragmentation < 0.25 and stats.hit_rate == 0.0
    data = stats.to_json()
    assert data["misses"] == 1 and "fragmentation" in data and "hit_rate" in data
    del kept


def test_many_threads_acquire_and_release_consistently():
    pool = MemoryPool()

    def churn(seed: int) -> None:
        rng = np.random.default_rng(seed)
        for _ in range(500):
            arrays = [pool.acquire((int(rng.integers(1, 2000)),), np.float32) for _ in range(3)]
            for array in arrays:
                array[:] = seed
            assert all((array == seed).all() for array in arrays)

    threads = [threading.Thread(target=churn, args=(s,)) for s in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    stats = pool.statistics()
    assert stats.in_use_bytes == 0 and stats.releases == stats.allocations == 8 * 500 * 3
    assert stats.hits + stats.misses == stats.allocations and stats.hits > stats.misses


def test_a_device_arena_plugs_in_through_an_allocator():
    """A plugin's arena reuses the pool's size classes, budget, reclamation and statistics."""

    class CountingAllocator(HostAllocator):
        def __init__(self):
            self.allocated, self.freed = [], []

        def allocate(self, nbytes, alignment):
            block, address = super().allocate(nbytes, alignment)
            self.allocated.append(nbytes)
            return block, address

        def free(self, block):
            self.freed.append(block)

    allocator = CountingAllocator()
    pool = MemoryPool(allocator=allocator, name="fake-device", max_memory_usage=1 << 20)
    first = pool.acquire((100,), np.float32)
    del first
    second = pool.acquire((100,), np.float32)
    assert allocator.allocated == [size_class(400)]
    del second
    pool.clear()
    assert len(allocator.freed) == 1 and pool.statistics().reserved_bytes == 0


def test_engine_over_budget_fails_the_request_and_keeps_serving(conv_case, conv_model):
    config = EngineConfig(num_threads=1, max_memory_usage=64 * 1024)
    with Engine(config).load(conv_model) as engine:
        small = conv_case.feeds(batch=1, seed=0)
        expected = engine.run(small)["y"].copy()
        big = conv_case.feeds(batch=64, seed=0)  # its output: 64 x 8 x 10 x 10 floats = 200 KiB
        with pytest.raises(MemoryBudgetExceeded, match="max_memory_usage=65536"):
            engine.run(big)  # refused on the first run of the shape, before a buffer is handed out
        np.testing.assert_array_equal(engine.run(small)["y"], expected)


# -- releases from the garbage collector ---------------------------------------------------------


class _Cycle:
    """An object that only the cyclic garbage collector frees (it refers to itself)."""

    def __init__(self, payload):
        self.payload = payload
        self.me = self


def _finishes(target, *args, limit_s=60.0) -> bool:
    """Run ``target`` in a daemon thread; False if it is still running after ``limit_s`` (a hang,
    not a speed check: the work takes a small fraction of that)."""
    thread = threading.Thread(target=target, args=args, daemon=True)
    thread.start()
    thread.join(limit_s)
    return not thread.is_alive()


def test_a_release_during_a_collection_under_the_pool_lock_does_not_deadlock():
    """The collector may free a pooled array while its thread holds the pool's lock (here: the
    allocator collects, as a real allocation can trigger a collection); the release must not
    wait for that lock."""

    class CollectingAllocator(HostAllocator):
        def allocate(self, nbytes, alignment):
            gc.collect()
            return super().allocate(nbytes, alignment)

    pool = MemoryPool(allocator=CollectingAllocator())
    done = []

    def scenario():
        _Cycle(pool.acquire((10,), np.float32))  # garbage only a collection frees
        done.append(pool.acquire((1000,), np.float32))  # a miss: allocate() collects with the lock held

    enabled = gc.isenabled()
    gc.disable()  # the collection must come from allocate(), not at a random allocation
    try:
        assert _finishes(scenario), "MemoryPool deadlocked: a weakref callback waited for the pool's lock"
    finally:
        if enabled:
            gc.enable()
    stats = pool.statistics()
    assert done and stats.releases == 1 and stats.in_use_bytes == size_class(4000)


def test_engine_loop_with_outputs_in_reference_cycles_does_not_hang():
    """One thread, random batch sizes, the last outputs kept inside self-referencing objects: the
    collector frees outputs at arbitrary allocations, also inside the pool (a program like this
    once hung after ~3,700 calls)."""
    pytest.importorskip("edgecore_cpu_simd")
    from collections import deque

    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["y"])],
        "relu",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 8])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    engine = Engine(EngineConfig(backend="cpu_simd", num_threads=1)).load(model)
    rng = np.random.default_rng(0)
    inputs = [rng.standard_normal((n, 8)).astype(np.float32) for n in range(1, 61)]
    calls = int(os.environ.get("EDGECORE_CYCLE_CALLS", "20000"))  # the full run: 100000

    def loop():
        kept = deque(maxlen=6)
        for i in range(calls):
            x = inputs[int(rng.integers(0, 60))]
            y = engine.run({"x": x})["y"]
            if i % 997 == 0:
                np.testing.assert_array_equal(y, np.maximum(x, 0))
            kept.append(_Cycle(y))

    try:
        assert _finishes(loop, limit_s=600), "Engine.run hung while the collector released pooled outputs"
        gc.collect()
        stats = engine.pool.statistics()
        assert stats.in_use_bytes == 0 and stats.releases == stats.allocations >= calls
        assert stats.hits > stats.misses
    finally:
        engine.close()


def test_check_budget_counts_memory_held_outside_the_pool():
    pool = MemoryPool(max_memory_usage=4096)
    kept = pool.acquire((512,), np.float32)  # 2048 bytes reserved
    cached = pool.acquire((256,), np.float32)
    del cached  # 1024 cached: freed to make room
    pool.check_budget(2048)
    assert pool.statistics().cached_bytes == 0
    with pytest.raises(MemoryBudgetExceeded, match="max_memory_usage=4096"):
        pool.check_budget(2049, "outputs the runtime allocated")
    MemoryPool().check_budget(10**12)  # no budget: nothing to check
    del kept


def test_a_run_loop_gets_its_block_back_and_counts_stay_exact():
    """The steady state of a loop (one array dies, the same size is asked for) reuses the block
    directly; the statistics still count each allocation, hit and release."""
    pool = MemoryPool()
    held = None
    for _ in range(100):
        held = pool.acquire((64,), np.float32)  # the previous one dies on assignment
    del held
    stats = pool.statistics()
    assert (stats.allocations, stats.misses, stats.hits, stats.releases) == (100, 2, 98, 100)
    assert stats.in_use_bytes == stats.requested_in_use_bytes == 0 and stats.reserved_bytes == 2 * 256
