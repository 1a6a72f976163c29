"""The batching policy alone: no threads, no clock -- made-up arrivals and dispatch times in, decisions out.

Reference: Triton's dynamic batcher rules as the scheduler documents them (preferred sizes first, a
full batch at once, otherwise wait until ``max_queue_delay`` after the oldest request), and, for the
adaptive limit, throughput curves written down in the test.
"""

from __future__ import annotations

import collections

import pytest

from edgecore import EngineConfig
from edgecore._policy import RETRY_WAIT_EVERY, AdaptiveBatchSize, BatchPolicy, batch_dimension
from edgecore.tensor import DataType, TensorSpec

US = 1_000  # ns


def spec(shape, name="x"):
    return TensorSpec(name=name, dtype=DataType.FLOAT, shape=shape)


def decide(policy: BatchPolicy, available: int, now: int, *, arrival: int = 0, deadline: int = 0,
           waiting: bool = False, closing: bool = False) -> int:
    return policy.size(policy.limit(deadline, now), available, arrival, now, waiting=waiting, closing=closing)


# -- which models batch ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "shape, batched",
    [(("batch", 4), True), ((1, 4), False), ((None, 4), True), ((), False)],
)
def test_only_a_dynamic_first_dimension_is_a_batch_dimension(shape, batched):
    assert (batch_dimension([spec(shape)], [spec(shape)]) is None) is batched


def test_inputs_starting_with_different_dimensions_are_not_batched():
    """TopK with K as an input: x is [batch, n], k is [1]; every request runs alone."""
    inputs = [spec(("batch", 16)), spec((1,), "k")]
    outputs = [spec(("batch", "k"), "values")]
    policy, why = BatchPolicy.for_model(EngineConfig(max_batch_size=8), inputs, outputs)
    assert "different dimensions" in why and not policy.batching and policy.adaptive is None
    assert decide(policy, available=5, now=0) == 1
    policy, why = BatchPolicy.for_model(EngineConfig(max_batch_size=1), [spec(("batch", 4))], [spec(("batch", 4))])
    assert why is None and not policy.batching


# -- send or wait ---------------------------------------------------------------------------------


def test_the_largest_preferred_size_the_queue_fills_goes_at_once():
    policy = BatchPolicy(max_batch_size=8, preferred_batch_sizes=(2, 4), max_queue_delay_ns=500 * US)
    assert decide(policy, available=5, now=10) == 4
    assert decide(policy, available=3, now=10) == 2
    assert decide(policy, available=1, now=10) == 0  # waits for more
    assert decide(policy, available=1, now=500 * US) == 8  # the delay is over: what is there goes


def test_a_full_batch_goes_at_once_and_a_partial_one_waits_out_the_delay():
    policy = BatchPolicy(max_batch_size=8, max_queue_delay_ns=500 * US)
    assert decide(policy, available=8, now=0) == 8
    assert [decide(policy, available=3, now=t, arrival=100 * US) for t in (100 * US, 599 * US, 600 * US)] == [0, 0, 8]
    assert policy.send_by(100 * US) == 600 * US
    assert decide(policy, available=3, now=0, closing=True) == 8
    assert decide(BatchPolicy(max_batch_size=8, max_queue_delay_ns=0), available=1, now=0) == 8


def test_stop_batching_sends_every_request_alone():
    policy = BatchPolicy(max_batch_size=8, max_queue_delay_ns=500 * US, adaptive=True)
    policy.stop_batching()
    assert not policy.batching and policy.adaptive is None
    assert decide(policy, available=8, now=0) == 1


def test_waits_are_skipped_while_they_bring_nothing_and_retried_every_32nd_time():
    policy = BatchPolicy(max_batch_size=8, max_queue_delay_ns=500 * US, adaptive=True)
    assert decide(policy, available=1, now=0) == 0  # waits at first
    for _ in range(3):  # three waits during which nobody arrived
        policy.dispatched(1, 0, arrivals_while_waiting=0)
    decisions = [decide(policy, available=1, now=0) for _ in range(2 * RETRY_WAIT_EVERY)]
    assert [i for i, size in enumerate(decisions) if size == 0] == [RETRY_WAIT_EVERY - 1, 2 * RETRY_WAIT_EVERY - 1]
    assert decide(policy, available=1, now=0, waiting=True) == 0  # one already waiting keeps waiting
    for _ in range(3):  # waits bring requests again: wait
        policy.dispatched(4, 0, arrivals_while_waiting=4)
    assert decide(policy, available=1, now=0) == 0


def test_a_near_deadline_halves_the_adaptive_limit():
    policy = BatchPolicy(max_batch_size=16, max_queue_delay_ns=0, adaptive=True)
    now = 0
    for _ in range(4000):  # saturating load on a model whose batches of any size take 100 us
        policy.dispatched(policy.limit(0, now), now)
        now += 100 * US
    limit = policy.limit(0, now)
    expected = policy.adaptive.estimate_ns(limit)
    assert limit > 2 and expected > 0
    assert policy.limit(now + int(expected) + 1, now) == limit  # the batch fits before the deadline
    assert policy.limit(now + int(expected * 0.6), now) == limit // 2
    assert policy.limit(now + 1, now) == 1


# -- the adaptive limit ---------------------------------------------------------------------------


def windows(controller: AdaptiveBatchSize, per_item_us, count: int) -> list[int]:
    """The limit of each of the next ``count`` windows under saturating load."""
    now = getattr(controller, "clock", 0)
    limits = [controller.limit()]
    closed = sum(controller._windows)
    while len(limits) < count:
        size = controller.limit()
        controller.dispatched(size, now)
        now += int(per_item_us(size) * 1e3 * size)
        if sum(controller._windows) != closed:
            closed = sum(controller._windows)
            limits.append(controller.limit())
    controller.clock = now
    return limits


