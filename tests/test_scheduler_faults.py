"""The scheduler under injected faults: no request is lost, hangs or gets another's answer.

The model is a real onnxruntime-backed one (``cpu_simd``), wrapped by :class:`FaultyModel`, a
``CompiledModel`` that fails, hangs (on an Event, bounded, stopping at the run's deadline as a
backend that can stop its runtime does) or returns wrongly sized outputs on chosen calls. Every
answer is compared with raw ``onnxruntime.InferenceSession`` on the same bytes; every test checks
that every future resolved, that the statistics account for every request, and that no worker
thread is left running. Each test takes well under a second, so that the file can be looped
(``tools/loop_tests.sh tests/test_scheduler_faults.py 200``).
"""

from __future__ import annotations

import collections
import gc
import random
import threading
import time
import weakref
from concurrent.futures import CancelledError, wait

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

import edgecore.scheduler
from edgecore import Engine, EngineConfig
from edgecore._policy import BatchPolicy
from edgecore.backend import CompiledModel
from edgecore.errors import BackendExecutionError, EdgecoreError, EngineClosedError, RequestTimeoutError
from edgecore.memory import MemoryPool
from edgecore.scheduler import Scheduler
from edgecore.stats import StatsRecorder
from edgecore.testing.graphs import make_model

ort = pytest.importorskip("onnxruntime")
pytest.importorskip("edgecore_cpu_simd")

HANG_S = 2.0  # the longest an injected hang or a held gate may last
WIDTH = 4
POISON = -7.0


def _model():
    scale = numpy_helper.from_array(np.array([2.0, -1.0, 0.5, 3.0], np.float32), "scale")
    nodes = [helper.make_node("Mul", ["x", "scale"], ["m"]), helper.make_node("Tanh", ["m"], ["y"])]
    return make_model(
        nodes,
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", WIDTH])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", WIDTH])],
        [scale],
    )


MODEL = _model()


@pytest.fixture(scope="module")
def inner():
    """A real onnxruntime-backed compiled model."""
    engine = Engine(EngineConfig(backend="cpu_simd", num_threads=1)).load(MODEL)
    yield engine.compiled
    engine.close()


@pytest.fixture(scope="module")
def raw():
    session = ort.InferenceSession(MODEL.SerializeToString(), providers=["CPUExecutionProvider"])
    return lambda x: session.run(None, {"x": x})[0]


@pytest.fixture(autouse=True)
def no_worker_left_behind():
    before = {t for t in threading.enumerate() if t.name.startswith("edgecore-worker")}
    gc_was_enabled = gc.isenabled()
    yield
    assert gc.isenabled() == gc_was_enabled
    left = [t.name for t in threading.enumerate() if t.name.startswith("edgecore-worker") and t not in before]
    assert not left, f"worker threads still running after the test: {left}"


class FaultyModel(CompiledModel):
    """``inner`` with faults on chosen calls (numbered from 1): ``"raise"``, ``"hang"`` (until
    ``release`` is set, at most ``hang_s``, and RequestTimeoutError at the run's deadline) or
    ``"short"`` (a run of several rows returns twice the rows: wrong for a batch; a lone request's
    outputs are the model's to shape, as on the direct path). A run holding a ``POISON`` row always
    fails. While ``gate`` is cleared every call waits on it. Records each call: first column of its
    rows, deadline, and the bytes the scheduler's pool had in use."""

    backend = "faulty"

    def __init__(self, inner: CompiledModel, faults: dict[int, str] | None = None, pool: MemoryPool | None = None):
        self.inner = inner
        self.inputs, self.outputs = inner.inputs, inner.outputs
        self.faults = dict(faults or {})
        self.pool = pool
        self.calls: list[tuple[list[float], int, int]] = []
        self.lock = threading.Lock()
        self.gate, self.release, self.entered = threading.Event(), threading.Event(), threading.Event()
        self.gate.set()
        self.hang_s = HANG_S

    def _run(self, feeds, out, deadline_ns):
        in_use = self.pool.statistics().in_use_bytes if self.pool is not None else 0
        with self.lock:
            self.calls.append((feeds["x"][:, 0].tolist(), deadline_ns, in_use))
            fault = self.faults.get(len(self.calls))
        self.entered.set()
        assert self.gate.wait(HANG_S), "the test never opened the gate"
        if fault == "raise" or (feeds["x"][:, 0] == POISON).any():
            raise ValueError("injected failure")
        if fault == "hang":
            left = (deadline_ns - time.perf_counter_ns()) / 1e9 if deadline_ns else self.hang_s
            if not self.release.wait(max(min(left, self.hang_s), 0)) and deadline_ns:
                raise RequestTimeoutError("injected hang stopped at its deadline")
        outputs = self.inner.execute(feeds, out, deadline_ns)
        if fault == "short" and len(feeds["x"]) > 1:
            return {name: np.concatenate([array, array]) for name, array in outputs.items()}
        return outputs

    def seen(self) -> list[float]:
        return [value for rows, _, _ in self.calls for value in rows]


