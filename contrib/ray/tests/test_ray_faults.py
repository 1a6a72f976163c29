"""Replica death and a wedged engine under concurrent traffic, on one 2-replica deployment with
short health-check periods: what fails without the retrying client, that nothing fails with it, and
how soon two replicas serve again. One Ray cluster for the module.

So that a replica surely dies with requests in flight (the digits CNN answers in well under a
millisecond), the victim is first held for a moment with the replica's fault-injection hook
(``wedge``): requests routed to it wait there, then ``ray.kill`` takes it down with them."""

from __future__ import annotations

import threading
import time
from typing import Any

import numpy as np
import pytest

import edgecore_ray
from edgecore.errors import ConfigurationError

APP = "faults"
CLIENTS = 4


@pytest.fixture(scope="module")
def handle(deploy):
    return deploy(APP, num_replicas=2, health_check_period_s=1.0, health_check_timeout_s=5.0, probe_timeout_s=1.0,
                  graceful_shutdown_timeout_s=1.0)


class Traffic:
    """``CLIENTS`` threads, each sending one request at a time through its own Client until stopped;
    every answer is checked against ``Engine.run``."""

    def __init__(self, handle: Any, reference: Any, inputs: Any, *, retries: int, timeout_s: float = 10.0) -> None:
        self.ok = 0
        self.failures: list[BaseException] = []
        self.wrong = 0
        self._stop = threading.Event()
        self._lock = threading.Lock()
        x = inputs(11)
        self._x, self._expected = x, reference(x)
        self.clients = [edgecore_ray.Client(handle, retries=retries, backoff_s=0.05, max_backoff_s=0.5,
                                            timeout_s=timeout_s) for _ in range(CLIENTS)]
        self._threads = [threading.Thread(target=self._loop, args=(c,), daemon=True) for c in self.clients]

    def _loop(self, client: Any) -> None:
        while not self._stop.is_set():
            try:
                logits = client.infer({"input": self._x})["logits"]
            except Exception as exc:  # noqa: BLE001 - counted and asserted on
                with self._lock:
                    self.failures.append(exc)
                continue
            with self._lock:
                self.ok += 1
                self.wrong += not np.allclose(logits, self._expected, rtol=1e-5, atol=1e-6)

    @property
    def retried(self) -> int:
        """Attempts beyond one per call."""
        return sum(c.attempts for c in self.clients) - self.ok - len(self.failures)

    def __enter__(self) -> "Traffic":
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=30)

    def served_after(self, count: int, timeout_s: float, wait_for: Any) -> None:
        """Wait until ``count`` more requests succeeded."""
        start = self.ok
        wait_for(lambda: self.ok >= start + count, timeout_s, f"{count} more answers")


def _serving_again(handle: Any, gone: str, cluster: Any, timeout_s: float) -> float:
    """Seconds until 2 replicas run and both have served traffic, neither of them ``gone``."""

    def two_serving() -> bool:
        if cluster.running_replicas(APP) != 2:
            return False
        try:
            rows = edgecore_ray.replica_stats(handle, replicas=2, attempts=50)
        except ConfigurationError:  # the controller has not noticed the death yet
            return False
        return len(rows) == 2 and all(r["replica"] != gone and r["requests"] > 0 for r in rows)

    return cluster.wait_for(two_serving, timeout_s, "2 replicas serving again")


def _kill_with_requests_in_flight(handle: Any, cluster: Any) -> str:
    import ray

    actors = cluster.replica_actors(APP)
    assert len(actors) == 2, actors
    victim = handle.wedge.remote(30).result(timeout_s=10)
    time.sleep(1.0)  # requests routed to it wait at the gate
    ray.kill(actors[victim], no_restart=True)
    return victim


def test_replica_death_costs_only_its_in_flight_requests_and_none_with_retries(handle, reference, cluster):
    cluster.wait_for(lambda: cluster.running_replicas(APP) == 2, 60, "2 replicas running")

    # without retries: the requests in flight on the killed replica fail, at most one per client
    with Traffic(handle, reference, cluster.inputs, retries=0) as traffic:
        traffic.served_after(40, 20, cluster.wait_for)
        victim = _kill_with_requests_in_flight(handle, cluster)
        traffic.served_after(40, 20, cluster.wait_for)
        _serving_again(handle, victim, cluster, 30)
    assert traffic.wrong == 0
    assert 1 <= len(traffic.failures) <= CLIENTS, traffic.failures

    # with the retrying client: the same death, nothing fails, two replicas serve again within 15 s
    with Traffic(handle, reference, cluster.inputs, retries=5) as traffic:
        traffic.served_after(40, 20, cluster.wait_for)
        victim = _kill_with_requests_in_flight(handle, cluster)
        killed_at = time.monotonic()
        traffic.served_after(40, 20, cluster.wait_for)
        _serving_again(handle, victim, cluster, 15 - (time.monotonic() - killed_at))
    assert traffic.failures == [] and traffic.wrong == 0, traffic.failures[:3]
    assert traffic.retried >= 1, "no request was in flight on the killed replica: the test proved nothing"


def test_wedged_engine_is_marked_unhealthy_and_replaced_while_the_other_serves(handle, reference, cluster):
    _serving_again(handle, "", cluster, 30)
    with Traffic(handle, reference, cluster.inputs, retries=5, timeout_s=2.0) as traffic:
        traffic.served_after(20, 20, cluster.wait_for)
        wedged = handle.wedge.remote(600).result(timeout_s=10)
        cluster.wait_for(lambda: wedged not in cluster.replica_actors(APP), 30, f"wedged replica {wedged} replaced")
        _serving_again(handle, wedged, cluster, 30)
    assert traffic.failures == [] and traffic.wrong == 0, traffic.failures[:3]
