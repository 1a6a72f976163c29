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

Weightless: checks and shape inference run on the model *without* its weights. External data stays
on disk (``onnx_ir`` maps it lazily, the runtimes map it themselves); a model with large inline
weights (a file, bytes or a proto holding :data:`~edgecore.modelfile.INLINE_MAX` bytes or more) is
converted once into the artifact cache (``cache_dir``, default ``$EDGECORE_CACHE_DIR`` or
``~/.cache/edgecore``) as ``model.onnx`` + ``model.data`` and loaded from there. Backends take
:meth:`Graph.runtime_model` -- a path whose external data lies beside it, or the serialized bytes of a
small model -- never a serialized copy of large weights. See :mod:`edgecore.modelfile`.

:class:`LoadLimits` bound what loading may read and allocate (file size, external data, elements a
tensor claims); they are checked before anything is read or allocated, so a hostile file costs a
``stat`` and a parse, never memory. Defaults come from the environment (``EDGECORE_MAX_MODEL_BYTES``,
``EDGECORE_MAX_EXTERNAL_DATA_BYTES``, ``EDGECORE_MAX_TENSOR_ELEMENTS``).

A Graph is treated as immutable once built: optimization passes work on a copy (``graph.copy()``,
weights read in) and wrap the result in a new Graph. The one change a Graph makes to itself is
:meth:`runtime_model` moving an in-memory graph's large weights into the artifact cache (under
``_lock``), after which its ``onnx_ir`` model maps them from there.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import os
import sys
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any, Union

import numpy as np

from edgecore.loadcache import LoadMemo, Remembered, artifact_cache, conversion_key
from edgecore.errors import ModelLoadError
from edgecore.modelfile import (
    INLINE_MAX,
    MODEL_FILE,
    LoadLimits,
    check_external_data,
    check_tensor_sizes,
    content_digest,
    externalize,
    file_digest,
    inline_weight_bytes,
    over_limit,
    restore_inline,
)
from edgecore.tensor import DataType, TensorSpec, Dim
from edgecore.validation import check_io_types, external_tensors, normalized, parse_model, validate, weightless_for_checks

if TYPE_CHECKING:  # imported where a model is read: a start from cached metadata needs neither
    import onnx
    import onnx_ir as ir

logger = logging.getLogger(__name__)

__all__ = ["Graph", "LoadLimits", "ModelSource"]

ModelSource = Union[str, os.PathLike, bytes, "onnx.ModelProto", "Graph"]

def _is_proto(source: Any) -> bool:
    onnx = sys.modules.get("onnx")  # a ModelProto exists only once onnx is imported
    return onnx is not None and isinstance(source, onnx.ModelProto)


# -- specs -----------------------------------------------------------------------------------------


def _dims(shape: ir.Shape | None) -> tuple[Dim, ...] | None:
    """The dims of ``shape`` (None: no shape recorded, any rank). ``-1`` and ``""`` become None in
    :class:`TensorSpec`."""
    if shape is None:
        return None
    return tuple(dim if isinstance(dim, int) else dim.value for dim in shape)  # SymbolicDim: name or None


def _spec(value: ir.Value, role: str) -> TensorSpec:
    import onnx_ir as ir

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