def make(inner, faults=None, *, policy=None, **config) -> tuple[Scheduler, FaultyModel]:
    pool = MemoryPool()
    model = FaultyModel(inner, faults, pool)
    config.setdefault("adaptive_batching", False)
    return Scheduler([model], EngineConfig(**config), stats=StatsRecorder(), pool=pool, policy=policy), model


def x(value: float, items: int = 1) -> np.ndarray:
    return (np.full((items, WIDTH), value, np.float32) + np.arange(WIDTH, dtype=np.float32) / 8)


def hold(sched: Scheduler, model: FaultyModel):
    """Occupy the single worker with a run that waits until ``model.gate`` is set."""
    model.gate.clear()
    model.entered.clear()
    blocker = sched.submit({"x": x(100.0, sched.max_batch_size if sched.batching else 1)})
    assert model.entered.wait(HANG_S)
    return blocker


class Tally:
    """Outcomes of futures, checked against the inputs they carried."""

    def __init__(self, raw):
        self.raw = raw
        self.counts = collections.Counter()
        self.wrong: list[str] = []

    def add(self, future, feed_x: np.ndarray, timeout: float = HANG_S) -> str:
        try:
            y = future.result(timeout)["y"]
        except CancelledError:
            kind = "cancelled"
        except RequestTimeoutError:
            kind = "timed_out"
        except EngineClosedError:
            kind = "closed"
        except EdgecoreError:
            kind = "failed"
        else:
            kind = "ok"
            if not np.allclose(y, self.raw(feed_x), rtol=1e-6, atol=1e-6):
                self.wrong.append(f"{feed_x[0, 0]}: got {y[0, 0]}")
        self.counts[kind] += 1
        return kind

    def check(self, sched: Scheduler) -> None:
        """Every outcome is counted once, where the statistics say it is."""
        assert not self.wrong, self.wrong[:5]
        stats = sched._stats.snapshot()
        c = self.counts
        assert stats.total_inferences == c["ok"], (stats, c)
        assert stats.failed_inferences == c["failed"] + c["closed"], (stats, c)
        assert stats.timed_out_requests == c["timed_out"], (stats, c)
        assert sched.cancelled == c["cancelled"], (sched.cancelled, c)


# -- failures of a batch ------------------------------------------------------------------------------


def test_a_failed_batch_is_retried_one_by_one_after_its_buffers_are_released(inner, raw):
    sched, model = make(inner, {2: "raise"}, max_batch_size=8)
    blocker = hold(sched, model)
    feeds = [x(v) for v in range(4)]
    futures = [sched.submit({"x": f}) for f in feeds]
    model.gate.set()
    tally = Tally(raw)
    for future, f in zip(futures, feeds):
        assert tally.add(future, f) == "ok"
    tally.add(blocker, x(100.0, 8))
    sched.close()
    tally.check(sched)
    sizes = [len(rows) for rows, _, _ in model.calls]
    assert sizes == [8, 4, 1, 1, 1, 1]
    in_use = [used for _, _, used in model.calls]
    assert in_use[1] > 0 and in_use[2:] == [0, 0, 0, 0]  # the batch's pooled inputs were gone


def test_only_the_request_that_fails_alone_fails(inner, raw):
    sched, model = make(inner, max_batch_size=8)
    hold(sched, model)
    feeds = [x(1), x(2), x(POISON), x(4)]
    futures = [sched.submit({"x": f}) for f in feeds]
    model.gate.set()
    tally = Tally(raw)
    kinds = [tally.add(future, f) for future, f in zip(futures, feeds)]
    assert kinds == ["ok", "ok", "failed", "ok"]
    error = futures[2].exception()
    assert isinstance(error, BackendExecutionError) and isinstance(error.__cause__, ValueError)
    sched.close()
    tally.counts["ok"] += 1  # the blocker
    tally.check(sched)


