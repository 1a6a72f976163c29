"""Scheduler: dynamic batching with Triton's rules, and no request ever lost or mixed up.

Semantics are checked on a scripted model (it records every batch it sees and can be held closed),
numerics against direct ``engine.run`` calls on ONNX Runtime: for the convolution and digits models
used here MLAS computes each batch item independently, so batched outputs are bit-exact.
"""

from __future__ import annotations

import asyncio
import random
import threading
import time
from concurrent.futures import Future, wait

import numpy as np
import pytest
from onnx import TensorProto, helper

from edgecore import Engine, EngineConfig, InvalidInputError, QueueFullError, RequestTimeoutError
from edgecore.backend import CompiledModel
from edgecore.errors import BackendExecutionError, ConfigurationError, EdgecoreError, EngineClosedError
from edgecore.memory import MemoryPool
from edgecore.scheduler import Scheduler
from edgecore.stats import StatsRecorder
from edgecore.tensor import DataType, TensorSpec
from edgecore.testing import OP_CASES
from edgecore.testing.graphs import make_model


class ScriptedModel(CompiledModel):
    """y = 2 * x along a "batch" dimension; records each batch; ``gate`` holds runs until set.

    A row containing ``poison`` makes the run raise, wherever it is in the batch.
    """

    backend = "scripted"

    def __init__(self, *, shape=("batch", 4), poison: float | None = None) -> None:
        self.inputs = (TensorSpec(name="x", dtype=DataType.FLOAT, shape=shape),)
        self.outputs = (TensorSpec(name="y", dtype=DataType.FLOAT, shape=shape),)
        self.gate = threading.Event()
        self.gate.set()
        self.poison = poison
        self.batches: list[np.ndarray] = []
        self.started = threading.Event()

    def _run(self, feeds, out=None, deadline_ns=0):
        x = feeds["x"]
        self.started.set()
        self.gate.wait()
        self.batches.append(x.copy())
        if self.poison is not None and (x == self.poison).any():
            raise ValueError("poisoned input")
        return {"y": x * 2}


def scheduler(model: CompiledModel, **config) -> Scheduler:
    return Scheduler([model], EngineConfig(**config), stats=StatsRecorder(), pool=MemoryPool())


def rows(*values: float, width: int = 4) -> list[dict[str, np.ndarray]]:
    return [{"x": np.full((1, width), v, np.float32)} for v in values]


def held(model: ScriptedModel, sched: Scheduler) -> Future:
    """Occupy the (single) worker with a full batch that blocks until ``model.gate`` is set."""
    model.gate.clear()
    model.started.clear()
    width = model.inputs[0].shape[1]
    items = sched.max_batch_size if sched.batching else 1
    blocker = sched.submit({"x": np.full((items, width if isinstance(width, int) else 4), -1, np.float32)})
    assert model.started.wait(5)
    return blocker


# -- batching rules ------------------------------------------------------------------------------


def test_batches_form_and_outputs_split_back_in_order():
    model = ScriptedModel()
    sched = scheduler(model, max_batch_size=8, adaptive_batching=False)
    blocker = held(model, sched)
    futures = [sched.submit(f) for f in rows(*range(10))]
    model.gate.set()
    results = [f.result(5)["y"] for f in futures]
    sched.close()
    assert blocker.result(5)["y"].shape == (8, 4)
    assert [len(b) for b in model.batches] == [8, 8, 2]
    for value, y in enumerate(results):
        np.testing.assert_array_equal(y, np.full((1, 4), 2 * value, np.float32))


def test_preferred_batch_sizes_are_sent_at_once():
    model = ScriptedModel()
    sched = scheduler(model, max_batch_size=8, preferred_batch_sizes=(4,), max_queue_delay_us=0, adaptive_batching=False)
    held(model, sched)
    futures = [sched.submit(f) for f in rows(*range(10))]
    model.gate.set()
    wait(futures, 5)
    sched.close()
    assert [len(b) for b in model.batches[1:]] == [4, 4, 2]


def test_the_queue_delay_waits_for_a_fuller_batch():
    model = ScriptedModel()
    sched = scheduler(model, max_batch_size=4, max_queue_delay_us=2_000_000, adaptive_batching=False)
    futures = [sched.submit(f) for f in rows(1, 2, 3, 4)]  # the first waits (2 s) for the others
    wait(futures, 5)
    sched.close()
    assert [len(b) for b in model.batches] == [4]


