"""What every front end asks of the server, independent of HTTP or gRPC: inference through
:meth:`Engine.submit <edgecore.Engine.submit>` (so concurrent requests of both protocols share
dynamic batches), health, metadata, configuration, statistics and the repository.

Concurrency: methods are coroutines run on the server's event loop; the model repository's state
is touched only there. Decoding and encoding large bodies is handed to worker threads by the front
ends (:func:`offload`), so that one large request does not hold up the others.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import numpy as np

from edgecore_serve.models import ModelRepository, ModelVersion
from edgecore_serve.protocol.documents import (
    model_config,
    model_metadata,
    model_statistics,
    repository_index,
    server_metadata,
)
from edgecore_serve.protocol.datatypes import protocol_datatype
from edgecore_serve.protocol.errors import BadRequest, NotFound, Unavailable
from edgecore_serve.protocol.tensors import InferRequest, InferResponse, Limits, OutputTensor

__all__ = ["InferenceService", "PLATFORM", "offload"]

PLATFORM = "edgecore_onnx"
_now = time.perf_counter_ns

#: Bodies (or JSON outputs, in elements) past this size are decoded / encoded in a worker thread.
OFFLOAD_BYTES = 256 * 1024
OFFLOAD_ELEMENTS = 32 * 1024


async def offload(big: bool, func: Any, *args: Any, **kwargs: Any) -> Any:
    """``func(*args, **kwargs)`` in a worker thread when ``big``, else inline (cheaper for small work)."""
    if big:
        return await asyncio.to_thread(func, *args, **kwargs)
    return func(*args, **kwargs)


class InferenceService:
    """The server's behaviour, shared by its HTTP and gRPC front ends."""

    def __init__(self, repository: ModelRepository, *, limits: Limits = Limits()) -> None:
        self.repository = repository
        self.limits = limits
        self.started = False  # True once the models named at start are loaded
        self.accepting = True  # False once shutdown started: readiness turns false
        self.accepted = self.answered = 0  # inference requests, for the shutdown report

    # -- health and metadata -----------------------------------------------------------------------

    def live(self) -> bool:
        return True

    def ready(self) -> bool:
        return self.accepting and self.started

    def server_metadata(self) -> dict[str, Any]:
        from edgecore import __version__

        return server_metadata(__version__)

    def model_ready(self, name: str, version: str = "") -> bool:
        return self.repository.find(name, version).ready

    async def _loaded(self, name: str, version: str) -> ModelVersion:
        entry = await self.repository.acquire(name, version)
        self.repository.release(entry)
        return entry

    async def model_metadata(self, name: str, version: str = "") -> dict[str, Any]:
        entry = await self._loaded(name, version)
        versions = [v.version for v in self.repository.versions(name)] if not version else [entry.version]
        return model_metadata(name, versions, entry.inputs, entry.outputs, PLATFORM)

    async def model_config(self, name: str, version: str = "") -> dict[str, Any]:
        entry = await self._loaded(name, version)
        engine = entry.engine
        backend = engine.backend if engine is not None else ""
        return model_config(name, entry.inputs, entry.outputs, config=self.repository.config,
                            platform=PLATFORM, backend=backend)

    def statistics(self, name: str = "", version: str = "") -> dict[str, Any]:
        if name:
            entries = [self.repository.find(name, version)] if version else self.repository.versions(name)
        else:
            entries = list(self.repository.all_versions())
        stats = []
        for entry in entries:
            engine = entry.engine
            doc = model_statistics(
                name=entry.name,
                version=entry.version,
                stats=engine.stats() if engine is not None else None,
                success=tuple(entry.success),
                fail=tuple(entry.fail),
                last_inference_ms=entry.last_inference_ms,
            )
            if engine is not None:
                doc["memory_usage"] = [{"type": "CPU", "id": 0, "byte_size": entry.memory_bytes}]
            doc["load_count"], doc["eviction_count"] = entry.loads, entry.evictions  # edgecore's own keys
            stats.append(doc)
        return {"model_stats": stats}

    def repository_index(self, ready_only: bool = False) -> list[dict[str, str]]:
        self.repository.rescan()
        rows = [
            (v.name, v.version, v.state, v.reason)
            for v in self.repository.all_versions()
            if not ready_only or v.ready
        ]
        return repository_index(rows)

    async def load(self, name: str) -> None:
        await self.repository.load(name)

    async def unload(self, name: str) -> None:
        await self.repository.unload(name)

    # -- inference -----------------------------------------------------------------------------

    def check_model(self, name: str, version: str = "") -> None:
        """:class:`NotFound` for an unknown model or version (checked before a body is decoded)."""
        self.repository.find(name, version)

    def count_failure(self, name: str, version: str, started_ns: int) -> None:
        """Count a request that failed before :meth:`infer` (say, its body did not decode)."""
        try:
            entry = self.repository.find(name, version)
        except NotFound:
            return
        entry.record(False, _now() - started_ns)

    async def infer(self, request: InferRequest, started_ns: int | None = None) -> InferResponse:
        """Run one request; raises :mod:`~edgecore_serve.protocol.errors` or edgecore errors."""
        started = started_ns or _now()
        if not self.accepting:
            raise Unavailable("the server is shutting down and accepts no new requests")
        self.accepted += 1
        try:
            entry = await self.repository.acquire(request.model_name, request.model_version)
        except BaseException:
            self.answered += 1
            self.count_failure(request.model_name, request.model_version, started)
            raise
        ok = False
        try:
            response = await self._infer(entry, request)
            ok = True
            return response
        finally:
            self.repository.release(entry)
            entry.record(ok, _now() - started)
            self.answered += 1

    async def _infer(self, entry: ModelVersion, request: InferRequest) -> InferResponse:
        engine = entry.engine
        if engine is None:
            raise Unavailable(f"model {entry.name!r} version {entry.version} is not loaded")
        feeds = self._feeds(entry, request)
        wanted = self._wanted(entry, request)
        timeout_ms = self.limits.request_timeout_ms
        future = engine.submit(feeds, timeout_ms=timeout_ms or None)
        del engine  # an evicted engine must not outlive its close in this frame (its memory goes back then)
        waiter = asyncio.wrap_future(future)
        if timeout_ms:
            try:
                outputs = await asyncio.wait_for(waiter, timeout_ms / 1000.0)
            except asyncio.TimeoutError:
                from edgecore.errors import RequestTimeoutError

                raise RequestTimeoutError(
                    f"model {entry.name!r}: no answer within the server's request timeout of {timeout_ms:g} ms"
                ) from None
        else:
            outputs = await waiter
        return InferResponse(
            model_name=entry.name,
            model_version=entry.version,
            id=request.id,
            outputs=[
                OutputTensor(
                    name=name,
                    datatype=protocol_datatype(entry.output_names[name].dtype),
                    shape=outputs[name].shape,
                    data=outputs[name],
                    binary=binary,
                )
                for name, binary in wanted
            ],
        )

    def _feeds(self, entry: ModelVersion, request: InferRequest) -> dict[str, np.ndarray]:
        feeds: dict[str, np.ndarray] = {}
        for tensor in request.inputs:
            spec = entry.input_names.get(tensor.name)
            if spec is None:
                raise BadRequest(
                    f"model {entry.name!r} has no input {tensor.name!r}; its inputs: {', '.join(entry.input_names)}"
                )
            if tensor.name in feeds:
                raise BadRequest(f"input {tensor.name!r} is given twice")
            expected = protocol_datatype(spec.dtype)
            if tensor.datatype != expected:
                raise BadRequest(
                    f"input {tensor.name!r} of model {entry.name!r}: expected datatype {expected}, got {tensor.datatype}"
                )
            data = tensor.data
            if tensor.datatype == "BYTES":
                data = _as_text(data, tensor.name)
            feeds[tensor.name] = data
        missing = [name for name in entry.input_names if name not in feeds]
        if missing:
            raise BadRequest(
                f"model {entry.name!r} needs input(s) {', '.join(missing)}; the request gave "
                f"{', '.join(feeds) or 'none'}"
            )
        return feeds

    def _wanted(self, entry: ModelVersion, request: InferRequest) -> list[tuple[str, bool]]:
        if not request.outputs:
            return [(name, request.binary_output) for name in entry.output_names]
        wanted = []
        for output in request.outputs:
            if output.name not in entry.output_names:
                raise BadRequest(
                    f"model {entry.name!r} has no output {output.name!r}; its outputs: {', '.join(entry.output_names)}"
                )
            wanted.append((output.name, request.binary_output if output.binary is None else output.binary))
        return wanted


def _as_text(array: np.ndarray, name: str) -> np.ndarray:
    """BYTES from the wire (bytes objects) as the str objects edgecore's string inputs take."""
    flat = array.reshape(-1)
    out = np.empty(flat.shape, dtype=object)
    for i, item in enumerate(flat):
        if isinstance(item, bytes):
            try:
                item = item.decode()
            except UnicodeDecodeError:
                raise BadRequest(f"input {name!r}: element {i} is not UTF-8 text, as string inputs must be") from None
        out[i] = item
    return out.reshape(array.shape)