def test_outputs_of_the_wrong_size_turn_batching_off_and_rerun_the_batch_alone(inner, raw):
    sched, model = make(inner, {2: "short"}, max_batch_size=8)
    hold(sched, model)
    feeds = [x(v) for v in range(3)]
    futures = [sched.submit({"x": f}) for f in feeds]
    model.gate.set()
    tally = Tally(raw)
    assert [tally.add(future, f) for future, f in zip(futures, feeds)] == ["ok"] * 3
    assert not sched.batching
    later = [x(v) for v in range(5, 9)]
    for future, f in zip([sched.submit({"x": f}) for f in later], later):
        assert tally.add(future, f) == "ok"
    sched.close()
    assert [len(rows) for rows, _, _ in model.calls] == [8, 3] + [1] * 7
    tally.counts["ok"] += 1
    tally.check(sched)


# -- deadlines ----------------------------------------------------------------------------------------


def test_a_hung_run_stops_at_its_deadline_and_the_queue_keeps_moving(inner, raw):
    sched, model = make(inner, {1: "hang"}, max_batch_size=1)
    model.entered.clear()
    hung = sched.submit({"x": x(1)}, timeout_ms=80)
    assert model.entered.wait(HANG_S)
    late, patient = x(2), x(3)
    expiring = sched.submit({"x": late}, timeout_ms=10)
    waiting = sched.submit({"x": patient})
    tally = Tally(raw)
    assert tally.add(hung, x(1)) == "timed_out"
    assert "did not run" in str(expiring.exception(HANG_S))
    assert tally.add(expiring, late) == "timed_out"
    assert tally.add(waiting, patient) == "ok"
    sched.close()
    assert late[0, 0] not in model.seen()
    tally.check(sched)


def test_a_waiting_caller_times_out_on_time_while_the_worker_is_busy(inner, raw):
    sched, model = make(inner, max_batch_size=1)
    hold(sched, model)
    future = sched.submit({"x": x(5)}, timeout_ms=30, wake=False)
    with pytest.raises(RequestTimeoutError, match="did not run"):
        future.result()  # answered by this caller's own check: the worker is still held
    assert not model.gate.is_set()
    model.gate.set()
    sched.close()
    assert 5.0 not in model.seen()


def test_the_deadline_reaches_execute(inner, raw):
    sched, model = make(inner, max_batch_size=8)
    hold(sched, model)
    timed = [sched.submit({"x": x(v)}, timeout_ms=ms) for v, ms in ((1, 3000), (2, 9000), (3, 6000))]
    model.gate.set()
    wait(timed, HANG_S)
    hold(sched, model)
    mixed = [sched.submit({"x": x(4)}, timeout_ms=9000), sched.submit({"x": x(5)})]
    model.gate.set()
    wait(mixed, HANG_S)
    alone = sched.submit({"x": x(6)}, timeout_ms=7000)
    alone.result(HANG_S)
    sched.close()
    deadlines = {tuple(rows): deadline for rows, deadline, _ in model.calls}
    assert deadlines[(1.0, 2.0, 3.0)] == max(f._deadline for f in timed) == timed[1]._deadline > 0
    assert deadlines[(4.0, 5.0)] == 0  # a request without timeout: the batch has no deadline
    assert deadlines[(6.0,)] == alone._deadline > 0


# -- shutdown and cancellation -----------------------------------------------------------------------


def test_close_without_drain_racing_submits_answers_every_future(inner, raw):
    sched, model = make(inner, max_batch_size=4, max_queue_delay_us=200)
    accepted: list[tuple] = []
    lock = threading.Lock()
    enough = threading.Event()
    refused = collections.Counter()

    def client(seed: int) -> None:
        for i in range(300):
            feed = x(seed * 1000 + i)
            try:  # even clients submit; odd ones call like Engine.run (no wake, then result())
                future = sched.submit({"x": feed}, wake=seed % 2 == 0)
            except EngineClosedError:
                with lock:
                    refused[seed] += 1
                return
            with lock:
                accepted.append((future, feed))
                if len(accepted) >= 150:
                    enough.set()
            if seed % 2:
                try:
                    future.result()  # helps: runs its batch in this thread when it can
                except EngineClosedError:
                    pass

    threads = [threading.Thread(target=client, args=(seed,)) for seed in range(4)]
    for t in threads:
        t.start()
    assert enough.wait(HANG_S)
    sched.close(drain=False)
    for t in threads:
        t.join(HANG_S)
        assert not t.is_alive()
    assert all(future.done() for future, _ in accepted)  # answered by the time close returned
    tally = Tally(raw)
    for future, feed in accepted:
        tally.add(future, feed, timeout=0)
    assert tally.counts["ok"] + tally.counts["closed"] == len(accepted)
    tally.check(sched)
    with pytest.raises(EngineClosedError):
        sched.submit({"x": x(0)})