def test_a_lone_request_is_sent_when_the_delay_ends():
    model = ScriptedModel()
    sched = scheduler(model, max_batch_size=4, max_queue_delay_us=20_000, adaptive_batching=False)
    started = time.perf_counter()
    sched.submit(rows(1)[0]).result(5)
    assert time.perf_counter() - started >= 0.02
    sched.close()


def test_requests_of_different_shapes_never_share_a_batch():
    model = ScriptedModel(shape=("batch", "n"))
    sched = scheduler(model, max_batch_size=16, adaptive_batching=False)
    held(model, sched)
    feeds = [{"x": np.full((1, n), i, np.float32)} for i, n in enumerate([3, 5, 3, 5, 5, 3, 7])]
    futures = [sched.submit(f) for f in feeds]
    model.gate.set()
    for f, feed in zip(futures, feeds):
        np.testing.assert_array_equal(f.result(5)["y"], feed["x"] * 2)
    sched.close()
    assert sorted(b.shape for b in model.batches[1:]) == [(1, 7), (3, 3), (3, 5)]


def test_requests_carrying_several_items_are_batched_by_items():
    model = ScriptedModel()
    sched = scheduler(model, max_batch_size=4, adaptive_batching=False)
    held(model, sched)
    feeds = [{"x": np.full((n, 4), n, np.float32)} for n in (3, 1, 2, 6)]
    futures = [sched.submit(f) for f in feeds]
    model.gate.set()
    for f, feed in zip(futures, feeds):
        np.testing.assert_array_equal(f.result(5)["y"], feed["x"] * 2)
    sched.close()
    assert [len(b) for b in model.batches[1:]] == [4, 2, 6]  # 3+1, then 2, then 6 alone (over max)


def test_a_model_without_batch_dimension_runs_each_request_alone():
    model = ScriptedModel(shape=(1, 4))
    sched = scheduler(model, max_batch_size=8)
    held(model, sched)
    futures = [sched.submit(f) for f in rows(1, 2, 3)]
    model.gate.set()
    wait(futures, 5)
    sched.close()
    assert not sched.batching and [len(b) for b in model.batches] == [1, 1, 1, 1]


def test_priorities_are_served_first():
    model = ScriptedModel()
    sched = scheduler(model, max_batch_size=1, priority_levels=3)
    held(model, sched)
    futures = [sched.submit(f, priority=p) for f, p in zip(rows(10, 11, 20, 0, 21, 1), [1, 1, 2, 0, 2, 0])]
    model.gate.set()
    wait(futures, 5)
    sched.close()
    assert [float(b[0, 0]) for b in model.batches[1:]] == [0, 1, 10, 11, 20, 21]
    with pytest.raises(ConfigurationError, match="priority"):
        sched.submit(rows(1)[0], priority=3)


def test_a_batch_is_filled_from_lower_priorities():
    model = ScriptedModel()
    sched = scheduler(model, max_batch_size=4, priority_levels=2, adaptive_batching=False)
    held(model, sched)
    futures = [sched.submit(f, priority=p) for f, p in zip(rows(5, 6, 1), [1, 1, 0])]
    model.gate.set()
    wait(futures, 5)
    sched.close()
    assert model.batches[1][:, 0].tolist() == [1, 5, 6]


# -- failures --------------------------------------------------------------------------------------


def test_expired_requests_time_out_without_running():
    model = ScriptedModel()
    sched = scheduler(model, max_batch_size=1)
    held(model, sched)
    late = sched.submit(rows(7)[0], timeout_ms=5)
    patient = sched.submit(rows(8)[0], timeout_ms=10_000)
    time.sleep(0.05)
    model.gate.set()
    with pytest.raises(RequestTimeoutError, match="did not run"):
        late.result(5)
    assert patient.result(5)["y"][0, 0] == 16
    sched.close()
    assert 7 not in [float(b[0, 0]) for b in model.batches]
    assert sched._stats.snapshot().timed_out_requests == 1


