"""KServe v2 / Open Inference Protocol, framework-free: datatypes, tensors to and from the wire,
the HTTP codec (JSON and binary tensors, compression), metadata/config/statistics documents, and
errors with their HTTP and gRPC status.

Nothing in this package imports a web or RPC framework, so any front end (Starlette, gRPC, Ray
Serve) can reuse it.
"""

from edgecore_serve.protocol.datatypes import (
    DATATYPES,
    GRPC_CONTENTS_FIELD,
    TRITON_CONFIG_TYPE,
    datatype_of,
    edgecore_type,
    numpy_dtype,
    protocol_datatype,
)
from edgecore_serve.protocol.errors import (
    BadRequest,
    NotFound,
    NotImplemented_,
    PayloadTooLarge,
    ServeError,
    Unauthorized,
    Unavailable,
    error_body,
    status_of,
)
from edgecore_serve.protocol.tensors import (
    InferRequest,
    InferResponse,
    InputTensor,
    Limits,
    OutputTensor,
    RequestedOutput,
    array_from_json,
    array_from_raw,
    array_from_values,
    check_shape,
    deserialize_bytes,
    json_data,
    raw_bytes,
    serialize_bytes,
)

__all__ = [
    "DATATYPES",
    "GRPC_CONTENTS_FIELD",
    "TRITON_CONFIG_TYPE",
    "BadRequest",
    "InferRequest",
    "InferResponse",
    "InputTensor",
    "Limits",
    "NotFound",
    "NotImplemented_",
    "OutputTensor",
    "PayloadTooLarge",
    "RequestedOutput",
    "ServeError",
    "Unauthorized",
    "Unavailable",
    "array_from_json",
    "array_from_raw",
    "array_from_values",
    "check_shape",
    "datatype_of",
    "deserialize_bytes",
    "edgecore_type",
    "error_body",
    "json_data",
    "numpy_dtype",
    "protocol_datatype",
    "raw_bytes",
    "serialize_bytes",
    "status_of",
]
