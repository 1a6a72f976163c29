"""Timing loops: blocks of queries on one side, and the driver that interleaves sides.

A *side* is what is measured: edgecore's engine, or the raw runtime it wraps (``--baseline``). A
*block* runs ``n`` queries on one side and returns when each was issued (or due) and when it was
answered. The driver (:func:`measure`) runs blocks until every side has enough:

* alone, blocks follow each other on the one side and every query is kept;
* with a baseline, the sides alternate block by block, and the first ``block_drop`` queries of every
  block are run but not kept. On a small machine a runtime's worker threads keep spinning after a
  call and slow whatever runs next; switching sides in blocks and dropping the first calls after a
  switch keeps that out of both sides' figures (docs/benchmarks.md, "Method").

Concurrency: the driver and the sequential block run in the caller's thread. Concurrent blocks
(multi-stream, server) issue from the caller's thread and record completions from whichever thread
finishes a request (the engine's scheduler, or the side's worker pool): each completion writes its
own slot of a preallocated array, and the issuing thread waits on an event before reading them.
"""

from __future__ import annotations

import math
import threading
import time
from concurrent.futures import Future
from typing import Any, Callable, Mapping

import attrs
import numpy as np

from edgecore.bench.results import Measured
from edgecore.bench.settings import BenchSettings

__all__ = ["Side", "Block", "BlockFn", "measure", "sequential", "concurrent", "poisson", "warm_up"]

Feeds = Mapping[str, np.ndarray]
_clock = time.perf_counter_ns


@attrs.frozen(kw_only=True)
class Side:
    """One thing to measure. ``run`` answers in the caller's thread; ``submit`` returns a Future."""

    name: str
    run: Callable[[Feeds], Any]
    submit: Callable[[Feeds], Future]
    runtime: str = "edgecore"
    version: str = ""


@attrs.frozen(kw_only=True)
class Block:
    """Issue (or due) and answer times of ``n`` queries, in ``perf_counter_ns``; failed queries have
    ``ends == -1``."""

    starts: np.ndarray
    ends: np.ndarray

    def keep(self, drop: int) -> Block:
        return Block(starts=self.starts[drop:], ends=self.ends[drop:])

    @property
    def ok(self) -> np.ndarray:
        return self.ends >= 0


BlockFn = Callable[[Side, int], Block]


class _Tally:
    def __init__(self) -> None:
        self.latencies: list[np.ndarray] = []
        self.queries = 0
        self.failures = 0
        self.elapsed_ns = 0

    def add(self, block: Block) -> None:
        ok = block.ok
        self.failures += int((~ok).sum())
        if not ok.any():
            return
        starts, ends = block.starts[ok], block.ends[ok]
        self.latencies.append((ends - starts) / 1e6)
        self.queries += int(ok.sum())
        self.elapsed_ns += int(ends.max() - block.starts.min())

    def measured(self, samples_per_query: int) -> Measured:
        latencies = np.concatenate(self.latencies) if self.latencies else np.empty(0)
        return Measured(
            queries=self.queries,
            samples=self.queries * samples_per_query,
            elapsed_s=self.elapsed_ns / 1e9,
            latencies_ms=latencies,
            failures=self.failures,
        )


def measure(
    sides: list[Side],
    block: BlockFn,
    settings: BenchSettings,
    *,
    samples_per_query: int = 1,
    chunk: int | None = None,
    progress: Callable[[float], None] | None = None,
) -> dict[str, Measured]:
    """Run blocks on ``sides`` until each has ``settings.duration_s`` of measured time and
    ``settings.min_queries`` kept queries; return each side's figures by name.

    ``chunk`` is the block length when one side runs alone (default: ``block_size``); queries per
    block with several sides are ``block_size`` kept plus ``block_drop`` dropped.
    """
    interleaved = len(sides) > 1
    drop = settings.block_drop if interleaved else 0
    size = settings.block_size if interleaved or chunk is None else max(1, chunk)
    tallies = {side.name: _Tally() for side in sides}
    duration_ns, wanted = settings.duration_s * 1e9, settings.min_queries
    while True:
        for side in sides:
            tallies[side.name].add(block(side, size + drop).keep(drop))
        done_time = min(t.elapsed_ns for t in tallies.values()) / duration_ns
        done_queries = min(t.queries for t in tallies.values()) / wanted if wanted else 1.0
        if progress is not None:
            progress(min(1.0, done_time, done_queries))
        if done_time >= 1.0 and done_queries >= 1.0:
            break
        if not interleaved and chunk is not None:
            # one side, a chunk sized for the whole duration: the next block covers what is missing
            tally = tallies[sides[0].name]
            missing_time = max(0.0, duration_ns - tally.elapsed_ns) / duration_ns
            size = max(1, math.ceil(chunk * missing_time), wanted - tally.queries)
    return {name: tally.measured(samples_per_query) for name, tally in tallies.items()}