def test_an_idle_worker_answers_a_timeout_on_time():
    model = ScriptedModel()
    sched = scheduler(model, max_batch_size=8, max_queue_delay_us=5_000_000, adaptive_batching=False)
    started = time.perf_counter()
    with pytest.raises(RequestTimeoutError):
        sched.submit(rows(1)[0], timeout_ms=30).result(5)
    assert time.perf_counter() - started < 2.0  # not the 5 s queue delay
    sched.close()


def test_a_full_queue_rejects_at_once():
    model = ScriptedModel()
    sched = scheduler(model, max_batch_size=1, max_queue_size=3)
    held(model, sched)
    queued = [sched.submit(f) for f in rows(1, 2, 3)]
    started = time.perf_counter()
    with pytest.raises(QueueFullError, match="max_queue_size=3"):
        sched.submit(rows(4)[0])
    assert time.perf_counter() - started < 0.5
    model.gate.set()
    assert [f.result(5)["y"][0, 0] for f in queued] == [2, 4, 6]
    sched.close()
    assert sched._stats.snapshot().rejected_requests == 1


def test_a_failing_request_fails_alone_and_its_batch_completes():
    model = ScriptedModel(poison=13.0)
    sched = scheduler(model, max_batch_size=8, adaptive_batching=False)
    held(model, sched)
    futures = [sched.submit(f) for f in rows(1, 2, 13, 4)]
    model.gate.set()
    outcomes = []
    for f in futures:
        try:
            outcomes.append(float(f.result(5)["y"][0, 0]))
        except BackendExecutionError as exc:
            outcomes.append(str(exc.__cause__))
    sched.close()
    assert outcomes == [2.0, 4.0, "poisoned input", 8.0]
    assert [len(b) for b in model.batches[1:]] == [4, 1, 1, 1, 1]  # the batch, then one by one


def test_a_batch_over_the_memory_budget_runs_its_requests_alone():
    model = ScriptedModel(shape=("batch", 256))
    pool = MemoryPool(max_memory_usage=2048)  # one request's 1 KiB fits, a batch of four does not
    sched = Scheduler([model], EngineConfig(max_batch_size=4, adaptive_batching=False), stats=StatsRecorder(), pool=pool)
    held(model, sched)
    feeds = [{"x": np.full((1, 256), v, np.float32)} for v in range(4)]
    futures = [sched.submit(f) for f in feeds]
    model.gate.set()
    for f, feed in zip(futures, feeds):
        np.testing.assert_array_equal(f.result(5)["y"], feed["x"] * 2)
    sched.close()
    assert [len(b) for b in model.batches[1:]] == [1, 1, 1, 1]


def test_bad_feeds_fail_alone_at_submit(conv_case, conv_model):
    config = EngineConfig(num_threads=1, max_batch_size=8, max_queue_delay_us=20_000)
    with Engine(config).load(conv_model) as engine:
        good = [engine.submit(conv_case.feeds(seed=s)) for s in range(4)]
        with pytest.raises(InvalidInputError, match="dtype"):
            engine.submit({"x": conv_case.feeds()["x"].astype(np.float64)})
        with pytest.raises(InvalidInputError, match="dimension 1"):
            engine.submit({"x": np.zeros((1, 4, 10, 10), np.float32)})
        with pytest.raises(InvalidInputError, match="missing"):
            engine.submit({"y": conv_case.feeds()["x"]})
        for seed, f in enumerate(good):
            np.testing.assert_array_equal(f.result(10)["y"], engine.run(conv_case.feeds(seed=seed))["y"])


def test_a_gather_with_a_bad_index_fails_alone_on_onnxruntime():
    """A value-dependent runtime error inside a real batch: only its request fails."""
    table = helper.make_tensor("table", TensorProto.FLOAT, [5, 3], np.arange(15, dtype=np.float32).tolist())
    node = helper.make_node("Gather", ["table", "i"], ["y"], axis=0)
    model = make_model(
        [node],
        [helper.make_tensor_value_info("i", TensorProto.INT64, ["batch", 2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 2, 3])],
        [table],
    )
    config = EngineConfig(num_threads=1, max_batch_size=8, max_queue_delay_us=50_000, adaptive_batching=False)
    with Engine(config).load(model) as engine:
        indices = [[0, 1], [2, 3], [4, 99], [1, 1]]
        futures = [engine.submit({"i": np.array([i], np.int64)}) for i in indices]
        wait(futures, 10)
        assert isinstance(futures[2].exception(), Exception)
        for i in (0, 1, 3):
            np.testing.assert_array_equal(futures[i].result()["y"][0], np.arange(15, dtype=np.float32).reshape(5, 3)[indices[i]])
        stats = engine.stats()
        assert stats.failed_inferences == 1 and stats.total_inferences == 3


