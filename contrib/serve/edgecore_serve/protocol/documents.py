"""The JSON documents of the protocol besides inference: server and model metadata, Triton's model
configuration and statistics. HTTP sends them as they are; gRPC parses them into its messages
(field names are the protobuf ones, so ``json_format.ParseDict`` takes them unchanged).

Statistics follow Triton's ``/v2/models/stats`` from an engine's :class:`~edgecore.stats.EngineStats`
and the server's own per-model request counts:

* ``success`` / ``fail``: requests answered by the server, and their time end to end there
  (decoding and encoding included);
* ``queue``: requests that ran, and their total wait in the scheduler's queue;
* ``compute_infer``: requests that ran, each charged with its batch's execution time (Triton's rule),
  i.e. average execution time x requests;
* ``inference_count``: items inferred (a request of batch 4 counts 4), ``execution_count``: backend
  executions, so ``inference_count / execution_count`` is the average dynamic batch;
* ``batch_stats``: per batch size (in items), executions and their time.

edgecore measures no separate input or output copy, so ``compute_input`` and ``compute_output``
carry counts with 0 ns.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Iterable, Sequence

from edgecore_serve.protocol.datatypes import TRITON_CONFIG_TYPE, protocol_datatype

if TYPE_CHECKING:
    from edgecore.config import EngineConfig
    from edgecore.stats import EngineStats
    from edgecore.tensor import TensorSpec

__all__ = [
    "EXTENSIONS",
    "batchable",
    "model_config",
    "model_metadata",
    "model_statistics",
    "repository_index",
    "server_metadata",
    "wire_shape",
]

#: Protocol extensions this server implements (``GET /v2``'s ``extensions``).
EXTENSIONS: tuple[str, ...] = ("binary_tensor_data", "model_configuration", "model_repository", "statistics")


def wire_shape(spec: TensorSpec) -> list[int]:
    """A spec's shape as the protocol writes it: -1 for any size; ``[-1]`` when the model records
    no shape at all (any rank), as Triton reports such tensors."""
    if spec.shape is None:
        return [-1]
    return [d if isinstance(d, int) else -1 for d in spec.shape]


def batchable(inputs: Sequence[TensorSpec], outputs: Sequence[TensorSpec]) -> bool:
    """Whether requests can share batches: every input and output starts with a dynamic dimension
    (the scheduler's rule)."""
    return bool(inputs) and all(s.shape and not isinstance(s.shape[0], int) for s in (*inputs, *outputs))


def server_metadata(version: str) -> dict[str, Any]:
    return {"name": "edgecore", "version": version, "extensions": list(EXTENSIONS)}


def _tensor_metadata(spec: TensorSpec) -> dict[str, Any]:
    return {"name": spec.name, "datatype": protocol_datatype(spec.dtype), "shape": wire_shape(spec)}


def model_metadata(
    name: str, versions: Iterable[str], inputs: Sequence[TensorSpec], outputs: Sequence[TensorSpec], platform: str
) -> dict[str, Any]:
    return {
        "name": name,
        "versions": list(versions),
        "platform": platform,
        "inputs": [_tensor_metadata(s) for s in inputs],
        "outputs": [_tensor_metadata(s) for s in outputs],
    }


def model_config(
    name: str,
    inputs: Sequence[TensorSpec],
    outputs: Sequence[TensorSpec],
    *,
    config: EngineConfig,
    platform: str,
    backend: str,
) -> dict[str, Any]:
    """Triton's model configuration: with dynamic batching, ``dims`` leave out the batch dimension."""
    batched = batchable(inputs, outputs)

    def tensor(spec: TensorSpec) -> dict[str, Any]:
        dims = wire_shape(spec)
        return {
            "name": spec.name,
            "data_type": TRITON_CONFIG_TYPE[protocol_datatype(spec.dtype)],
            "dims": dims[1:] if batched else dims,
        }

    doc: dict[str, Any] = {
        "name": name,
        "platform": platform,
        "backend": backend,
        "max_batch_size": config.max_batch_size if batched else 0,
        "input": [tensor(s) for s in inputs],
        "output": [tensor(s) for s in outputs],
        "instance_group": [{"name": name, "count": config.instances, "kind": "KIND_CPU"}],
    }
    if batched:
        doc["dynamic_batching"] = {
            "preferred_batch_size": list(config.preferred_batch_sizes),
            "max_queue_delay_microseconds": config.max_queue_delay_us,
        }
    return doc


def _duration(count: int, ns: float) -> dict[str, int]:
    return {"count": int(count), "ns": int(ns)}


def model_statistics(
    *,
    name: str,
    version: str,
    stats: EngineStats | None,
    success: tuple[int, int],
    fail: tuple[int, int],
    last_inference_ms: int,
) -> dict[str, Any]:
    """One entry of ``model_stats``. ``success``/``fail`` are (requests, total ns) seen by the server;
    ``stats`` is None for a model not loaded (its engine counts are then 0)."""
    doc: dict[str, Any] = {
        "name": name,
        "version": version,
        "last_inference": int(last_inference_ms),
        "inference_count": 0,
        "execution_count": 0,
        "inference_stats": {
            "success": _duration(*success),
            "fail": _duration(*fail),
            "queue": _duration(0, 0),
            "compute_input": _duration(0, 0),
            "compute_infer": _duration(0, 0),
            "compute_output": _duration(0, 0),
            "cache_hit": _duration(0, 0),
            "cache_miss": _duration(0, 0),
        },
        "batch_stats": [],
    }
    if stats is None:
        return doc
    ran = stats.total_inferences
    compute_ns = stats.average_compute_ms * 1e6  # per execution
    infer = doc["inference_stats"]
    infer["queue"] = _duration(ran, stats.average_queue_ms * 1e6 * ran)
    infer["compute_input"] = _duration(ran, 0)
    infer["compute_infer"] = _duration(ran, compute_ns * ran)
    infer["compute_output"] = _duration(ran, 0)
    doc["inference_count"] = sum(int(size) * n for size, n in stats.batch_size_histogram.items())
    doc["execution_count"] = stats.total_executions
    doc["batch_stats"] = [
        {
            "batch_size": int(size),
            "compute_input": _duration(n, 0),
            "compute_infer": _duration(n, compute_ns * n),
            "compute_output": _duration(n, 0),
        }
        for size, n in sorted(stats.batch_size_histogram.items())
    ]
    return doc


def repository_index(entries: Iterable[tuple[str, str, str, str]]) -> list[dict[str, str]]:
    """The repository index from ``(name, version, state, reason)`` rows (Triton's JSON)."""
    out = []
    for name, version, state, reason in entries:
        row = {"name": name, "version": version, "state": state}
        if reason:
            row["reason"] = reason
        out.append(row)
    return out
