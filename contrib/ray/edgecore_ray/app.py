"""``edgecore_ray.deployment(...)``: a Ray Serve application whose replicas each hold an Engine;
:func:`build`, the same from a Ray Serve config file's ``args`` (``import_path:
edgecore_ray.app:build``); and :func:`replica_stats`, the per-replica counts the replicas report.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping, Sequence

from edgecore.errors import ConfigurationError
from edgecore.tuned import TOML

__all__ = ["build", "deployment", "model_name", "replica_stats"]


def model_name(model: Any) -> str:
    """The name a model is served under: ``zoo:NAME`` -> NAME, a path -> its stem."""
    if isinstance(model, str) and model.startswith("zoo:"):
        return model[4:]
    if isinstance(model, (str, os.PathLike)):
        return Path(model).stem
    raise ConfigurationError(
        f"a model given as {type(model).__name__} has no name to serve it under; pass name=... "
        "(a path or 'zoo:NAME' is named after itself)"
    )


def _portable(model: Any) -> Any:
    """The model as something every replica can load: a path (absolute: replicas run elsewhere) of a
    model file or of a folder ``edgecore tune`` wrote (served with its configuration), ``zoo:NAME``,
    or serialized bytes for a ``ModelProto``."""
    if isinstance(model, str) and model.startswith("zoo:"):
        return model
    if isinstance(model, (str, os.PathLike)):
        path = Path(model).resolve()
        if not (path.is_file() or (path / TOML).is_file()):  # a file, or a folder edgecore tune wrote
            raise ConfigurationError(
                f"model file {str(model)!r} does not exist (expected an .onnx path, a folder edgecore tune "
                f"wrote, or zoo:NAME)"
            )
        return str(path)
    if isinstance(model, (bytes, bytearray)):
        return bytes(model)
    if hasattr(model, "SerializeToString"):
        return model.SerializeToString()
    raise ConfigurationError(
        f"expected the model as a path, 'zoo:NAME', bytes or an onnx.ModelProto, got {type(model).__name__}"
    )


def _weights(router: str, weights: Sequence[float] | None, num_replicas: int | None) -> tuple[float, ...]:
    if weights is None:
        if router == "weighted":
            raise ConfigurationError("router='weighted' needs weights=[w0, w1, ...], one per replica rank")
        return ()
    if router != "weighted":
        raise ConfigurationError(f"weights are used by router='weighted' only; got router={router!r}")
    out = tuple(float(w) for w in weights)
    if not out or any(not w > 0 for w in out):
        raise ConfigurationError(f"weights must be positive numbers, got {list(weights)!r}")
    if num_replicas is not None and len(out) != num_replicas:
        raise ConfigurationError(f"expected one weight per replica ({num_replicas}), got {len(out)}: {list(out)!r}")
    return out


def deployment(
    model: Any,
    *,
    name: str | None = None,
    num_replicas: int = 2,
    backend: str = "auto",
    engine_config: Any = None,
    autoscaling_config: Mapping[str, Any] | None = None,
    router: str = "power_of_two",
    weights: Sequence[float] | None = None,
    ray_actor_options: Mapping[str, Any] | None = None,
    max_ongoing_requests: int = 16,
    health_check_period_s: float = 2.0,
    health_check_timeout_s: float = 10.0,
    probe_timeout_s: float = 5.0,
    graceful_shutdown_timeout_s: float = 5.0,
    limits: Any = None,
) -> Any:
    """A Ray Serve application serving ``model`` on ``num_replicas`` replicas, each with its own
    :class:`~edgecore.Engine`; ``serve.run(app)`` starts it and returns a ``DeploymentHandle``.

    ``router``: ``"power_of_two"`` (Ray's default), ``"round_robin"`` or ``"weighted"`` with
    ``weights`` (one per replica rank; with autoscaling, ranks past the list weigh 1).
    ``engine_config``: an :class:`~edgecore.EngineConfig` (default: dynamic batching on);
    ``backend`` other than ``"auto"`` overrides its backend. ``autoscaling_config`` is passed to Ray
    (then ``num_replicas`` is ignored). Health: every ``health_check_period_s`` Ray calls
    ``check_health``, which runs a one-item inference bounded by ``probe_timeout_s``. ``limits``:
    :class:`edgecore_serve.protocol.Limits` (body size, tensor elements, request timeout).
    ``model``: a path every replica can read, ``zoo:NAME``, bytes or an ``onnx.ModelProto``.
    """
    from ray.serve.config import RequestRouterConfig

    from edgecore import EngineConfig
    from edgecore_serve.protocol.tensors import Limits

    from edgecore_ray.replica import EdgecoreReplica
    from edgecore_ray.routers import ROUTERS

    if router not in ROUTERS:
        raise ConfigurationError(f"unknown router {router!r}; available: {', '.join(ROUTERS)}")
    if autoscaling_config is None and (not isinstance(num_replicas, int) or num_replicas < 1):
        raise ConfigurationError(f"num_replicas must be an integer >= 1, got {num_replicas!r}")
    weight_list = _weights(router, weights, None if autoscaling_config else num_replicas)
    name = name or model_name(model)
    if engine_config is None:
        engine_config = EngineConfig(backend=backend, enable_dynamic_batching=True)
    elif backend != "auto":
        import attrs

        engine_config = attrs.evolve(engine_config, backend=backend)
    options: dict[str, Any] = {
        "name": name,
        "max_ongoing_requests": max_ongoing_requests,
        "health_check_period_s": health_check_period_s,
        "health_check_timeout_s": health_check_timeout_s,
        "graceful_shutdown_timeout_s": graceful_shutdown_timeout_s,
    }
    if autoscaling_config is not None:
        options["autoscaling_config"] = dict(autoscaling_config)
    else:
        options["num_replicas"] = num_replicas
    if ray_actor_options is not None:
        options["ray_actor_options"] = dict(ray_actor_options)
    router_cls = ROUTERS[router]
    if router_cls is not None:
        options["request_router_config"] = RequestRouterConfig(request_router_class=router_cls)
    return EdgecoreReplica.options(**options).bind(
        _portable(model),
        name=name,
        engine_config=engine_config,
        weights=weight_list,
        probe_timeout_s=probe_timeout_s,
        limits=limits or Limits(),
    )


#: ``args`` keys of :func:`build` passed on to :func:`deployment` as they are.
_BUILD_KEYS = frozenset({
    "name", "num_replicas", "backend", "autoscaling_config", "router", "weights", "ray_actor_options",
    "max_ongoing_requests", "health_check_period_s", "health_check_timeout_s", "probe_timeout_s",
    "graceful_shutdown_timeout_s",
})


def build(args: Mapping[str, Any]) -> Any:
    """A Ray Serve application builder for config files (``serve run config.yaml``)::

        import_path: edgecore_ray.app:build
        args: {model: zoo:digits_cnn, num_replicas: 2, router: weighted, weights: [3, 1],
               engine: {max_batch_size: 8}, limits: {max_body_bytes: 67108864}}

    ``model`` is required; ``engine`` holds :class:`~edgecore.EngineConfig` fields (dynamic batching
    on unless it says otherwise), ``limits`` those of :class:`edgecore_serve.protocol.Limits`; every
    other key is a :func:`deployment` keyword.
    """
    import attrs

    from edgecore import EngineConfig
    from edgecore_serve.protocol.tensors import Limits

    args = dict(args)
    if "model" not in args:
        raise ConfigurationError("the application's args need model: PATH or zoo:NAME")
    model = args.pop("model")
    engine = {"enable_dynamic_batching": True, **dict(args.pop("engine", None) or {})}
    limits = dict(args.pop("limits", None) or {})
    unknown = sorted(set(args) - _BUILD_KEYS)
    for given, cls in ((engine, EngineConfig), (limits, Limits)):
        fields = {f.name for f in attrs.fields(cls)}
        unknown += [f"{'engine' if cls is EngineConfig else 'limits'}.{k}" for k in sorted(set(given) - fields)]
    if unknown:
        raise ConfigurationError(
            f"unknown key(s) in the application's args: {', '.join(unknown)}; expected model, engine "
            f"(EngineConfig fields), limits (Limits fields) and {', '.join(sorted(_BUILD_KEYS))}"
        )
    return deployment(model, engine_config=EngineConfig(**engine), limits=Limits(**limits), **args)


def replica_stats(handle: Any, *, replicas: int, attempts: int = 200, timeout_s: float = 10.0) -> list[dict[str, Any]]:
    """Every replica's own counts (:meth:`EdgecoreReplica.replica_stats`), one row per replica,
    ordered by rank. Ray routes each call to one replica, so calls are sent in concurrent bursts
    (``2 * replicas`` at a time: a router that saw one replica busy a moment ago keeps choosing the
    other while sequential calls find it idle) until ``replicas`` distinct replicas have answered,
    at most ``attempts`` calls; rows of replicas that have since been replaced may be included if
    they answered."""
    seen: dict[str, dict[str, Any]] = {}
    burst, sent = max(2, 2 * replicas), 0
    while len(seen) < replicas:
        if sent >= attempts:
            raise ConfigurationError(
                f"expected {replicas} replicas to answer within {attempts} calls, {len(seen)} did: {sorted(seen)}"
            )
        responses = [handle.replica_stats.remote() for _ in range(min(burst, attempts - sent))]
        sent += len(responses)
        for response in responses:
            row = response.result(timeout_s=timeout_s)
            seen[row["replica"]] = row
    return sorted(seen.values(), key=lambda r: (r["rank"], r["replica"]))
