"""KServe v2 over gRPC: ``inference.GRPCInferenceService`` on grpc.aio, from the generated modules
that ``tritonclient`` ships (``tritonclient.grpc.service_pb2``/``service_pb2_grpc``; no protoc step).

Implemented: ServerLive, ServerReady, ServerMetadata, ModelReady, ModelMetadata, ModelConfig,
ModelStatistics, ModelInfer (``raw_input_contents`` or typed ``contents`` in; ``raw_output_contents``
out, as Triton answers), ModelStreamInfer (requests of one stream run concurrently; each response
carries its request's ``id``), RepositoryIndex, RepositoryModelLoad/Unload. The shared-memory, trace
and log-settings RPCs answer UNIMPLEMENTED.

Concurrency: every RPC runs on the server's event loop (the same loop as HTTP), so HTTP and gRPC
requests share the engines' dynamic batches.
"""

from __future__ import annotations

import asyncio
import hmac
import time
from typing import Any, AsyncIterator

import grpc
from google.protobuf import json_format
from tritonclient.grpc import model_config_pb2
from tritonclient.grpc import service_pb2 as pb
from tritonclient.grpc import service_pb2_grpc as pb_grpc

from edgecore_serve.protocol.datatypes import GRPC_CONTENTS_FIELD, numpy_dtype
from edgecore_serve.protocol.errors import BadRequest, NotImplemented_, Unauthorized, status_of
from edgecore_serve.protocol.tensors import (
    InferRequest,
    InferResponse,
    InputTensor,
    Limits,
    RequestedOutput,
    array_from_raw,
    array_from_values,
    check_shape,
    raw_bytes,
)
from edgecore_serve.service import InferenceService
from edgecore_serve.telemetry import ServerMetrics

__all__ = ["build_grpc_server", "decode_infer_request", "encode_infer_response"]

_now = time.perf_counter_ns
_OPEN = frozenset({"ServerLive", "ServerReady"})  # answered without a token


def decode_infer_request(request: pb.ModelInferRequest, limits: Limits) -> InferRequest:
    raw = request.raw_input_contents
    if raw and len(raw) != len(request.inputs):
        raise BadRequest(
            f"raw_input_contents has {len(raw)} entries for {len(request.inputs)} inputs; give one per input, in order"
        )
    if not request.inputs:
        raise BadRequest("the inference request has no inputs")
    inputs = []
    for position, tensor in enumerate(request.inputs):
        name = tensor.name
        numpy_dtype(tensor.datatype)
        shape = check_shape(list(tensor.shape), name, limits)
        if "shared_memory_region" in tensor.parameters:
            raise NotImplemented_(f"input {name!r}: the shared-memory extension is not supported by this server")
        if raw:
            data = array_from_raw(raw[position], tensor.datatype, shape, name)
        else:
            field = GRPC_CONTENTS_FIELD[tensor.datatype]
            if field is None:
                raise BadRequest(f"input {name!r}: {tensor.datatype} data must come in raw_input_contents")
            data = array_from_values(list(getattr(tensor.contents, field)), tensor.datatype, shape, name)
        inputs.append(InputTensor(name=name, datatype=tensor.datatype, shape=shape, data=data))
    outputs = []
    for output in request.outputs:
        if "classification" in output.parameters:
            raise NotImplemented_(f"output {output.name!r}: the classification extension is not supported")
        outputs.append(RequestedOutput(name=output.name))
    return InferRequest(
        model_name=request.model_name,
        model_version=request.model_version,
        id=request.id,
        inputs=inputs,
        outputs=outputs,
        binary_output=True,
    )


def encode_infer_response(response: InferResponse) -> pb.ModelInferResponse:
    message = pb.ModelInferResponse(
        model_name=response.model_name, model_version=response.model_version, id=response.id
    )
    for tensor in response.outputs:
        out = message.outputs.add()
        out.name, out.datatype = tensor.name, tensor.datatype
        out.shape.extend(tensor.shape)
        message.raw_output_contents.append(bytes(raw_bytes(tensor.data, tensor.datatype)))
    return message


