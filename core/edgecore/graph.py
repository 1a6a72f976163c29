"""The model as edgecore holds it: an ``onnx_ir`` model, validated, with specs and a fingerprint.

``Graph.load`` accepts a path, bytes or an ``onnx.ModelProto`` (names such as ``"zoo:NAME"`` are
resolved a layer up, through the plugin manager: :func:`edgecore.selection.resolve_model`). It refuses, with
:class:`~edgecore.errors.ModelLoadError`, anything that is not a valid ONNX model, and any external
data that points outside the model's own folder (absolute paths, ``..`` escapes, symlinks) before a
single byte of it is read.

A Graph is treated as immutable once built: optimization passes work on a copy (``graph.copy()``)
and wrap the result in a new Graph, so the serialized bytes and fingerprint are computed once.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import os
from pathlib import Path
from typing import Any, Iterator, Union

import numpy as np
import onnx
import onnx.external_data_helper
import onnx_ir as ir
from google.protobuf.message import DecodeError

from edgecore.errors import ModelLoadError
from edgecore.tensor import DataType, Dim, TensorSpec

logger = logging.getLogger(__name__)

__all__ = ["Graph", "ModelSource"]

ModelSource = Union[str, os.PathLike, bytes, onnx.ModelProto, "Graph"]


def _dims(shape: ir.Shape | None) -> tuple[Dim, ...]:
    if shape is None:
        return ()
    dims: list[Dim] = []
    for dim in shape:
        if isinstance(dim, int):
            dims.append(dim)
        else:
            dims.append(dim.value)  # SymbolicDim: a name or None
    return tuple(dims)


def _spec(value: ir.Value) -> TensorSpec:
    elem = value.dtype
    if elem is None:
        raise ModelLoadError(f"model input/output {value.name!r} has no tensor element type")
    return TensorSpec(name=value.name or "", dtype=DataType.from_onnx(int(elem)), shape=_dims(value.shape))


def _tensors_of(graph: onnx.GraphProto) -> Iterator[onnx.TensorProto]:
    """Every TensorProto in a graph and its subgraphs (initializers and tensor attributes)."""
    yield from graph.initializer
    for sparse in graph.sparse_initializer:
        yield sparse.values
        yield sparse.indices
    for node in graph.node:
        for attr in node.attribute:
            if attr.HasField("t"):
                yield attr.t
            yield from attr.tensors
            if attr.HasField("g"):
                yield from _tensors_of(attr.g)
            for sub in attr.graphs:
                yield from _tensors_of(sub)


def _check_external_data(model: onnx.ModelProto, base_dir: Path | None, source: str) -> bool:
    """Refuse external data outside ``base_dir``; return whether the model has any."""
    found = False
    root = base_dir.resolve() if base_dir is not None else None
    for tensor in _tensors_of(model.graph):
        if tensor.data_location != onnx.TensorProto.EXTERNAL:
            continue
        found = True
        location = next((e.value for e in tensor.external_data if e.key == "location"), "")
        where = f"tensor {tensor.name!r} of {source} refers to external data {location!r}"
        if root is None:
            raise ModelLoadError(f"{where}, but the model was not loaded from a file; load it by path")
        if not location or os.path.isabs(location) or Path(location).drive:
            raise ModelLoadError(f"{where}: external data must be a relative path inside {root}")
        if ".." in Path(os.path.normpath(location)).parts or ".." in Path(location).parts:
            raise ModelLoadError(f"{where}: '..' escapes the model folder {root}")
        target = (root / location).resolve()
        if not target.is_relative_to(root):
            raise ModelLoadError(f"{where}: it resolves to {target}, outside the model folder {root}")
        if not target.is_file():
            raise ModelLoadError(f"{where}: no such file {target}")
    return found


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


class Graph:
    """A validated ONNX model held as ``onnx_ir``, with input/output specs and a fingerprint."""

    def __init__(self, model: ir.Model, *, source: str = "<memory>") -> None:
        self.model = model
        self.source = source
        graph_inputs = {v.name for v in model.graph.initializers.values()}
        self.inputs: tuple[TensorSpec, ...] = tuple(
            _spec(v) for v in model.graph.inputs if v.name not in graph_inputs
        )
        self.outputs: tuple[TensorSpec, ...] = tuple(_spec(v) for v in model.graph.outputs)

    # -- construction ------------------------------------------------------------------------------

    @classmethod
    def load(cls, source: ModelSource, *, check: bool = True) -> Graph:
        """Load, validate and shape-infer a model; raise :class:`ModelLoadError` with the reason."""
        if isinstance(source, Graph):
            return source
        base_dir: Path | None = None
        if isinstance(source, onnx.ModelProto):
            name, proto = "<ModelProto>", source
        elif isinstance(source, (bytes, bytearray, memoryview)):
            name, proto = "<bytes>", _parse(bytes(source), "the given bytes")
        elif isinstance(source, (str, os.PathLike)):
            path = Path(source)
            name, base_dir = str(path), path.parent
            if not path.exists():
                raise ModelLoadError(f"model file {path} does not exist")
            if not path.is_file():
                raise ModelLoadError(f"model path {path} is not a file")
            proto = _parse(path.read_bytes(), f"model file {path}")
        else:
            raise ModelLoadError(
                f"cannot load a model from {type(source).__name__}: give a path, bytes, an "
                f"onnx.ModelProto or a Graph (model names such as 'zoo:NAME' are resolved by Engine.load)"
            )
        if _check_external_data(proto, base_dir, name):
            proto = onnx.ModelProto.FromString(proto.SerializeToString())  # leave the caller's proto alone
            onnx.external_data_helper.load_external_data_for_model(proto, str(base_dir))
        return cls.from_proto(proto, source=name, check=check)

    @classmethod
    def from_proto(cls, proto: onnx.ModelProto, *, source: str = "<ModelProto>", check: bool = True) -> Graph:
        if check:
            try:
                onnx.checker.check_model(proto, full_check=True)
            except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError, ValueError) as exc:
                raise ModelLoadError(f"{source} failed ONNX validation: {exc}") from exc
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