class Graph:
    """A validated ONNX model held as ``onnx_ir``, with input/output specs and a fingerprint.

    ``path``: the ``.onnx`` file holding exactly this model (external data beside it), when there
    is one; the graph's large weights are then mapped from it, not held.
    """

    def __init__(
        self, model: ir.Model, *, source: str = "<memory>", path: Path | None = None
    ) -> None:
        self._setup(source, path)
        self.model = model
        graph_inputs = {v.name for v in model.graph.initializers.values()}
        self.inputs: tuple[TensorSpec, ...] = tuple(
            _spec(v, "input") for v in model.graph.inputs if v.name not in graph_inputs
        )
        self.outputs: tuple[TensorSpec, ...] = tuple(_spec(v, "output") for v in model.graph.outputs)
        if not self.outputs:
            raise ModelLoadError(f"{source} has no outputs: a model must produce at least one output to be run")

    def _setup(self, source: str, path: Path | None) -> None:
        self._model: ir.Model | None = None
        self._facts: dict[str, Any] | None = None  # what a start from cached metadata knows without the model
        self._conversion: str | None = None  # the source digest, for a model converted into the artifact cache
        self._pin: Any = None  # keeps that cache entry from being trimmed while this graph lives
        self.source = source
        self.path = path
        #: the artifact cache's folder this graph was loaded with (None: the default)
        self.cache_dir: str | os.PathLike | None = None
        self._lock = threading.Lock()
        self._model_lock = threading.Lock()

    @property
    def model(self) -> ir.Model:
        """The ``onnx_ir`` model; a graph started from cached metadata reads it from :attr:`path`
        on first use (weights stay mapped)."""
        if self._model is None:
            with self._model_lock:
                if self._model is None:
                    self._model = _read_model(self.path)
        return self._model

    @model.setter
    def model(self, value: ir.Model) -> None:
        self._model = value
        self._facts = None

    # -- construction ------------------------------------------------------------------------------

    @classmethod
    def load(
        cls,
        source: ModelSource,
        *,
        check: bool = True,
        limits: LoadLimits | None = None,
        cache_dir: str | os.PathLike | None = None,
    ) -> Graph:
        """Load, validate and shape-infer a model without reading its weights into memory; raise
        :class:`ModelLoadError` with the reason.

        ``limits`` bound what is read and allocated (default: :meth:`LoadLimits.from_env`); they
        hold with ``check=False`` too, which skips ``onnx.checker`` only. ``cache_dir``: where a
        model with large inline weights is converted to external data (default:
        ``$EDGECORE_CACHE_DIR``, else ``~/.cache/edgecore``).
        """
        if isinstance(source, Graph):
            return source
        limits = LoadLimits.from_env() if limits is None else limits
        if _is_proto(source):
            name, proto = "<ModelProto>", source
            size = proto.ByteSize()
            if size > limits.max_model_bytes:
                raise over_limit(f"the model {name}", size, limits.max_model_bytes, "max_model_bytes")
            if inline_weight_bytes(proto) >= INLINE_MAX:
                check_tensor_sizes(proto, name, limits)
                digest = hashlib.sha256(proto.SerializeToString()).hexdigest()
                return cls._converted(digest, proto, name, check, limits, cache_dir, restore=True)
        elif isinstance(source, (bytes, bytearray, memoryview)):
            name = "the given bytes"
            if len(source) > limits.max_model_bytes:
                raise over_limit(name, len(source), limits.max_model_bytes, "max_model_bytes")
            name, proto = "<bytes>", parse_model(bytes(source), name)
            if inline_weight_bytes(proto) >= INLINE_MAX:
                check_tensor_sizes(proto, name, limits)
                digest = hashlib.sha256(source).hexdigest()
                return cls._converted(digest, proto, name, check, limits, cache_dir)
        elif isinstance(source, (str, os.PathLike)):
            return cls._load_path(Path(source), check, limits, cache_dir)
        else:
            raise ModelLoadError(
                f"cannot load a model from {type(source).__name__}: give a path, bytes, an "
                f"onnx.ModelProto or a Graph (model names such as 'zoo:NAME' are resolved by Engine.load)"
            )
        check_tensor_sizes(proto, name, limits)
        entries = check_external_data(proto, None, name, limits)
        return cls.from_proto(proto, source=name, check=check, _entries=entries)

    @classmethod
    def _load_path(cls, path: Path, check: bool, limits: LoadLimits, cache_dir: Any) -> Graph:
        memo = LoadMemo.of(path, cache_dir)
        found = memo.read(check, limits) if memo is not None else None
        if found is not None:
            return cls._remembered(str(path), found, cache_dir)
        graph = cls._read_path(path, check, limits, cache_dir)
        if memo is not None:
            memo.write(graph, check)
        return graph

    @classmethod
    def _remembered(cls, source: str, found: Remembered, cache_dir: Any) -> Graph:
        """The Graph a load memo describes: specs and facts now, the model when something reads it."""
        graph = cls.__new__(cls)
        graph._setup(source, found.runtime)
        graph.cache_dir = cache_dir
        graph.inputs, graph.outputs = found.inputs, found.outputs
        graph._pin = found.pin
        graph.__dict__["fingerprint"] = found.facts["fingerprint"]
        graph._facts = found.facts
        return graph

    @classmethod
    def _read_path(cls, path: Path, check: bool, limits: LoadLimits, cache_dir: Any) -> Graph:
        name = str(path)
        try:
            if not path.exists():
                raise ModelLoadError(f"model file {path} does not exist")
            if not path.is_file():
                raise ModelLoadError(f"model path {path} is not a file")
            size = path.stat().st_size
            if size > limits.max_model_bytes:
                raise over_limit(f"model file {path}", size, limits.max_model_bytes, "max_model_bytes")
            if size >= INLINE_MAX:  # large inline weights: converted once, found again by content
                digest = file_digest(path)
                found = artifact_cache(cache_dir).get(conversion_key(digest))
                if found is not None:
                    return cls._from_entry(found, name, check, limits, cache_dir, digest)
            data = path.read_bytes()
        except (OSError, ValueError) as exc:  # unreadable, a NUL in the path, ...
            raise ModelLoadError(f"cannot read model file {str(path)[:200]!r}: {exc}") from exc
        proto = parse_model(data, f"model file {path}")
        del data
        check_tensor_sizes(proto, name, limits)
        if size >= INLINE_MAX and inline_weight_bytes(proto) >= INLINE_MAX:
            return cls._converted(digest, proto, name, check, limits, cache_dir, path=path)
        entries = check_external_data(proto, path.parent, name, limits)
        return cls.from_proto(
            proto, source=name, check=check, _base_dir=path.parent, _entries=entries, _path=path, _cache_dir=cache_dir
        )

    @classmethod
    def _converted(
        cls, digest: str, proto: onnx.ModelProto, name: str, check: bool, limits: LoadLimits, cache_dir: Any,
        *, restore: bool = False, path: Path | None = None,
    ) -> Graph:
        """``proto`` (large inline weights) converted to external data in the artifact cache (once:
        keyed by the source's own hash) and loaded from there. ``restore``: give ``proto`` its
        weights back afterwards (it is the caller's). ``path``: the file ``proto`` was read from,
        which runtimes load when the cache cannot be written."""
        check_external_data(proto, None, name, limits)  # inline models may not point at files

        def build(folder: Path) -> dict[str, Any]:
            moved = externalize(proto, folder)
            if restore:
                restore_inline(moved, folder)
            return {"source": name}

        try:
            entry = artifact_cache(cache_dir).get_or_build(conversion_key(digest), build)
        except OSError as exc:
            if inline_weight_bytes(proto) < INLINE_MAX:  # the build failed half-way: the weights are gone
                raise ModelLoadError(f"cannot write {name} with its weights as external data into the cache: {exc}") from exc
            logger.warning(
                "edgecore: the artifact cache cannot be written (%s); %s is held with its weights inline", exc, name
            )
            return cls.from_proto(proto, source=name, check=check, _entries=[], _path=path, _cache_dir=cache_dir)
        return cls._from_entry(entry, name, check, limits, cache_dir, digest)

    @classmethod
    def _from_entry(
        cls, entry: Any, name: str, check: bool, limits: LoadLimits, cache_dir: Any, digest: str
    ) -> Graph:
        path = entry.file(MODEL_FILE)
        proto = parse_model(path.read_bytes(), f"{name} (converted: {path})")
        check_tensor_sizes(proto, name, limits)
        entries = check_external_data(proto, path.parent, name, limits)
        graph = cls.from_proto(
            proto, source=name, check=check, _base_dir=path.parent, _entries=entries, _path=path,
            _cache_dir=cache_dir,
        )
        graph._conversion = digest
        graph._pin = entry.pin
        return graph

    @classmethod
    def from_proto(
        cls,
        proto: onnx.ModelProto,
        *,
        source: str = "<ModelProto>",
        check: bool = True,
        _base_dir: Path | None = None,
        _entries: list | None = None,
        _path: Path | None = None,
        _cache_dir: str | os.PathLike | None = None,
    ) -> Graph:
        """A Graph of ``proto`` as it is (external data resolved under ``_base_dir``)."""
        import onnx
        import onnx_ir as ir

        check_io_types(proto, source)
        if _entries is None:
            _entries = check_external_data(proto, _base_dir, source, LoadLimits.from_env())
        if check:  # the model itself keeps its -1s: specs read them as None
            validate(normalized(weightless_for_checks(proto, _entries, source)), source)
        try:
            inferred = onnx.shape_inference.infer_shapes(proto, data_prop=True)
        except Exception as exc:  # shape inference is a help, not a requirement
            logger.debug("shape inference failed for %s: %r", source, exc)
            inferred = proto
        try:
            model = ir.from_proto(inferred)
        except Exception as exc:
            raise ModelLoadError(f"{source} could not be read into onnx_ir: {exc}") from exc
        if _base_dir is not None:
            ir.external_data.set_base_dir(model.graph, _base_dir.resolve())
        graph = cls(model, source=source, path=_path)
        graph.cache_dir = _cache_dir
        return graph

    def copy(self) -> ir.Model:
        """A deep copy of the ``onnx_ir`` model with its weights read in, for passes to change."""
        import onnx_ir as ir

        return ir.from_proto(self.to_proto())

    # -- what runtimes take ------------------------------------------------------------------------

    def runtime_model(self, cache_dir: str | os.PathLike | None = None) -> str | bytes:
        """What a runtime loads: the path of the model's file (external data beside it), or the
        serialized bytes of a small in-memory model. An in-memory graph with large weights (an
        optimizer's result) is first written into the artifact cache under ``cache_dir`` (once,
        keyed by fingerprint) and maps its weights from there afterwards."""
        if self.path is not None:
            return str(self.path)
        with self._lock:
            if self.path is None and _weight_bytes(self.model) >= INLINE_MAX:
                try:
                    self._move_toartifact_cache(cache_dir if cache_dir is not None else self.cache_dir)
                except OSError as exc:
                    logger.warning("edgecore: the artifact cache cannot be written (%s); %s goes to runtimes "
                                   "as bytes", exc, self.name)
        return str(self.path) if self.path is not None else self.to_bytes()

    def _move_toartifact_cache(self, cache_dir: Any) -> None:
        import onnx_ir as ir

        def build(folder: Path) -> dict[str, Any]:
            import onnx_ir as ir

            proto = ir.to_proto(self.model)
            externalize(proto, folder)
            return {"fingerprint": self.fingerprint, "source": self.source}

        entry = artifact_cache(cache_dir).get_or_build(conversion_key(self.fingerprint), build)
        path = entry.file(MODEL_FILE)
        self._pin = entry.pin
        model = ir.load(path)
        ir.external_data.set_base_dir(model.graph, path.parent.resolve())
        self.model, self.path = model, path
        self.__dict__.pop("_bytes", None)

    # -- derived facts -----------------------------------------------------------------------------

    @property
    def name(self) -> str:
        if self._facts is not None:
            return self._facts["name"] or Path(self.source).stem
        return self.model.graph.name or Path(self.source).stem

    @property
    def weight_bytes(self) -> int:
        """Bytes of the main graph's initializers, mapped from a file or held."""
        if self._facts is not None:
            return self._facts["weight_bytes"]
        return sum(
            value.const_value.nbytes for value in self.model.graph.initializers.values() if value.const_value is not None
        )

    @property
    def local_functions(self) -> frozenset[tuple[str, str]]:
        """``(domain, name)`` of the functions the model defines itself."""
        if self._facts is not None:
            return frozenset(tuple(f) for f in self._facts["functions"])
        return frozenset((f.domain, f.name) for f in self.model.functions.values())

    def to_proto(self) -> onnx.ModelProto:
        """The model as a proto with every weight inline (external data read in: a full copy)."""
        import onnx
        import onnx_ir as ir

        proto = ir.to_proto(self.model)
        if self.path is not None and any(t.data_location == onnx.TensorProto.EXTERNAL for t in external_tensors(proto)):
            from onnx.external_data_helper import load_external_data_for_model

            load_external_data_for_model(proto, str(self.path.parent))
        return proto

    @functools.cached_property
    def _bytes(self) -> bytes:
        return self.to_proto().SerializeToString()

    def to_bytes(self) -> bytes:
        """The serialized model with its weights inline (computed once, until
        :meth:`release_serialized`). Backends take :meth:`runtime_model` instead."""
        return self._bytes

    def release_serialized(self) -> None:
        """Drop the cached serialized bytes (a full copy of the weights) once backends have compiled;
        they are rebuilt on the next :meth:`to_bytes`."""
        self.__dict__.pop("_bytes", None)

    @functools.cached_property
    def fingerprint(self) -> str:
        """SHA-256 of the model's content, the same wherever its weights lie
        (:func:`edgecore.modelfile.content_digest`): equal models share compiled artifacts and
        caches. For a model file, remembered beside the artifact cache by the files' identity."""
        import onnx_ir as ir

        memo = self._digest_memo()
        if memo is not None:
            try:
                found = memo.read_text().strip()
                if len(found) == 64:
                    return found
            except OSError:
                pass
        base = self.path.parent if self.path is not None else None
        value = content_digest(ir.to_proto(self.model), base, in_place=True)
        if memo is not None:
            try:
                memo.parent.mkdir(parents=True, exist_ok=True)
                staging = memo.with_name(f".{memo.name}.{os.getpid()}.{threading.get_ident()}")
                staging.write_text(value)
                os.replace(staging, memo)
            except OSError:
                pass
        return value

    def _digest_memo(self) -> Path | None:
        """Where the fingerprint of this graph's files is remembered: named by the identity (device,
        inode, size, mtime) of the model file and of its external data files."""
        import onnx_ir as ir

        if self.path is None:
            return None
        files = {self.path.resolve()}
        for value in self.model.graph.initializers.values():
            tensor = value.const_value
            if isinstance(tensor, ir.ExternalTensor):
                files.add((Path(tensor.base_dir) / tensor.location).resolve())
        try:
            identity = sorted(
                (str(f), s.st_dev, s.st_ino, s.st_size, s.st_mtime_ns) for f in files for s in (f.stat(),)
            )
        except OSError:
            return None
        name = hashlib.sha256(repr(identity).encode()).hexdigest()[:40]
        return artifact_cache(self.cache_dir).root.parent / "digests" / name

    @property
    def opset(self) -> int:
        if self._facts is not None:
            return self._facts["opset"]
        return self.model.opset_imports.get("", 0)

    def op_types(self) -> set[tuple[str, str]]:
        """``(domain, op_type)`` of every node, subgraphs included."""
        if self._facts is not None:
            return {tuple(op) for op in self._facts["op_types"]}
        import onnx_ir as ir

        return {(node.domain or "", node.op_type) for node in ir.traversal.RecursiveGraphIterator(self.model.graph)}

    @functools.cached_property
    def has_strings(self) -> bool:
        """Whether any value, initializer or Cast target of the model (subgraphs included) is a string
        tensor: backends that cannot run strings refuse the model without walking it again."""
        if self._facts is not None:
            return self._facts["strings"]
        if any(s.dtype.numpy.kind == "O" for s in (*self.inputs, *self.outputs)):
            return True
        import onnx_ir as ir

        string = ir.DataType.STRING
        if any(v.dtype == string for v in self.model.graph.initializers.values()):
            return True
        for node in ir.traversal.RecursiveGraphIterator(self.model.graph):
            if any(v is not None and v.dtype == string for v in node.outputs):
                return True
            to = node.attributes.get("to") if node.op_type == "Cast" else None
            if to is not None and to.value == string:
                return True
        return False

    @property
    def num_nodes(self) -> int:
        import onnx_ir as ir

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


def _read_model(path: Path | None) -> ir.Model:
    """The ``onnx_ir`` model of a file that was loaded and checked before (shapes inferred, as
    :meth:`Graph.from_proto` reads them; external data mapped from beside it)."""
    import onnx
    import onnx_ir as ir

    if path is None:
        raise ModelLoadError("this graph has neither a model nor a file to read it from")
    proto = parse_model(path.read_bytes(), f"model file {path}")
    try:
        proto = onnx.shape_inference.infer_shapes(proto, data_prop=True)
    except Exception as exc:
        logger.debug("shape inference failed for %s: %r", path, exc)
    model = ir.from_proto(proto)
    ir.external_data.set_base_dir(model.graph, path.parent.resolve())
    return model


def _weight_bytes(model: ir.Model) -> int:
    """Bytes of the main graph's initializers held in memory (not mapped from a file)."""
    import onnx_ir as ir

    return sum(
        value.const_value.nbytes
        for value in model.graph.initializers.values()
        if value.const_value is not None and not isinstance(value.const_value, ir.ExternalTensor)
    )


def describe_source(source: Any) -> str:
    if isinstance(source, (str, os.PathLike)):
        return str(source)
    return f"<{type(source).__name__}>"