def test_cancelled_requests_never_run_and_are_counted(inner, raw):
    sched, model = make(inner, max_batch_size=8)
    blocker = hold(sched, model)
    feeds = [x(v) for v in range(1, 7)]
    futures = [sched.submit({"x": f}) for f in feeds]
    assert all(futures[i].cancel() for i in (1, 3, 5))
    model.gate.set()
    tally = Tally(raw)
    kinds = [tally.add(future, f) for future, f in zip(futures, feeds)]
    assert kinds == ["ok", "cancelled"] * 3
    # cancelled requests still queued at close(drain=False) are counted as cancelled, not failed
    blocker2 = hold(sched, model)
    dropped = [sched.submit({"x": x(v)}) for v in (7, 8, 9, 10)]
    assert dropped[0].cancel() and dropped[2].cancel()
    threading.Timer(0.02, model.gate.set).start()
    sched.close(drain=False)
    for future, v in zip(dropped, (7, 8, 9, 10)):
        tally.add(future, x(v), timeout=0)
    for future in (blocker, blocker2):
        tally.add(future, x(100.0, 8), timeout=0)
    assert not {2.0, 4.0, 6.0, 7.0, 9.0} & set(model.seen())
    assert tally.counts == {"ok": 5, "cancelled": 5, "closed": 2}
    tally.check(sched)


# -- callbacks and the garbage collector ------------------------------------------------------------


class CollectingPolicy(BatchPolicy):
    """Runs the garbage collector in every decision, i.e. inside the scheduler's lock."""

    def size(self, *args, **kwargs):
        gc.collect(0)
        return super().size(*args, **kwargs)


