"""Model files and their weights, below :mod:`edgecore.graph`: load limits, external data (checked,
never read in), conversion of inline weights to external data, and content digests.

Weights never pass through Python on the way to a runtime. A model whose weights lie in external data
is validated and shape-inferred on its weightless proto; its tensors stay on disk and are mapped
lazily by ``onnx_ir`` (:class:`onnx_ir.ExternalTensor`) and by the runtimes. A model with large inline
weights (:data:`INLINE_MAX` bytes or more) is converted once into the artifact cache
(:func:`externalize`: tensors of :data:`EXTERNAL_MIN` bytes or more go to ``model.data`` at
page-aligned offsets; small constants such as Reshape targets stay inline, so shape inference still
reads them) and loaded from there.

:func:`content_digest` hashes a model independently of where its weights lie: the proto with every
tensor's bytes taken out, plus the SHA-256 of each tensor's bytes, in order. The same model inline,
converted or saved with external data by another tool has the same digest.

Concurrency: the digest memo (``_range_digests``) is a dict written under ``_memo_lock``; everything
else works on arguments only.
"""

from __future__ import annotations

import hashlib
import math
import os
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Mapping

import attrs

from edgecore.errors import ConfigurationError, ModelLoadError
from edgecore.tensor import DataType

if TYPE_CHECKING:  # onnx is imported by the functions that take its protos: limits and constants need none
    import onnx

__all__ = [
    "EXTERNAL_MIN",
    "INLINE_MAX",
    "MODEL_FILE",
    "DATA_FILE",
    "LoadLimits",
    "all_tensors",
    "check_tensor_sizes",
    "check_external_data",
    "content_digest",
    "externalize",
    "file_digest",
    "inline_weight_bytes",
    "restore_inline",
]

_PROTOBUF_LIMIT = 2 << 30  # protobuf cannot parse a message of 2 GiB or more

#: inline weights of this many bytes or more are converted to external data in the artifact cache
INLINE_MAX = 1 << 20
#: tensors of this many bytes or more go to the external data file; smaller ones stay inline
EXTERNAL_MIN = 1024
MODEL_FILE = "model.onnx"
DATA_FILE = "model.data"
_ALIGN = 4096  # external data offsets aligned to pages, so that runtimes can map them
_CHUNK = 1 << 20


def _onnx() -> Any:
    import onnx

    return onnx


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


def over_limit(what: str, size: int, limit: int, field: str) -> ModelLoadError:
    return ModelLoadError(
        f"{what} is {size:,} bytes, over the limit of {limit:,} (LoadLimits.{field}, "
        f"environment {LoadLimits.ENV[field]})"
    )


# -- tensors and their claimed sizes ---------------------------------------------------------------


def _graph_tensors(graph: onnx.GraphProto) -> Iterator[onnx.TensorProto]:
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
                yield from _graph_tensors(attr.g)
            for sub in attr.graphs:
                yield from _graph_tensors(sub)


def all_tensors(model: onnx.ModelProto) -> Iterator[onnx.TensorProto]:
    """Every TensorProto of ``model``: graphs, subgraphs, attributes and functions."""
    yield from _graph_tensors(model.graph)
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


def check_tensor_sizes(model: onnx.ModelProto, source: str, limits: LoadLimits) -> None:
    """Refuse tensors whose dims are negative or claim more than ``max_tensor_elements``."""
    for tensor in all_tensors(model):
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


def inline_weight_bytes(model: onnx.ModelProto) -> int:
    """Bytes held inline by the main graph's initializers of :data:`EXTERNAL_MIN` bytes or more
    (``raw_data`` only; ``ByteSize`` reads no data)."""
    total = 0
    for tensor in model.graph.initializer:
        if tensor.HasField("raw_data"):
            size = tensor.ByteSize()
            if size >= EXTERNAL_MIN:
                total += size
    return total


# -- external data: checked where it lies, never read in -------------------------------------------


def _entry_int(where: str, key: str, value: str | None) -> int | None:
    if value is None:
        return None
    if not (value.isascii() and value.isdigit()) or len(value) > 19:
        raise ModelLoadError(f"{where}: external data {key} must be a non-negative whole number, got {value[:40]!r}")
    return int(value)


@attrs.frozen
class External:
    """Where one tensor's external data lies (checked)."""

    tensor: onnx.TensorProto
    target: Path
    offset: int
    length: int

    def read(self, source: str) -> bytes:
        with open(self.target, "rb") as file:
            file.seek(self.offset)
            data = file.read(self.length)
        if len(data) != self.length:
            raise ModelLoadError(f"tensor {self.tensor.name!r} of {source}: {self.target} changed while read")
        return data


def _external_entry(tensor: onnx.TensorProto, root: Path | None, source: str) -> External:
    """Where ``tensor``'s external data lies, checked: inside ``root``, within its file, as long as
    its dims say."""
    entries = {e.key: e.value for e in tensor.external_data}
    location = entries.get("location", "")
    where = f"tensor {tensor.name!r} of {source} refers to external data {location[:200]!r}"
    if root is None:
        raise ModelLoadError(f"{where}, but the model was not loaded from a file; load it by path")
    if "\0" in location:
        raise ModelLoadError(f"{where}: the location holds a NUL byte")
    offset = _entry_int(where, "offset", entries.get("offset")) or 0
    length = _entry_int(where, "length", entries.get("length"))
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
            f"({expected:,} bytes of {_onnx().TensorProto.DataType.Name(tensor.data_type)})"
        )
    return External(tensor, target, offset, length)