def warm_up(sides: list[Side], feeds: Feeds, count: int, *, concurrent: int = 0) -> list[float]:
    """Run ``count`` queries on each side, unmeasured; return side 0's latencies (ms).

    With ``concurrent`` > 0, then also ``count`` queries through ``submit`` in bursts of
    ``concurrent``, so that every worker thread has started and run the model (a thread's first
    request pays for its per-thread runtime state).
    """
    seen: list[float] = []
    for index, side in enumerate(sides):
        for _ in range(count):
            started = _clock()
            side.run(feeds)
            if index == 0:
                seen.append((_clock() - started) / 1e6)
        if concurrent > 0:
            for _ in range(max(1, math.ceil(count / concurrent))):
                futures = [side.submit(feeds) for _ in range(concurrent)]
                for future in futures:
                    future.result()
    return seen


# -- blocks ---------------------------------------------------------------------------------------


def sequential(feeds: Feeds) -> BlockFn:
    """One query at a time, each issued when the previous was answered (single-stream, offline)."""

    def block(side: Side, n: int) -> Block:
        run = side.run
        starts = np.empty(n, dtype=np.int64)
        ends = np.empty(n, dtype=np.int64)
        for i in range(n):
            starts[i] = _clock()
            run(feeds)
            ends[i] = _clock()
        return Block(starts=starts, ends=ends)

    return block


class _Completions:
    """Completion times written by callbacks, one slot per query, and a count to wait on."""

    def __init__(self, n: int) -> None:
        self.ends = np.full(n, -1, dtype=np.int64)
        self._left = n
        self._lock = threading.Lock()
        self._done = threading.Event()
        if n == 0:
            self._done.set()

    def callback(self, index: int) -> Callable[[Future], None]:
        def done(future: Future) -> None:
            now = _clock()
            if not future.cancelled() and future.exception() is None:
                self.ends[index] = now
            with self._lock:
                self._left -= 1
                if self._left == 0:
                    self._done.set()

        return done

    def wait(self) -> None:
        self._done.wait()


def _submit(side: Side, feeds: Feeds, completions: _Completions, index: int) -> None:
    try:
        future = side.submit(feeds)
    except Exception:  # rejected at the door (QueueFullError...): a failed query
        failed: Future = Future()
        failed.set_exception(RuntimeError("rejected"))
        future = failed
    future.add_done_callback(completions.callback(index))


def concurrent(feeds: Feeds, streams: int) -> BlockFn:
    """Multi-stream: each query is ``streams`` samples issued at once; it ends when the last is
    answered, and the next query is issued then."""

    def block(side: Side, n: int) -> Block:
        starts = np.empty(n, dtype=np.int64)
        ends = np.empty(n, dtype=np.int64)
        for i in range(n):
            completions = _Completions(streams)
            starts[i] = _clock()
            for s in range(streams):
                _submit(side, feeds, completions, s)
            completions.wait()
            ends[i] = completions.ends.max() if (completions.ends >= 0).all() else -1
        return Block(starts=starts, ends=ends)

    return block


def poisson(feeds: Feeds, qps: float, seed: int = 0) -> BlockFn:
    """Server: queries arrive at exponential intervals of mean ``1/qps``; latency runs from the
    moment a query was *due* (so the issuer's own lag counts against the system, as in LoadGen)."""
    rng = np.random.default_rng(seed)

    def block(side: Side, n: int) -> Block:
        gaps = rng.exponential(1e9 / qps, size=n)
        completions = _Completions(n)
        begin = _clock()
        due = (begin + np.cumsum(gaps) - gaps[0]).astype(np.int64)
        for i in range(n):
            wait_ns = due[i] - _clock()
            if wait_ns > 0:
                time.sleep(wait_ns / 1e9)
            _submit(side, feeds, completions, i)
        completions.wait()
        return Block(starts=due, ends=completions.ends)

    return block
