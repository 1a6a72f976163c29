"""Fixtures of the Ray tests: one local Ray cluster per test module (2 CPUs, no dashboard) with Ray
Serve's HTTP proxy on a free loopback port, the zoo's digits CNN on cpu_simd, and helpers to deploy
an application, find its replica actors and wait for its replicas. Every wait is bounded.
"""

from __future__ import annotations

import socket
import time
from typing import Any, Callable

import pytest

pytest.importorskip("edgecore_ray", reason="edgecore-ray is not installed")
pytest.importorskip("edgecore_cpu_simd", reason="edgecore-cpu-simd (the backend these tests use) is not installed")
ray = pytest.importorskip("ray", reason="ray[serve] is not installed")

import numpy as np  # noqa: E402

MODEL = "zoo:digits_cnn"
NAME = "digits_cnn"


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def ray_serve() -> Any:
    """A Ray cluster and Ray Serve for this module; yields the HTTP proxy's port."""
    from ray import serve

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    port = _free_port()
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        yield port
    finally:
        serve.shutdown()
        ray.shutdown()


@pytest.fixture(scope="module")
def engine_config() -> Any:
    from edgecore import EngineConfig

    return EngineConfig(backend="cpu_simd", num_threads=1, enable_dynamic_batching=True, max_queue_delay_us=200)


@pytest.fixture(scope="module")
def reference(engine_config: Any) -> Callable[[np.ndarray], np.ndarray]:
    """``Engine.run`` on this process: what every replica's answer must equal."""
    from edgecore import Engine, EngineConfig

    engine = Engine(EngineConfig(backend="cpu_simd", num_threads=1)).load(MODEL)
    yield lambda x: engine.run({"input": x})["logits"]
    engine.close()


@pytest.fixture(scope="module")
def deploy(ray_serve: int, engine_config: Any) -> Callable[..., Any]:
    """``deploy(app_name, **deployment_kwargs)`` -> handle; applications are deleted at the end."""
    import edgecore_ray
    from ray import serve

    names: list[str] = []

    def run(app_name: str, **kwargs: Any) -> Any:
        kwargs.setdefault("engine_config", engine_config)
        kwargs.setdefault("ray_actor_options", {"num_cpus": 0.5})
        app = edgecore_ray.deployment(kwargs.pop("model", MODEL), **kwargs)
        names.append(app_name)
        return serve.run(app, name=app_name, route_prefix=f"/{app_name}" if names[:-1] else "/")

    yield run
    for app_name in names:
        serve.delete(app_name)


def inputs(seed: int, batch: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((batch, 1, 8, 8)).astype(np.float32)


@pytest.fixture
def make_input() -> Callable[..., np.ndarray]:
    return inputs


def replica_actors(app_name: str) -> dict[str, Any]:
    """The live replica actors of ``app_name`` by replica id (from their Ray actor names)."""
    out = {}
    for entry in ray.util.list_named_actors(all_namespaces=True):
        name = entry["name"] if isinstance(entry, dict) else entry
        if name.startswith("SERVE_REPLICA::") and f"::{app_name}#" in name:
            try:
                out[name.rsplit("#", 1)[1]] = ray.get_actor(name, namespace="serve")
            except ValueError:  # died between listing and lookup
                continue
    return out


def running_replicas(app_name: str) -> int:
    from ray import serve

    app = serve.status().applications.get(app_name)
    if app is None:
        return 0
    return sum(d.replica_states.get("RUNNING", 0) for d in app.deployments.values())


def wait_for(predicate: Callable[[], bool], timeout_s: float, what: str) -> float:
    """Seconds until ``predicate()`` held; fails the test after ``timeout_s``."""
    started = time.monotonic()
    while not predicate():
        if time.monotonic() - started > timeout_s:
            pytest.fail(f"{what}: not within {timeout_s:g} s")
        time.sleep(0.2)
    return time.monotonic() - started


@pytest.fixture
def cluster() -> Any:
    """The helpers above, for test modules (importlib mode cannot import conftest by name)."""

    class Helpers:
        pass

    h = Helpers()
    h.replica_actors, h.running_replicas, h.wait_for, h.inputs = replica_actors, running_replicas, wait_for, inputs
    return h