def test_a_garbage_collection_inside_the_scheduler_lock_blocks_nothing(inner, raw):
    policy = CollectingPolicy(max_batch_size=4, max_queue_delay_ns=100_000, adaptive=True)
    sched, model = make(inner, policy=policy, max_batch_size=4)
    pool = model.pool
    victims: list = []  # queued futures that a finalizer cancels
    under_lock = []

    def finalizer() -> None:  # run by the collector, wherever it runs: takes no scheduler lock
        under_lock.append(sched._lock.locked())
        _ = sched.queued
        if victims:
            victims.pop().cancel()

    class Node:
        pass

    def garbage() -> None:  # a cycle holding a pooled array, with a finalizer
        node = Node()
        node.self, node.buffer = node, pool.acquire((16,), np.float32)
        weakref.finalize(node, finalizer)

    tally = Tally(raw)
    lock = threading.Lock()

    def client(seed: int) -> None:
        for i in range(60):
            garbage()
            feed = x(seed * 100 + i)
            future = sched.submit({"x": feed}, wake=bool(i % 3))
            if i % 7 == 3:
                victims.append(sched.submit({"x": x(-1)}, wake=False))  # may be cancelled by the collector
            with lock:
                kind = tally.add(future, feed)  # result() without a timeout: helps, deciding under the lock
            assert kind == "ok"

    gc.disable()  # collections happen where the policy forces them: inside the scheduler's lock
    try:
        threads = [threading.Thread(target=client, args=(seed,)) for seed in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(5 * HANG_S)
            assert not t.is_alive(), "a client is stuck"
    finally:
        gc.enable()
    sched.close()
    leftovers = list(victims)
    assert any(under_lock), "no finalizer ran inside the scheduler's lock"
    stats = sched._stats.snapshot()
    cancelled = sched.cancelled
    assert stats.total_inferences + cancelled == 120 + sum(1 for s in range(2) for i in range(60) if i % 7 == 3)
    assert all(f.done() for f in leftovers)
    assert not tally.wrong


def test_done_callbacks_may_call_back_into_the_scheduler(inner, raw):
    sched, model = make(inner, max_batch_size=4, max_queue_delay_us=100)
    done = threading.Event()
    chain: list = []

    def next_link(future) -> None:  # runs in whichever thread resolved ``future``
        gc.collect(0)
        if len(chain) < 40:
            link = sched.submit({"x": x(len(chain))})
            chain.append(link)
            link.add_done_callback(next_link)
        else:
            done.set()

    first = sched.submit({"x": x(0)})
    chain.append(first)
    first.add_done_callback(next_link)
    assert done.wait(5 * HANG_S)
    sched.close()
    tally = Tally(raw)
    for i, future in enumerate(chain):
        assert tally.add(future, x(i), timeout=0) == "ok"
    tally.check(sched)


def test_waiting_inside_a_callback_on_the_only_instance_fails_instead_of_hanging(inner, raw, monkeypatch):
    sched, model = make(inner, max_batch_size=1)
    monkeypatch.setattr(edgecore.scheduler, "CHECK_INTERVAL_S", 0.02)
    seen: list = []
    done = threading.Event()

    def blocking(future) -> None:  # runs on the thread that holds the only model instance
        try:
            seen.append(sched.submit({"x": x(2)}, wake=False).result())
        except EdgecoreError as exc:
            seen.append(exc)
        done.set()

    model.gate.clear()  # so that the callback is added before the run ends: the worker runs it
    first = sched.submit({"x": x(1)})
    first.add_done_callback(blocking)
    model.gate.set()
    assert done.wait(HANG_S)
    assert isinstance(seen[0], EdgecoreError) and "inside a future's callback" in str(seen[0])
    sched.close()
    tally = Tally(raw)
    tally.add(first, x(1), timeout=0)
    tally.counts["failed"] += 1
    tally.check(sched)
    assert 2.0 not in model.seen()


# -- a scheduler bug is not a hang ------------------------------------------------------------------


def test_a_request_left_unanswered_fails_its_waiting_caller(inner, raw, monkeypatch):
    sched, model = make(inner, max_batch_size=4, max_queue_delay_us=0)
    monkeypatch.setattr(edgecore.scheduler, "CHECK_INTERVAL_S", 0.02)
    real_settle = sched._settle
    monkeypatch.setattr(sched._runner, "run", lambda model, batch: None)  # a bug: runs nothing
    monkeypatch.setattr(sched, "_settle", lambda requests, error, token=0: sched._live.discard(token))
    with pytest.raises(EdgecoreError, match="left unanswered"):
        sched.submit({"x": x(1)}, wake=False).result()  # this caller takes and loses the batch
    with pytest.raises(EdgecoreError, match="left unanswered"):
        sched.submit({"x": x(2)}).result()  # a worker takes and loses it
    monkeypatch.undo()
    assert sched._settle == real_settle
    tally = Tally(raw)
    assert tally.add(sched.submit({"x": x(3)}), x(3)) == "ok"  # and it keeps serving
    sched.close()
    tally.counts["failed"] += 2
    tally.check(sched)


# -- everything at once ---------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(3))
def test_random_faults_cancellations_and_close_lose_nothing(inner, raw, seed):
    rng = random.Random(seed)
    faults = {call: rng.choice(["raise", "raise", "short", "hang"]) for call in rng.sample(range(1, 120), 12)}
    # adaptive on: batching may turn off (a "short" batch) while other threads decide under the lock
    sched, model = make(inner, faults, max_batch_size=4, max_queue_delay_us=300, adaptive_batching=seed != 1)
    model.hang_s = 0.02  # a hang ends after 20 ms, or at its run's deadline (RequestTimeoutError)
    sent: list[tuple] = []
    lock = threading.Lock()

    def client(k: int) -> None:
        local = random.Random(seed * 10 + k)
        for i in range(40):
            feed = x(POISON if local.random() < 0.03 else k * 1000 + i)
            timeout = local.choice([None, None, None, 5, 50])
            try:
                future = sched.submit({"x": feed}, timeout_ms=timeout, wake=k % 2 == 0)
            except EngineClosedError:
                return
            with lock:
                sent.append((future, feed))
            if local.random() < 0.1:
                future.cancel()
            elif k % 2:
                try:
                    future.result()
                except (EdgecoreError, CancelledError):
                    pass

    threads = [threading.Thread(target=client, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(5 * HANG_S)
        assert not t.is_alive(), "a client is stuck"
    sched.close(drain=rng.random() < 0.5)
    assert all(future.done() for future, _ in sent)
    tally = Tally(raw)
    for future, feed in sent:
        kind = tally.add(future, feed, timeout=0)
        if feed[0, 0] == POISON:
            assert kind != "ok"
    assert sum(tally.counts.values()) == len(sent)
    tally.check(sched)