def test_outputs_not_sized_by_the_batch_turn_batching_off():
    class Summing(ScriptedModel):
        def _run(self, feeds, out=None, deadline_ns=0):
            self.batches.append(feeds["x"].copy())
            return {"y": feeds["x"].sum(axis=0, keepdims=True)}

    model = Summing()
    sched = scheduler(model, max_batch_size=4, adaptive_batching=False, max_queue_delay_us=100_000)
    futures = [sched.submit(f) for f in rows(1, 2, 3, 4)]
    assert [float(f.result(5)["y"][0, 0]) for f in futures] == [1, 2, 3, 4]
    sched.close()
    assert not sched.batching


def test_an_internal_error_still_resolves_every_future(monkeypatch):
    model = ScriptedModel()
    sched = scheduler(model, max_batch_size=4, adaptive_batching=False)
    held(model, sched)
    futures = [sched.submit(f) for f in rows(1, 2, 3)]
    monkeypatch.setattr(sched, "_take", lambda head, now, mark: 1 / 0)
    model.gate.set()
    done, pending = wait(futures, 5)
    assert not pending
    for f in futures:
        assert isinstance(f.exception(), EdgecoreError) and isinstance(f.exception().__cause__, ZeroDivisionError)
    monkeypatch.undo()
    assert sched.submit(rows(5)[0]).result(5)["y"][0, 0] == 10  # and it keeps serving
    sched.close()


def test_a_cancelled_request_is_dropped():
    model = ScriptedModel()
    sched = scheduler(model, max_batch_size=1)
    held(model, sched)
    doomed, kept = sched.submit(rows(3)[0]), sched.submit(rows(4)[0])
    assert doomed.cancel()
    model.gate.set()
    assert kept.result(5)["y"][0, 0] == 8
    sched.close()
    assert 3 not in [float(b[0, 0]) for b in model.batches] and sched.cancelled == 1


def test_a_waiting_caller_runs_its_own_batch_when_the_model_is_free():
    class Recording(ScriptedModel):
        def _run(self, feeds, out=None, deadline_ns=0):
            self.threads.append(threading.get_ident())
            return super()._run(feeds, out, deadline_ns)

    model = Recording()
    model.threads = []
    sched = scheduler(model, max_batch_size=4, max_queue_delay_us=0)
    assert sched.submit(rows(1)[0], wake=False).result()["y"][0, 0] == 2
    assert model.threads == [threading.get_ident()]  # no worker was involved

    # while a caller runs the model, the worker waits for it, then serves what queued meanwhile
    model.gate.clear()
    model.started.clear()
    helper_result = {}
    caller = threading.Thread(target=lambda: helper_result.update(sched.submit(rows(5)[0], wake=False).result()))
    caller.start()
    assert model.started.wait(5)
    later = sched.submit(rows(6)[0])
    time.sleep(0.05)
    assert not later.done()  # the only model is lent to the caller
    model.gate.set()
    caller.join(5)
    assert later.result(5)["y"][0, 0] == 12 and helper_result["y"][0, 0] == 10
    assert model.threads[1] == caller.ident and model.threads[2] not in (caller.ident, threading.get_ident())
    sched.close()


def test_a_lazy_request_whose_caller_does_not_block_still_runs():
    model = ScriptedModel()
    sched = scheduler(model, max_batch_size=4, max_queue_delay_us=0)
    future = sched.submit(rows(3)[0], wake=False)
    assert future.result(timeout=5)["y"][0, 0] == 6  # with a timeout the caller wakes a worker instead
    sched.close()


# -- shutdown --------------------------------------------------------------------------------------


def test_close_drains_every_accepted_request():
    model = ScriptedModel()
    sched = scheduler(model, max_batch_size=2, max_queue_delay_us=10_000_000, adaptive_batching=False)
    held(model, sched)
    futures = [sched.submit(f) for f in rows(*range(5))]
    threading.Timer(0.05, model.gate.set).start()
    sched.close(drain=True)
    assert all(f.done() for f in futures)
    assert [float(f.result()["y"][0, 0]) for f in futures] == [0, 2, 4, 6, 8]
    with pytest.raises(EngineClosedError):
        sched.submit(rows(1)[0])


