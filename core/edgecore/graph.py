"""The model as edgecore holds it: an ``onnx_ir`` model, validated, with specs and a fingerprint.

``Graph.load`` accepts a path, bytes or an ``onnx.ModelProto`` (names such as ``"zoo:NAME"`` are
resolved a layer up, through the plugin manager: :func:`edgecore.selection.resolve_model`). It
refuses, with :class:`~edgecore.errors.ModelLoadError` naming the file and the tensor or value at
fault, anything the runtimes would refuse: a file that is not an ONNX model, a graph that fails
``onnx.checker`` or has no outputs, external data that points outside the model's own folder
(absolute paths, ``..`` escapes, symlinks) or is described wrongly (a NUL byte in its path, an
offset or length that is not a non-negative number or runs past the end of its file). It is no
stricter than the runtimes: inputs and outputs without a shape are accepted (their
:class:`~edgecore.tensor.TensorSpec` has ``shape=None``, any rank), as ONNX Runtime runs them.

:class:`LoadLimits` bound what loading may read and allocate (file size, external data, elements a
tensor claims); they are checked before anything is read or allocated, so a hostile file costs a
``stat`` and a parse, never memory. Defaults come from the environment (``EDGECORE_MAX_MODEL_BYTES``,
``EDGECORE_MAX_EXTERNAL_DATA_BYTES``, ``EDGECORE_MAX_TENSOR_ELEMENTS``).

A Graph is treated as immutable once built: optimization passes work on a copy (``graph.copy()``)
and wrap the result in a new Graph, so the serialized bytes and fingerprint are computed once.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import math
import os
import re
from pathlib import Path
from typing import Any, Iterator, Mapping, Union

import attrs
import numpy as np
import onnx
import onnx_ir as ir
from google.protobuf.message import DecodeError

from edgecore.errors import ConfigurationError, ModelLoadError
from edgecore.tensor import DataType, Dim, TensorSpec

logger = logging.getLogger(__name__)

__all__ = ["Graph", "LoadLimits", "ModelSource"]

ModelSource = Union[str, os.PathLike, bytes, onnx.ModelProto, "Graph"]

_PROTOBUF_LIMIT = 2 << 30  # protobuf cannot parse a message of 2 GiB or more


# -- limits ----------------------------------------------------------------------------------------


def _positive(instance: Any, attribute: attrs.Attribute, value: int | None) -> None:
    if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value <= 0):
        raise ConfigurationError(f"LoadLimits.{attribute.name} must be a positive whole number, got {value!r}")


@attrs.frozen(kw_only=True)
class LoadLimits:
    """Bounds on what :meth:`Graph.load` reads and allocates, checked before it does.

    ``max_model_bytes``: the ``.onnx`` file (or bytes) itself; protobuf cannot parse 2 GiB or more.
    ``max_external_data_bytes``: external data of all tensors together (None: the machine's memory).
    ``max_tensor_elements``: elements any one tensor (initializer, constant) may claim by its dims.
    """

    max_model_bytes: int = attrs.field(default=_PROTOBUF_LIMIT, validator=_positive)
    max_external_data_bytes: int | None = attrs.field(default=None, validator=_positive)
    max_tensor_elements: int = attrs.field(default=1 << 32, validator=_positive)

    #: field -> environment variable that overrides its default
    ENV = {
        "max_model_bytes": "EDGECORE_MAX_MODEL_BYTES",
        "max_external_data_bytes": "EDGECORE_MAX_EXTERNAL_DATA_BYTES",
        "max_tensor_elements": "EDGECORE_MAX_TENSOR_ELEMENTS",
    }

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> LoadLimits:
        """The defaults, overridden by ``EDGECORE_MAX_*`` variables that are set (whole numbers)."""
        environ = os.environ if environ is None else environ
        values = {}
        for field, variable in cls.ENV.items():
            raw = environ.get(variable, "").strip().replace("_", "")
            if not raw:
                continue
            if not raw.isdigit():
                raise ConfigurationError(f"{variable} must be a positive whole number of bytes/elements, got {raw!r}")
            values[field] = int(raw)
        return cls(**values)

    def external_data_bytes(self) -> int:
        if self.max_external_data_bytes is not None:
            return self.max_external_data_bytes
        import psutil

        return int(psutil.virtual_memory().total)


def _over(what: str, size: int, limit: int, field: str) -> ModelLoadError:
    return ModelLoadError(
        f"{what} is {size:,} bytes, over the limit of {limit:,} (LoadLimits.{field}, "
        f"environment {LoadLimits.ENV[field]})"
    )


# -- specs -----------------------------------------------------------------------------------------


def _dims(shape: ir.Shape | None) -> tuple[Dim, ...] | None:
    """The dims of ``shape`` (None: no shape recorded, any rank). ``-1`` and ``""`` become None in
    :class:`TensorSpec`."""
    if shape is None:
        return None
    return tuple(dim if isinstance(dim, int) else dim.value for dim in shape)  # SymbolicDim: name or None


def _spec(value: ir.Value, role: str) -> TensorSpec:
    elem = value.dtype
    if elem is None or (value.type is not None and not isinstance(value.type, ir.TensorType)):
        kind = value.type if value.type is not None else "no type"
        raise ModelLoadError(
            f"model {role} {value.name!r} is not a tensor ({kind}); edgecore takes and returns tensors only"
        )
    try:
        dtype = DataType.from_onnx(int(elem))
    except Exception as exc:
        raise ModelLoadError(f"model {role} {value.name!r}: {exc}") from exc
    return TensorSpec(name=value.name or "", dtype=dtype, shape=_dims(value.shape))


# -- tensors, their claimed sizes and external data ------------------------------------------------


def _tensors_of(graph: onnx.GraphProto) -> Iterator[onnx.TensorProto]:
    """Every TensorProto in a graph and its subgraphs (initializers and tensor attributes)."""
    yield from graph.initializer
    for sparse in graph.sparse_initializer:
        yield sparse.values
        yield sparse.indices
    yield from _node_tensors(graph.node)


def _node_tensors(nodes: Any) -> Iterator[onnx.TensorProto]:
    for node in nodes:
        for attr in node.attribute:
            if attr.HasField("t"):
                yield attr.t
            yield from attr.tensors
            if attr.HasField("sparse_tensor"):
                yield attr.sparse_tensor.values
                yield attr.sparse_tensor.indices
            if attr.HasField("g"):
                yield from _tensors_of(attr.g)
            for sub in attr.graphs:
                yield from _tensors_of(sub)


def _all_tensors(model: onnx.ModelProto) -> Iterator[onnx.TensorProto]:
    yield from _tensors_of(model.graph)
    for function in model.functions:
        yield from _node_tensors(function.node)


def _nbytes(tensor: onnx.TensorProto, elements: int) -> int | None:
    """Bytes ``elements`` of ``tensor``'s type take in raw form (None: not a fixed-size type)."""
    try:
        dtype = DataType(tensor.data_type)
    except ValueError:
        return None
    if dtype in (DataType.UINT4, DataType.INT4, DataType.FLOAT4E2M1):
        return (elements + 1) // 2
    if dtype == DataType.STRING:
        return None
    return elements * dtype.numpy.itemsize


def _check_tensor_sizes(model: onnx.ModelProto, source: str, limits: LoadLimits) -> None:
    """Refuse tensors whose dims are negative or claim more than ``max_tensor_elements``."""
    for tensor in _all_tensors(model):
        dims = list(tensor.dims)
        if any(d < 0 for d in dims):
            raise ModelLoadError(f"tensor {tensor.name!r} of {source} has negative dims {dims}")
        elements = math.prod(dims)
        if elements > limits.max_tensor_elements:
            raise ModelLoadError(
                f"tensor {tensor.name!r} of {source} claims {elements:,} elements (dims {dims}), over the "
                f"limit of {limits.max_tensor_elements:,} (LoadLimits.max_tensor_elements, environment "
                f"{LoadLimits.ENV['max_tensor_elements']})"
            )


def _entry_int(tensor: onnx.TensorProto, where: str, key: str, value: str | None) -> int | None:
    if value is None:
        return None
    if not (value.isascii() and value.isdigit()) or len(value) > 19:
        raise ModelLoadError(f"{where}: external data {key} must be a non-negative whole number, got {value[:40]!r}")
    return int(value)


@attrs.frozen
class _External:
    tensor: onnx.TensorProto
    target: Path
    offset: int
    length: int


def _external_entry(tensor: onnx.TensorProto, root: Path | None, source: str) -> _External:
    """Where ``tensor``'s external data lies, checked: inside ``root``, within its file, as long as
    its dims say."""
    entries = {e.key: e.value for e in tensor.external_data}
    location = entries.get("location", "")
    where = f"tensor {tensor.name!r} of {source} refers to external data {location[:200]!r}"
    if root is None:
        raise ModelLoadError(f"{where}, but the model was not loaded from a file; load it by path")
    if "\0" in location:
        raise ModelLoadError(f"{where}: the location holds a NUL byte")
    offset = _entry_int(tensor, where, "offset", entries.get("offset")) or 0
    length = _entry_int(tensor, where, "length", entries.get("length"))
    if not location or os.path.isabs(location) or Path(location).drive:
        raise ModelLoadError(f"{where}: external data must be a relative path inside {root}")
    if ".." in Path(os.path.normpath(location)).parts or ".." in Path(location).parts:
        raise ModelLoadError(f"{where}: '..' escapes the model folder {root}")
    try:
        target = (root / location).resolve()
        if not target.is_relative_to(root):
            raise ModelLoadError(f"{where}: it resolves to {target}, outside the model folder {root}")
        if not target.is_file():
            raise ModelLoadError(f"{where}: no such file {target}")
        size = target.stat().st_size
    except (OSError, RuntimeError, ValueError) as exc:  # too long a name, a symlink loop, ...
        raise ModelLoadError(f"{where}: cannot read it: {exc}") from exc
    if length is None:
        length = max(size - offset, 0)
    if offset + length > size:
        raise ModelLoadError(
            f"{where}: offset {offset:,} + length {length:,} runs past the end of {target} ({size:,} bytes)"
        )
    expected = _nbytes(tensor, math.prod(tensor.dims))
    if expected is not None and length < expected:
        raise ModelLoadError(
            f"{where}: length {length:,} is too small for dims {list(tensor.dims)} "
            f"({expected:,} bytes of {onnx.TensorProto.DataType.Name(tensor.data_type)})"
        )
    return _External(tensor, target, offset, length)


def _load_external_data(model: onnx.ModelProto, base_dir: Path | None, source: str, limits: LoadLimits) -> None:
    """Check every external data entry (all of them, before reading any), then read them in."""
    root = base_dir.resolve() if base_dir is not None else None
    entries = [
        _external_entry(tensor, root, source)
        for tensor in _all_tensors(model)
        if tensor.data_location == onnx.TensorProto.EXTERNAL
    ]
    if not entries:
        return
    total, limit = sum(e.length for e in entries), limits.external_data_bytes()
    if total > limit:
        raise _over(f"the external data of {source}", total, limit, "max_external_data_bytes")
    for entry in entries:
        with open(entry.target, "rb") as file:
            file.seek(entry.offset)
            data = file.read(entry.length)
        if len(data) != entry.length:
            raise ModelLoadError(f"tensor {entry.tensor.name!r} of {source}: {entry.target} changed while read")
        entry.tensor.raw_data = data
        entry.tensor.data_location = onnx.TensorProto.DEFAULT
        del entry.tensor.external_data[:]


# -- parsing and validation ------------------------------------------------------------------------


def _parse(data: bytes, source: str) -> onnx.ModelProto:
    if not data:
        raise ModelLoadError(f"{source} is empty: expected an ONNX model")
    try:
        model = onnx.load_model_from_string(data)
    except (DecodeError, RuntimeError, ValueError) as exc:
        raise ModelLoadError(f"{source} is not an ONNX model (truncated or another format): {exc}") from exc
    if not model.HasField("graph") or (not model.graph.node and not model.graph.output):
        raise ModelLoadError(f"{source} is not an ONNX model: it parsed, but holds no graph")
    return model


def _shapeless(model: onnx.ModelProto) -> list[onnx.ValueInfoProto]:
    """Main-graph tensor values whose type records no shape (any rank)."""
    graph = model.graph
    return [
        value
        for value in (*graph.input, *graph.output, *graph.value_info)
        if value.type.HasField("tensor_type") and not value.type.tensor_type.HasField("shape")
    ]


_FUNCTION_BODY_ERROR = re.compile(r"\(op_type:(\w+)[^)]*\): \[ShapeInferenceError\] Inference error\(s\): \(op_type:")


def _expands_to_function(model: onnx.ModelProto, op_type: str) -> bool:
    """Whether ``op_type`` is a standard operator without subgraphs that onnx defines by a function body."""
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    try:
        schema = onnx.defs.get_schema(op_type, opset, "")
    except Exception:
        return False
    graph_types = (onnx.defs.OpSchema.AttrType.GRAPH, onnx.defs.OpSchema.AttrType.GRAPHS)
    has_graph = any(a.type in graph_types for a in schema.attributes.values())
    return (schema.has_function or schema.has_context_dependent_function) and not has_graph


def _unlisted_initializers(model: onnx.ModelProto) -> list[onnx.TensorProto]:
    """Initializers an IR < 4 model does not list as graph inputs (the checker wants them listed)."""
    if model.ir_version >= 4:
        return []
    listed = {value.name for value in model.graph.input}
    return [tensor for tensor in model.graph.initializer if tensor.name not in listed]


def _value_infos(graph: onnx.GraphProto) -> Iterator[onnx.ValueInfoProto]:
    """Every value info of ``graph`` and its subgraphs."""
    yield from graph.input
    yield from graph.output
    yield from graph.value_info
    for node in graph.node:
        for attr in node.attribute:
            if attr.HasField("g"):
                yield from _value_infos(attr.g)
            for sub in attr.graphs:
                yield from _value_infos(sub)


def _negative_dims(model: onnx.ModelProto) -> list[Any]:
    return [
        dim
        for value in _value_infos(model.graph)
        if value.type.HasField("tensor_type")
        for dim in value.type.tensor_type.shape.dim
        if dim.HasField("dim_value") and dim.dim_value < 0
    ]


def _normalized(proto: onnx.ModelProto) -> onnx.ModelProto:
    """``proto``, or a copy with what runtimes read differently from onnx made explicit: a negative
    ``dim_value`` (exporters write -1) becomes an unknown dim, as ONNX Runtime reads any negative
    size; an IR < 4 model's initializers are listed as graph inputs, as the checker wants."""
    if not _negative_dims(proto) and not _unlisted_initializers(proto):
        return proto
    copy = onnx.ModelProto()
    copy.CopyFrom(proto)
    for dim in _negative_dims(copy):
        dim.ClearField("dim_value")
    for tensor in _unlisted_initializers(copy):
        copy.graph.input.append(onnx.helper.make_tensor_value_info(tensor.name, tensor.data_type, tensor.dims))
    return copy


def _check_structure(proto: onnx.ModelProto) -> None:
    """``onnx.checker`` without inference; shapeless main-graph values get a placeholder shape for
    it (the checker requires one; runtimes read none as any rank)."""
    shapeless = _shapeless(proto)
    if not shapeless:
        onnx.checker.check_model(proto, full_check=False)
        return
    patched = onnx.ModelProto()
    patched.CopyFrom(proto)
    for value in _shapeless(patched):
        value.type.tensor_type.shape.SetInParent()
    onnx.checker.check_model(patched, full_check=False)


def _validate(proto: onnx.ModelProto, source: str) -> None:
    """``onnx.checker`` with full shape inference on a :func:`_normalized` model, as runtimes judge
    a model, except for what the checker refuses and ONNX Runtime runs:

    * a missing shape on a main-graph input or output (any rank);
    * a negative size other than -1, or one where inference finds a fixed size (any size);
    * an IR < 4 model whose initializers are not also listed as graph inputs;
    * a shape-inference error inside the *function body* of a standard operator (onnx expands
      e.g. MeanVarianceNormalization-13 into a body its own inference rejects); runtimes have a
      kernel for the operator and never expand it. Logged, not raised.
    """
    try:
        _check_structure(proto)
    except (onnx.checker.ValidationError, ValueError) as exc:
        raise ModelLoadError(f"{source} failed ONNX validation: {exc}") from exc
    try:
        onnx.shape_inference.infer_shapes(proto, check_type=True, strict_mode=True)
    except (onnx.shape_inference.InferenceError, onnx.checker.ValidationError, ValueError) as exc:
        inside = _FUNCTION_BODY_ERROR.search(str(exc))
        if inside and _expands_to_function(proto, inside.group(1)):
            logger.warning(
                "%s: onnx's shape inference fails inside the function body of %s (%s); runtimes run the "
                "operator's own kernel, so the model is accepted", source, inside.group(1), " ".join(str(exc).split())
            )
            return
        raise ModelLoadError(f"{source} failed ONNX validation: {exc}") from exc


def _check_io_types(model: onnx.ModelProto, source: str) -> None:
    """Refuse main-graph inputs and outputs that are not tensors (sequences, maps, optionals): the
    runtimes take them, edgecore's requests and results hold tensors only."""
    for role, values in (("input", model.graph.input), ("output", model.graph.output)):
        for value in values:
            kind = value.type.WhichOneof("value")
            if kind not in (None, "tensor_type"):
                raise ModelLoadError(
                    f"{source}: model {role} {value.name!r} is a {kind.replace('_type', '')}, not a tensor; "
                    f"edgecore takes and returns tensors only"
                )


class Graph:
    """A validated ONNX model held as ``onnx_ir``, with input/output specs and a fingerprint."""

    def __init__(self, model: ir.Model, *, source: str = "<memory>") -> None:
        self.model = model
        self.source = source
        graph_inputs = {v.name for v in model.graph.initializers.values()}
        self.inputs: tuple[TensorSpec, ...] = tuple(
            _spec(v, "input") for v in model.graph.inputs if v.name not in graph_inputs
        )
        self.outputs: tuple[TensorSpec, ...] = tuple(_spec(v, "output") for v in model.graph.outputs)
        if not self.outputs:
            raise ModelLoadError(f"{source} has no outputs: a model must produce at least one output to be run")

    # -- construction ------------------------------------------------------------------------------

    @classmethod
    def load(cls, source: ModelSource, *, check: bool = True, limits: LoadLimits | None = None) -> Graph:
        """Load, validate and shape-infer a model; raise :class:`ModelLoadError` with the reason.

        ``limits`` bound what is read and allocated (default: :meth:`LoadLimits.from_env`); they
        hold with ``check=False`` too, which skips ``onnx.checker`` only.
        """
        if isinstance(source, Graph):
            return source
        limits = LoadLimits.from_env() if limits is None else limits
        base_dir: Path | None = None
        if isinstance(source, onnx.ModelProto):
            name, proto = "<ModelProto>", source
            size = proto.ByteSize()
            if size > limits.max_model_bytes:
                raise _over(f"the model {name}", size, limits.max_model_bytes, "max_model_bytes")
        elif isinstance(source, (bytes, bytearray, memoryview)):
            name = "the given bytes"
            if len(source) > limits.max_model_bytes:
                raise _over(name, len(source), limits.max_model_bytes, "max_model_bytes")
            name, proto = "<bytes>", _parse(bytes(source), name)
        elif isinstance(source, (str, os.PathLike)):
            path = Path(source)
            name, base_dir = str(path), path.parent
            try:
                if not path.exists():
                    raise ModelLoadError(f"model file {path} does not exist")
                if not path.is_file():
                    raise ModelLoadError(f"model path {path} is not a file")
                size = path.stat().st_size
                if size > limits.max_model_bytes:
                    raise _over(f"model file {path}", size, limits.max_model_bytes, "max_model_bytes")
                data = path.read_bytes()
            except (OSError, ValueError) as exc:  # unreadable, a NUL in the path, ...
                raise ModelLoadError(f"cannot read model file {str(path)[:200]!r}: {exc}") from exc
            proto = _parse(data, f"model file {path}")
            del data
        else:
            raise ModelLoadError(
                f"cannot load a model from {type(source).__name__}: give a path, bytes, an "
                f"onnx.ModelProto or a Graph (model names such as 'zoo:NAME' are resolved by Engine.load)"
            )
        _check_tensor_sizes(proto, name, limits)
        _load_external_data(proto, base_dir, name, limits)  # only a path's own proto is filled in
        return cls.from_proto(proto, source=name, check=check)

    @classmethod
    def from_proto(cls, proto: onnx.ModelProto, *, source: str = "<ModelProto>", check: bool = True) -> Graph:
        _check_io_types(proto, source)
        if check:
            _validate(_normalized(proto), source)  # the model itself keeps its -1s: specs read them as None
        try:
            inferred = onnx.shape_inference.infer_shapes(proto, data_prop=True)
        except Exception as exc:  # shape inference is a help, not a requirement
            logger.debug("shape inference failed for %s: %r", source, exc)
            inferred = proto
        try:
            model = ir.from_proto(inferred)
        except Exception as exc:
            raise ModelLoadError(f"{source} could not be read into onnx_ir: {exc}") from exc
        return cls(model, source=source)
    def copy(self) -> ir.Model:
        """A deep copy of the ``onnx_ir`` model, for passes to change."""
        return ir.from_proto(self.to_proto())

    # -- derived facts -----------------------------------------------------------------------------

    @property
    def name(self) -> str:
        return self.model.graph.name or Path(self.source).stem

    def to_proto(self) -> onnx.ModelProto:
        return ir.to_proto(self.model)

    @functools.cached_property
    def _bytes(self) -> bytes:
        return self.to_proto().SerializeToString()

    def to_bytes(self) -> bytes:
        """The serialized model, as backends take it (computed once)."""
        return self._bytes

    def release_serialized(self) -> None:
        """Drop the cached serialized bytes (a full copy of the weights) once backends have compiled;
        they are rebuilt on the next :meth:`to_bytes`."""
        self.__dict__.pop("_bytes", None)

    @functools.cached_property
    def fingerprint(self) -> str:
        """SHA-256 of the serialized model: equal models share compiled artifacts and caches."""
        return hashlib.sha256(self._bytes).hexdigest()

    @property
    def opset(self) -> int:
        return self.model.opset_imports.get("", 0)

    def op_types(self) -> set[tuple[str, str]]:
        """``(domain, op_type)`` of every node, subgraphs included."""
        return {(node.domain or "", node.op_type) for node in ir.traversal.RecursiveGraphIterator(self.model.graph)}

    @property
    def num_nodes(self) -> int:
        return sum(1 for _ in ir.traversal.RecursiveGraphIterator(self.model.graph))

    @property
    def num_parameters(self) -> int:
        """Elements held by floating-point initializers."""
        total = 0
        for value in self.model.graph.initializers.values():
            if value.const_value is not None and value.dtype is not None and value.dtype.is_floating_point():
                total += int(np.prod(value.const_value.shape.numpy()))
        return total

    def input_spec(self, name: str) -> TensorSpec:
        for spec in self.inputs:
            if spec.name == name:
                return spec
        raise KeyError(name)

    def __repr__(self) -> str:
        ins = ", ".join(f"{s.name}: {s.describe()}" for s in self.inputs)
        outs = ", ".join(f"{s.name}: {s.describe()}" for s in self.outputs)
        return f"Graph({self.name!r}, inputs=[{ins}], outputs=[{outs}], nodes={self.num_nodes})"


def describe_source(source: Any) -> str:
    if isinstance(source, (str, os.PathLike)):
        return str(source)
    return f"<{type(source).__name__}>"