class _Servicer(pb_grpc.GRPCInferenceServiceServicer):
    def __init__(self, service: InferenceService, *, token: str | None, metrics: ServerMetrics) -> None:
        self.service = service
        self.expected = f"Bearer {token}".encode() if token else None
        self.metrics = metrics

    # -- plumbing ----------------------------------------------------------------------------------

    def _check_token(self, context: grpc.aio.ServicerContext) -> None:
        if self.expected is None:
            return
        for key, value in context.invocation_metadata() or ():
            if key == "authorization":
                given = value.encode() if isinstance(value, str) else value
                if hmac.compare_digest(given, self.expected):
                    return
                break
        raise Unauthorized("this server needs the metadata 'authorization: Bearer <token>' on every RPC but health")

    async def _answer(self, method: str, context: grpc.aio.ServicerContext, work: Any) -> Any:
        started = time.perf_counter()
        code = "OK"
        try:
            if method not in _OPEN:
                self._check_token(context)
            return await work()
        except Exception as exc:
            _, code, message = status_of(exc)
            await context.abort(grpc.StatusCode[code], message)
        finally:
            self.metrics.observe("grpc", method, code, time.perf_counter() - started)

    # -- health and metadata -----------------------------------------------------------------------

    async def ServerLive(self, request: Any, context: Any) -> Any:
        async def work() -> Any:
            return pb.ServerLiveResponse(live=self.service.live())
        return await self._answer("ServerLive", context, work)

    async def ServerReady(self, request: Any, context: Any) -> Any:
        async def work() -> Any:
            return pb.ServerReadyResponse(ready=self.service.ready())
        return await self._answer("ServerReady", context, work)

    async def ServerMetadata(self, request: Any, context: Any) -> Any:
        async def work() -> Any:
            return json_format.ParseDict(self.service.server_metadata(), pb.ServerMetadataResponse())
        return await self._answer("ServerMetadata", context, work)

    async def ModelReady(self, request: Any, context: Any) -> Any:
        async def work() -> Any:
            return pb.ModelReadyResponse(ready=self.service.model_ready(request.name, request.version))
        return await self._answer("ModelReady", context, work)

    async def ModelMetadata(self, request: Any, context: Any) -> Any:
        async def work() -> Any:
            doc = await self.service.model_metadata(request.name, request.version)
            return json_format.ParseDict(doc, pb.ModelMetadataResponse())
        return await self._answer("ModelMetadata", context, work)

    async def ModelConfig(self, request: Any, context: Any) -> Any:
        async def work() -> Any:
            doc = await self.service.model_config(request.name, request.version)
            return pb.ModelConfigResponse(config=json_format.ParseDict(doc, model_config_pb2.ModelConfig()))
        return await self._answer("ModelConfig", context, work)

    async def ModelStatistics(self, request: Any, context: Any) -> Any:
        async def work() -> Any:
            doc = self.service.statistics(request.name, request.version)
            return json_format.ParseDict(doc, pb.ModelStatisticsResponse(), ignore_unknown_fields=True)
        return await self._answer("ModelStatistics", context, work)

    async def RepositoryIndex(self, request: Any, context: Any) -> Any:
        async def work() -> Any:
            rows = self.service.repository_index(request.ready)
            return pb.RepositoryIndexResponse(models=[pb.RepositoryIndexResponse.ModelIndex(**row) for row in rows])
        return await self._answer("RepositoryIndex", context, work)

    async def RepositoryModelLoad(self, request: Any, context: Any) -> Any:
        async def work() -> Any:
            await self.service.load(request.model_name)
            return pb.RepositoryModelLoadResponse()
        return await self._answer("RepositoryModelLoad", context, work)

    async def RepositoryModelUnload(self, request: Any, context: Any) -> Any:
        async def work() -> Any:
            await self.service.unload(request.model_name)
            return pb.RepositoryModelUnloadResponse()
        return await self._answer("RepositoryModelUnload", context, work)

    # -- inference ---------------------------------------------------------------------------------

    async def _infer(self, request: pb.ModelInferRequest) -> pb.ModelInferResponse:
        started = _now()
        self.service.check_model(request.model_name, request.model_version)
        try:
            decoded = decode_infer_request(request, self.service.limits)
        except Exception:
            self.service.count_failure(request.model_name, request.model_version, started)
            raise
        return encode_infer_response(await self.service.infer(decoded, started))

    async def ModelInfer(self, request: Any, context: Any) -> Any:
        return await self._answer("ModelInfer", context, lambda: self._infer(request))

    async def ModelStreamInfer(self, request_iterator: AsyncIterator[Any], context: Any) -> AsyncIterator[Any]:
        try:
            self._check_token(context)
        except Unauthorized as exc:
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, str(exc))
        answers: asyncio.Queue = asyncio.Queue()

        async def one(request: pb.ModelInferRequest) -> None:
            started = time.perf_counter()
            try:
                answer = pb.ModelStreamInferResponse(infer_response=await self._infer(request))
                code = "OK"
            except Exception as exc:
                _, code, message = status_of(exc)
                answer = pb.ModelStreamInferResponse(
                    error_message=message,
                    infer_response=pb.ModelInferResponse(
                        model_name=request.model_name, model_version=request.model_version, id=request.id
                    ),
                )
            self.metrics.observe("grpc", "ModelStreamInfer", code, time.perf_counter() - started)
            await answers.put(answer)

        async def read() -> None:
            tasks = set()
            try:
                async for request in request_iterator:
                    tasks.add(asyncio.ensure_future(one(request)))
            finally:
                if tasks:
                    await asyncio.gather(*tasks, return_exceptions=True)
                await answers.put(None)

        reader = asyncio.ensure_future(read())
        try:
            while (answer := await answers.get()) is not None:
                yield answer
        finally:
            if not reader.done():
                reader.cancel()


def build_grpc_server(
    service: InferenceService, *, host: str, port: int, token: str | None = None, metrics: ServerMetrics | None = None
) -> grpc.aio.Server:
    """A grpc.aio server with the inference service bound to ``host:port`` (not started)."""
    limit = max(service.limits.max_body_bytes, 4 << 20)
    server = grpc.aio.server(options=[
        ("grpc.max_receive_message_length", limit),
        ("grpc.max_send_message_length", -1),
    ])
    pb_grpc.add_GRPCInferenceServiceServicer_to_server(
        _Servicer(service, token=token, metrics=metrics or ServerMetrics()), server
    )
    address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    bound = server.add_insecure_port(address)
    if not bound:
        raise OSError(f"cannot listen for gRPC on {address}")
    return server