def test_close_without_drain_fails_the_queued_ones():
    model = ScriptedModel()
    sched = scheduler(model, max_batch_size=1)
    blocker = held(model, sched)
    futures = [sched.submit(f) for f in rows(1, 2, 3)]
    threading.Timer(0.05, model.gate.set).start()
    sched.close(drain=False)
    assert blocker.result(0)["y"][0, 0] == -2  # it was running: it completes
    for f in futures:
        with pytest.raises(EngineClosedError, match="closed before this request ran"):
            f.result(0)


# -- engine API ------------------------------------------------------------------------------------


def test_engine_submit_run_async_and_run_agree_bit_for_bit(conv_case, conv_model):
    feeds = [conv_case.feeds(seed=s) for s in range(24)]
    with Engine(EngineConfig(num_threads=1)).load(conv_model) as direct:
        expected = [direct.run(f)["y"] for f in feeds]
    config = EngineConfig(num_threads=1, enable_dynamic_batching=True, max_batch_size=8, max_queue_delay_us=2000)
    with Engine(config).load(conv_model) as engine:
        futures = [engine.submit(f) for f in feeds]

        async def gather():
            return await asyncio.gather(*(engine.run_async(f) for f in feeds))

        from_async = asyncio.run(gather())
        with_threads = [None] * len(feeds)

        def call(i):
            with_threads[i] = engine.run(feeds[i])

        threads = [threading.Thread(target=call, args=(i,)) for i in range(len(feeds))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        stats = engine.stats()
    for i, want in enumerate(expected):
        np.testing.assert_array_equal(futures[i].result()["y"], want)
        np.testing.assert_array_equal(from_async[i]["y"], want)
        np.testing.assert_array_equal(with_threads[i]["y"], want)
    assert stats.total_inferences == 72 and max(stats.batch_size_histogram) > 1
    assert sum(k * v for k, v in stats.batch_size_histogram.items()) == 72
    assert len(stats.instance_utilization) == 1 and stats.average_queue_ms > 0


def test_outputs_are_views_the_caller_keeps(conv_case, conv_model):
    config = EngineConfig(num_threads=1, max_batch_size=4, max_queue_delay_us=100_000, adaptive_batching=False)
    with Engine(config).load(conv_model) as engine:
        kept = [engine.submit(conv_case.feeds(seed=s)) for s in range(4)]
        first = kept[0].result()["y"]
        snapshot = first.copy()
        assert first.base is not None  # a view into the batch's output buffer
        del kept[1:]
        for _ in range(3):  # reuse every free buffer
            wait([engine.submit(conv_case.feeds(seed=9)) for _ in range(4)])
        np.testing.assert_array_equal(first, snapshot)
        first[...] = 0  # the caller's to modify


def test_instances_compile_separate_models_without_spinning(conv_case, conv_model):
    config = EngineConfig(instances=2, max_batch_size=4)
    with Engine(config).load(conv_model) as engine:
        models = (engine.compiled, *engine._instances)
        assert len(models) == 2 and models[0] is not models[1]
        for m in models:
            options = m.session.get_session_options()
            assert options.get_session_config_entry("session.intra_op.allow_spinning") == "0"
            assert options.intra_op_num_threads >= 1
        futures = [engine.submit(conv_case.feeds(seed=s)) for s in range(40)]
        wait(futures, 30)
        assert len(engine.stats().instance_utilization) == 2


def test_engine_close_resolves_everything_and_refuses_more(conv_case, conv_model):
    engine = Engine(EngineConfig(num_threads=1, max_batch_size=4)).load(conv_model)
    futures = [engine.submit(conv_case.feeds(seed=s)) for s in range(50)]
    engine.close(drain=False)
    assert all(f.done() for f in futures)
    ok = [f for f in futures if f.exception() is None]
    assert all(isinstance(f.exception(), EngineClosedError) for f in futures if f not in ok)
    with pytest.raises(EngineClosedError):
        engine.submit(conv_case.feeds())


# -- memory ----------------------------------------------------------------------------------------


def test_steady_state_batches_come_from_the_pool(conv_case, conv_model):
    config = EngineConfig(
        num_threads=1, max_batch_size=8, preferred_batch_sizes=(8,), max_queue_delay_us=1_000_000, adaptive_batching=False
    )
    feeds = [conv_case.feeds(seed=s) for s in range(8)]
    with Engine(config).load(conv_model) as engine:
        def burst():
            done, _ = wait([engine.submit(f) for f in feeds], 10)
            assert all(f.exception() is None for f in done)

        for _ in range(3):
            burst()
        before = engine.pool.statistics()
        for _ in range(20):
            burst()
        after = engine.pool.statistics()
        assert engine.stats().batch_size_histogram.get(8, 0) >= 20
    # each batch's input buffer comes from the pool; outputs reuse the backend's pooled slots
    assert after.allocations - before.allocations >= 20
    assert after.misses == before.misses  # nothing fresh after warm-up


# -- the stress test -------------------------------------------------------------------------------


@pytest.mark.parametrize("drain", [True, False])
def test_stress_every_future_resolves_and_every_output_is_right(drain):
    """64 client threads, random priorities, some tiny timeouts, bursts past the queue bound, and
    close() while requests are in flight: every future resolves, each answer is its own input's
    (bit for bit against a direct run), and succeeded + timed out + rejected + closed == sent."""
    case = OP_CASES["Conv"]
    inputs = [case.feeds(seed=s)["x"] for s in range(128)]
    config = EngineConfig(
        num_threads=1, max_batch_size=16, max_queue_delay_us=300, priority_levels=3, max_queue_size=96
    )
    engine = Engine(config).load(case.build())
    expected = [engine.compiled.run({"x": x})["y"].copy() for x in inputs]
    clients, per_client = 64, 150
    outcome = {"ok": 0, "timed_out": 0, "rejected": 0, "closed": 0, "sent": 0}
    wrong: list[str] = []
    lock = threading.Lock()
    go = threading.Barrier(clients + 1)
    answered = [0]  # requests sent and answered so far, all clients

    def client(seed: int) -> None:
        rng = random.Random(seed)
        counts = dict.fromkeys(outcome, 0)
        go.wait()
        sent = 0
        while sent < per_client:
            burst = []
            size = min(rng.randint(1, 4), per_client - sent)
            for _ in range(size):
                index = rng.randrange(len(inputs))
                timeout = rng.choice([0.05, 0.2]) if rng.random() < 0.1 else None
                sent += 1
                counts["sent"] += 1
                try:
                    burst.append((index, engine.submit({"x": inputs[index]}, priority=rng.randrange(3), timeout_ms=timeout)))
                except QueueFullError:
                    counts["rejected"] += 1
                except EngineClosedError:
                    counts["closed"] += 1
            for index, future in burst:
                try:  # result() without a timeout may run the batch in this thread (helping)
                    y = (future.result() if seed % 2 else future.result(timeout=60))["y"]
                except RequestTimeoutError:
                    counts["timed_out"] += 1
                except EngineClosedError:
                    counts["closed"] += 1
                else:
                    counts["ok"] += 1
                    if not np.array_equal(y, expected[index]):
                        with lock:
                            wrong.append(f"input {index}: max diff {np.abs(y - expected[index]).max()}")
            with lock:
                answered[0] += size
        with lock:
            for k, v in counts.items():
                outcome[k] += v

    threads = [threading.Thread(target=client, args=(seed,)) for seed in range(clients)]
    for t in threads:
        t.start()
    go.wait()
    total = clients * per_client
    while answered[0] < total * 0.6:
        time.sleep(0.002)
    engine.close(drain=drain)
    for t in threads:
        t.join(60)
        assert not t.is_alive(), "a client is stuck on a future that never resolved"
    assert not wrong, wrong[:5]
    assert outcome["sent"] == total
    assert outcome["ok"] + outcome["timed_out"] + outcome["rejected"] + outcome["closed"] == total, outcome
    assert outcome["ok"] > total // 10 and outcome["closed"] > 0
    stats = engine.stats()
    assert stats.total_inferences == outcome["ok"]
    assert stats.timed_out_requests == outcome["timed_out"] and stats.rejected_requests == outcome["rejected"]
    assert max(stats.batch_size_histogram) > 1