def _learn(controller: AdaptiveBatchSize, per_item_us, batches: int = 4000) -> int:
    """Saturating load on a model whose time per item at batch size b is ``per_item_us(b)``."""
    now = getattr(controller, "clock", 0)
    for _ in range(batches):
        size = controller.limit()
        controller.dispatched(size, now)
        now += int(per_item_us(size) * 1e3 * size)
    controller.clock = now
    return controller.chosen


@pytest.mark.parametrize("max_batch_size, start", [(32, 16), (8, 4), (2, 2), (3, 2), (1, 1), (64, 32)])
def test_the_adaptive_limit_starts_half_way(max_batch_size, start):
    assert AdaptiveBatchSize(max_batch_size).limit() == start


def test_the_sweep_goes_up_from_the_start_then_down_then_settles():
    controller = AdaptiveBatchSize(32)
    sweep = windows(controller, lambda b: 100.0 / min(b, 8), 7)
    assert sweep[:6] == [16, 32, 8, 4, 2, 1]
    assert controller.chosen == 8 and sweep[6] == 8


def test_the_adaptive_start_is_the_largest_preferred_size():
    policy = BatchPolicy(max_batch_size=32, preferred_batch_sizes=(4, 12), max_queue_delay_ns=0, adaptive=True)
    assert policy.limit(0, 0) == 8  # the largest limit (1, 2, 4, 8, ...) up to 12
    assert AdaptiveBatchSize(64, start=1).limit() == 1


def test_adaptive_limit_stops_where_throughput_stops_rising():
    # a 0.5 ms model: time per item falls up to 16 (1.5x) and rises past it
    knee = {1: 500, 2: 420, 4: 380, 8: 350, 16: 333, 32: 345, 64: 420}
    assert _learn(AdaptiveBatchSize(64), knee.__getitem__) == 16
    assert _learn(AdaptiveBatchSize(64), lambda b: 100.0) == 1  # flat: batching buys nothing
    assert _learn(AdaptiveBatchSize(48), lambda b: 100.0 / b) == 48  # keeps paying up to the max


def test_adaptive_limit_follows_a_change_of_load():
    controller = AdaptiveBatchSize(32)
    assert _learn(controller, lambda b: 100.0 / min(b, 8)) == 8
    assert _learn(controller, lambda b: 100.0 / min(b, 16) + (0 if b <= 16 else 5)) == 16


def test_adaptive_limit_under_light_load_is_the_smallest_that_keeps_up():
    controller = AdaptiveBatchSize(32)
    now = 0
    for _ in range(3000):  # two requests arrive per millisecond, whatever the limit
        controller.dispatched(min(controller.limit(), 2), now)
        now += 1_000_000
    assert controller.chosen == 2


# -- a simulated server ---------------------------------------------------------------------------


def simulate(policy: BatchPolicy, arrivals: list[int], service_ns) -> list[tuple[int, int, int]]:
    """One server driven by ``policy`` as the scheduler drives it: (dispatch time, head arrival, size)."""
    queue = collections.deque(arrivals)
    pending: collections.deque[int] = collections.deque()  # arrived, not dispatched
    batches = []
    now, free_at, mark = 0, 0, -1
    arrived = 0
    while queue or pending:
        while queue and queue[0] <= now:
            pending.append(queue.popleft())
            arrived += 1
        if not pending or now < free_at:
            now = min([t for t in (free_at if now < free_at else None, queue[0] if queue else None) if t is not None])
            continue
        head = pending[0]
        size = decide(policy, len(pending), now, arrival=head, waiting=mark >= 0)
        if not size:
            if mark < 0:
                mark = arrived
            now = min([policy.send_by(head)] + ([queue[0]] if queue else []))
            continue
        taken = min(size, len(pending))
        for _ in range(taken):
            pending.popleft()
        policy.dispatched(taken, now, arrived - mark if mark >= 0 else -1)
        mark = -1
        batches.append((now, head, taken))
        free_at = now + service_ns(taken)
    return batches


def test_a_fresh_server_under_load_batches_from_its_first_requests():
    policy = BatchPolicy(max_batch_size=32, max_queue_delay_ns=500 * US, adaptive=True)
    arrivals = [i * 20 * US for i in range(2000)]  # 50k requests/s into a 1 ms + 50 us/item model
    batches = simulate(policy, arrivals, lambda n: 1_000 * US + n * 50 * US)
    assert sum(size for _, _, size in batches) == len(arrivals)
    assert batches[1][2] == 16  # the second batch (the queue refilled while the first ran) is full
    assert all(size <= 32 for _, _, size in batches)


def test_no_request_waits_past_the_delay_while_the_server_is_free():
    for adaptive in (False, True):
        policy = BatchPolicy(max_batch_size=8, max_queue_delay_ns=300 * US, adaptive=adaptive)
        arrivals = sorted((i * 7919) % 50_000 * US // 10 for i in range(600))  # uneven, bursty
        batches = simulate(policy, arrivals, lambda n: 200 * US + n * 30 * US)
        assert sum(size for _, _, size in batches) == len(arrivals)
        free_at = 0
        for dispatched, head, size in batches:
            assert dispatched <= max(head + 300 * US, free_at), (dispatched, head, free_at)
            free_at = dispatched + 200 * US + size * 30 * US
