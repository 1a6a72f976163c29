"""What loading a model leaves in the artifact cache: the converted copy of a model with large inline
weights (external data, keyed by the source's digest) and, per model file, a memo of what its load
found (specs, fingerprint, operators, the file runtimes load), so that a later load of the unchanged
file needs neither onnx nor onnx_ir. Used by :class:`edgecore.graph.Graph`; knows graphs only as
the facts it records.
"""

from __future__ import annotations

import hashlib
import logging
import os
import sys
import threading
from pathlib import Path
from typing import Any

import attrs

from edgecore.cache import ArtifactCache, CacheKey, default_cache_dir
from edgecore.modelfile import INLINE_MAX, MODEL_FILE, LoadLimits
from edgecore.tensor import DataType, TensorSpec

logger = logging.getLogger(__name__)

__all__ = ["LoadMemo", "Remembered", "artifact_cache", "conversion_key", "file_identity"]

#: the artifact-cache "backend" under which converted models are kept
_CONVERTED = "edgecore.external-data"


def artifact_cache(cache_dir: str | os.PathLike | None) -> ArtifactCache:
    """The artifact cache under ``cache_dir`` (None: the default folder)."""
    return ArtifactCache(Path(cache_dir).expanduser() / "artifacts" if cache_dir else default_cache_dir())


def conversion_key(digest: str) -> CacheKey:
    """The cache key of the converted copy (weights as external data) of the model with ``digest``."""
    return CacheKey(model=digest, backend=_CONVERTED, runtime=f"external data >= {INLINE_MAX} bytes")


@attrs.frozen
class Remembered:
    """A memo that still holds: its facts, the file runtimes load and the specs."""

    facts: dict[str, Any]
    runtime: Path
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    pin: Any = None  #: the converted entry's pin (edgecore.cache.Pin), when the runtime file lies in the cache


#: bump when what a memo holds changes
_MEMO_FORMAT = 2


def file_identity(path: Path) -> list[Any]:
    """(resolved path, device, inode, size, mtime, ctime) of ``path``: any rewrite changes it."""
    stat = path.stat()
    return [str(path.resolve()), stat.st_dev, stat.st_ino, stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns]


class LoadMemo:
    """What loading a model file found, kept beside the artifact cache (``graphs/``) under the file's
    identity (path, device, inode, size, mtime, ctime): its specs, fingerprint, operators and the
    file runtimes load (the file itself, or its converted copy in the cache, verified there). A later
    load of the unchanged file starts from it without importing onnx or onnx_ir; the model is read
    only when something asks for it (``Graph.model``). Anything that does not match -- the file,
    its external data files, the converted entry, the limits -- and the file is loaded as usual."""

    def __init__(self, file: Path, identity: list[Any], cache_dir: Any) -> None:
        self.file, self.identity, self.cache_dir = file, identity, cache_dir

    @classmethod
    def of(cls, path: Path, cache_dir: Any) -> LoadMemo | None:
        try:
            identity = file_identity(path)
        except (OSError, ValueError):
            return None  # the usual load says what is wrong
        version = getattr(sys.modules.get("edgecore"), "__version__", "")
        name = hashlib.sha256(repr((identity, version, _MEMO_FORMAT)).encode()).hexdigest()[:40]
        return cls(artifact_cache(cache_dir).root.parent / "graphs" / f"{name}.json", identity, cache_dir)

    def read(self, check: bool, limits: LoadLimits) -> Remembered | None:
        """What this file's load found, if the memo still matches the file, its external data, the
        converted entry and ``limits`` (and was checked, when ``check``); None otherwise."""
        import json

        try:
            facts = json.loads(self.file.read_text())
        except (OSError, ValueError):
            return None
        try:
            if facts.get("identity") != self.identity or (check and not facts["checked"]):
                return None
            if self.identity[3] > limits.max_model_bytes or facts["max_elements"] > limits.max_tensor_elements:
                return None
            if facts["external_bytes"] and facts["external_bytes"] > limits.external_data_bytes():
                return None
            if any(file_identity(Path(f[0])) != f for f in facts["external"]):
                return None
            if facts["conversion"] is not None:
                entry = artifact_cache(self.cache_dir).get(conversion_key(facts["conversion"]))
                if entry is None:
                    return None
                runtime, pin = entry.file(MODEL_FILE), entry.pin
            else:
                runtime, pin = Path(self.identity[0]), None
            inputs = tuple(_spec_from_json(s) for s in facts["inputs"])
            outputs = tuple(_spec_from_json(s) for s in facts["outputs"])
            return Remembered(facts=facts, runtime=runtime, inputs=inputs, outputs=outputs, pin=pin)
        except (OSError, KeyError, TypeError, ValueError) as exc:
            logger.debug("edgecore: ignoring the load memo %s: %r", self.file, exc)
            return None

    def write(self, graph: Any, checked: bool) -> None:
        """Remember ``graph`` (an :class:`edgecore.graph.Graph`), just loaded from this memo's file
        (best effort: a cache that cannot be written is skipped)."""
        import json

        import onnx_ir as ir

        if graph.path is None:
            return
        try:
            conversion = graph._conversion  # the source digest of its converted copy in the cache
            converted = conversion is not None
            if not converted and graph.path.resolve() != Path(self.identity[0]):
                return
            external, external_bytes, max_elements = set(), 0, 0
            for value in graph.model.graph.initializers.values():
                tensor = value.const_value
                if tensor is None:
                    continue
                max_elements = max(max_elements, tensor.size)
                if isinstance(tensor, ir.ExternalTensor):
                    external_bytes += tensor.nbytes
                    if not converted:
                        external.add(Path(tensor.base_dir) / tensor.location)
            facts = {
                "identity": self.identity,
                "checked": checked,
                "conversion": conversion,
                "external": sorted(file_identity(f) for f in external),
                "external_bytes": external_bytes,
                "max_elements": max_elements,
                "name": graph.model.graph.name,
                "inputs": [_spec_to_json(s) for s in graph.inputs],
                "outputs": [_spec_to_json(s) for s in graph.outputs],
                "fingerprint": graph.fingerprint,
                "opset": graph.opset,
                "op_types": sorted(graph.op_types()),
                "functions": sorted(graph.local_functions),
                "weight_bytes": graph.weight_bytes,
                "strings": graph.has_strings,
            }
            self.file.parent.mkdir(parents=True, exist_ok=True)
            staging = self.file.with_name(f".{self.file.name}.{os.getpid()}.{threading.get_ident()}")
            staging.write_text(json.dumps(facts))
            os.replace(staging, self.file)
        except (OSError, ValueError) as exc:
            logger.debug("edgecore: cannot write the load memo %s: %r", self.file, exc)


def _spec_to_json(spec: TensorSpec) -> dict[str, Any]:
    return {"name": spec.name, "dtype": int(spec.dtype), "shape": None if spec.shape is None else list(spec.shape)}


def _spec_from_json(value: dict[str, Any]) -> TensorSpec:
    shape = value["shape"]
    return TensorSpec(name=value["name"], dtype=DataType(value["dtype"]), shape=None if shape is None else tuple(shape))