def check_external_data(
    model: onnx.ModelProto, base_dir: Path | None, source: str, limits: LoadLimits
) -> list[External]:
    """Check every external data entry of ``model`` (inside ``base_dir``, within its file, long
    enough, under the limit); read nothing."""
    root = base_dir.resolve() if base_dir is not None else None
    entries = [
        _external_entry(tensor, root, source)
        for tensor in all_tensors(model)
        if tensor.data_location == _onnx().TensorProto.EXTERNAL
    ]
    if entries:
        total, limit = sum(e.length for e in entries), limits.external_data_bytes()
        if total > limit:
            raise over_limit(f"the external data of {source}", total, limit, "max_external_data_bytes")
    return entries


# -- conversion of inline weights ------------------------------------------------------------------


def _set_external(tensor: onnx.TensorProto, location: str, offset: int, length: int) -> None:
    del tensor.external_data[:]
    for key, value in (("location", location), ("offset", str(offset)), ("length", str(length))):
        entry = tensor.external_data.add()
        entry.key, entry.value = key, value
    tensor.data_location = _onnx().TensorProto.EXTERNAL


def externalize(model: onnx.ModelProto, folder: Path) -> list[onnx.TensorProto]:
    """Move the main graph's initializers of :data:`EXTERNAL_MIN` bytes or more out of ``model``
    (changed in place) into ``folder/model.data`` at page-aligned offsets, and write the weightless
    ``folder/model.onnx``. One tensor's bytes at a time are copied; returns the tensors moved."""
    moved = []
    with open(folder / DATA_FILE, "wb") as data:
        for tensor in model.graph.initializer:
            if not tensor.HasField("raw_data") or tensor.ByteSize() < EXTERNAL_MIN:
                continue
            raw = tensor.raw_data
            offset = -data.tell() % _ALIGN + data.tell()
            data.seek(offset)
            data.write(raw)
            tensor.ClearField("raw_data")
            _set_external(tensor, DATA_FILE, offset, len(raw))
            moved.append(tensor)
            del raw
    (folder / MODEL_FILE).write_bytes(model.SerializeToString())
    return moved


def restore_inline(tensors: list[onnx.TensorProto], folder: Path) -> None:
    """Put back the bytes :func:`externalize` moved out of ``tensors`` (read from ``folder``)."""
    for tensor in tensors:
        entries = {e.key: e.value for e in tensor.external_data}
        with open(folder / entries["location"], "rb") as file:
            file.seek(int(entries["offset"]))
            tensor.raw_data = file.read(int(entries["length"]))
        del tensor.external_data[:]
        tensor.ClearField("data_location")


# -- digests ---------------------------------------------------------------------------------------

_memo_lock = threading.Lock()
_range_digests: dict[tuple, str] = {}
_MEMO_KEPT = 4096


def file_digest(path: Path, offset: int = 0, length: int | None = None) -> str:
    """SHA-256 of ``length`` bytes of ``path`` from ``offset`` (all: None), read in chunks; memoized
    in this process by the file's identity (device, inode, size, mtime)."""
    stat = path.stat()
    key = (stat.st_dev, stat.st_ino, stat.st_size, stat.st_mtime_ns, offset, length)
    with _memo_lock:
        found = _range_digests.get(key)
    if found is not None:
        return found
    digest = hashlib.sha256()
    remaining = stat.st_size - offset if length is None else length
    with open(path, "rb") as file:
        file.seek(offset)
        while remaining > 0:
            chunk = file.read(min(_CHUNK, remaining))
            if not chunk:
                break
            digest.update(chunk)
            remaining -= len(chunk)
    value = digest.hexdigest()
    with _memo_lock:
        if len(_range_digests) >= _MEMO_KEPT:
            _range_digests.clear()
        _range_digests[key] = value
    return value


def content_digest(model: onnx.ModelProto, base_dir: Path | None = None, *, in_place: bool = False) -> str:
    """SHA-256 of ``model``'s content, the same wherever its weights lie (inline or external data
    under ``base_dir``). ``in_place=True`` strips the weights from ``model`` itself (no copy)."""
    if not in_place:
        copy = _onnx().ModelProto()
        copy.CopyFrom(model)  # weightless models copy cheaply; inline ones are small (< INLINE_MAX)
        model = copy
    root = base_dir.resolve() if base_dir is not None else None
    digest = hashlib.sha256(b"edgecore-model-1\0")
    for tensor in all_tensors(model):
        if tensor.data_location == _onnx().TensorProto.EXTERNAL:
            entry = _external_entry(tensor, root, "the model")
            part = file_digest(entry.target, entry.offset, entry.length)
            del tensor.external_data[:]
            tensor.ClearField("data_location")
        elif tensor.HasField("raw_data"):
            part = hashlib.sha256(tensor.raw_data).hexdigest()
            tensor.ClearField("raw_data")
        else:
            continue
        digest.update(part.encode())
    digest.update(model.SerializeToString(deterministic=True))
    return digest.hexdigest()
