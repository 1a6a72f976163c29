"""Judging an ONNX model as the runtimes judge it, on the proto and without its weights: parsing,
``onnx.checker`` with full shape inference, and what runtimes read differently from onnx (negative
dims, shapeless inputs and outputs, IR < 4 initializers, shape inference failing inside a standard
operator's function body). Used by :class:`edgecore.graph.Graph` when it loads a model; raises
:class:`~edgecore.errors.ModelLoadError` naming the source and what is wrong.
"""

from __future__ import annotations

import logging
import re
from typing import TYPE_CHECKING, Any, Iterator

from edgecore.errors import ModelLoadError
from edgecore.modelfile import all_tensors

if TYPE_CHECKING:
    import onnx

logger = logging.getLogger(__name__)

__all__ = ["parse_model", "validate", "normalized", "weightless_for_checks", "external_tensors", "check_io_types"]


def parse_model(data: bytes, source: str) -> onnx.ModelProto:
    import onnx
    from google.protobuf.message import DecodeError

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
    import onnx

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


def normalized(proto: onnx.ModelProto) -> onnx.ModelProto:
    """``proto``, or a copy with what runtimes read differently from onnx made explicit: a negative
    ``dim_value`` (exporters write -1) becomes an unknown dim, as ONNX Runtime reads any negative
    size; an IR < 4 model's initializers are listed as graph inputs, as the checker wants."""
    import onnx

    if not _negative_dims(proto) and not _unlisted_initializers(proto):
        return proto
    copy = onnx.ModelProto()
    copy.CopyFrom(proto)
    for dim in _negative_dims(copy):
        dim.ClearField("dim_value")
    for tensor in _unlisted_initializers(copy):
        copy.graph.input.append(onnx.helper.make_tensor_value_info(tensor.name, tensor.data_type, tensor.dims))
    return copy


def weightless_for_checks(proto: onnx.ModelProto, entries: list, source: str) -> onnx.ModelProto:
    """``proto`` as ``onnx.checker`` can judge it without its weights: the checker looks for external
    data files relative to the working directory, so main-graph initializers held externally become
    graph inputs of their type and shape (their values are not needed to check or infer shapes; small
    constants such as Reshape targets stay inline), and the rare external tensor elsewhere
    (subgraphs, attributes) is read in."""
    import onnx

    if not entries:
        return proto
    copy = onnx.ModelProto()
    copy.CopyFrom(proto)  # weightless: cheap
    listed = {value.name for value in copy.graph.input}
    kept = []
    for tensor in copy.graph.initializer:
        if tensor.data_location != onnx.TensorProto.EXTERNAL:
            kept.append(tensor)
        elif tensor.name not in listed:
            copy.graph.input.append(onnx.helper.make_tensor_value_info(tensor.name, tensor.data_type, tensor.dims))
    if len(kept) != len(copy.graph.initializer):
        del copy.graph.initializer[:]
        copy.graph.initializer.extend(kept)
    by_name = {entry.tensor.name: entry for entry in entries}
    for tensor in list(external_tensors(copy)):  # outside the main graph's initializers
        tensor.raw_data = by_name[tensor.name].read(source)
        del tensor.external_data[:]
        tensor.data_location = onnx.TensorProto.DEFAULT
    return copy


def external_tensors(model: onnx.ModelProto) -> Iterator[onnx.TensorProto]:
    import onnx

    return (t for t in all_tensors(model) if t.data_location == onnx.TensorProto.EXTERNAL)


def _check_structure(proto: onnx.ModelProto) -> None:
    """``onnx.checker`` without inference; shapeless main-graph values get a placeholder shape for
    it (the checker requires one; runtimes read none as any rank)."""
    import onnx

    shapeless = _shapeless(proto)
    if not shapeless:
        onnx.checker.check_model(proto, full_check=False)
        return
    patched = onnx.ModelProto()
    patched.CopyFrom(proto)
    for value in _shapeless(patched):
        value.type.tensor_type.shape.SetInParent()
    onnx.checker.check_model(patched, full_check=False)


def validate(proto: onnx.ModelProto, source: str) -> None:
    """``onnx.checker`` with full shape inference on a :func:`normalized` model, as runtimes judge
    a model, except for what the checker refuses and ONNX Runtime runs:

    * a missing shape on a main-graph input or output (any rank);
    * a negative size other than -1, or one where inference finds a fixed size (any size);
    * an IR < 4 model whose initializers are not also listed as graph inputs;
    * a shape-inference error inside the *function body* of a standard operator (onnx expands
      e.g. MeanVarianceNormalization-13 into a body its own inference rejects); runtimes have a
      kernel for the operator and never expand it. Logged, not raised.
    """
    import onnx

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


def check_io_types(model: onnx.ModelProto, source: str) -> None:
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
