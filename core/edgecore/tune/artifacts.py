"""Models of each precision, built once by the pass manager and kept in the tuning cache.

``fp32`` is the model as given (the runtime's own optimizer does the rest; a backend's default
configuration runs exactly this). ``int8`` and ``fp16`` come from :class:`~edgecore.optimize.PassManager`
with graph optimization and the lossy pass the backend asks for (its own int8 pass when it registers
one, e.g. ``openvino_int8``, else the portable QDQ ``int8``); the manager checks the lossy pass
against the accuracy budget on the calibration samples and rolls it back when it breaks it, which
rejects the candidate for accuracy with the manager's reason.

An artifact is keyed by its precision, the passes that build it and what checks it (budget,
calibration data): backends that use the same passes share it, checked on the first backend that
built it. Built graphs live in the tuning cache (:class:`TuneCache`), so a rerun reads them back.

Concurrency: one tuning run owns its cache folder; files are written to a temporary name and renamed.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

import attrs

if TYPE_CHECKING:
    from edgecore.graph import Graph
    from edgecore.optimize import OptimizationConfig
    from edgecore.plugins import PluginManager

logger = logging.getLogger(__name__)

__all__ = ["Artifact", "TuneCache", "build_artifact", "check_precision_hint", "save_graph", "save_proto", "lossy_stage"]

#: Above this, weights go to external data next to the model file (mapped, not copied, by runtimes).
EXTERNAL_DATA_BYTES = 16 << 20


@attrs.frozen(kw_only=True)
class Artifact:
    """The graph of one precision: ``path`` (None: the model as given), the accuracy ``loss`` against
    the original in ``metric``, whether its lossy pass was ``kept`` (else ``reason`` says why not),
    the passes run and the optimization report (JSON)."""

    key: str
    precision: str
    path: str | None
    kept: bool
    reason: str
    loss: float | None = 0.0
    metric: str = ""
    passes: tuple[str, ...] = attrs.field(default=(), converter=tuple)
    checked_on: str = ""
    seconds: float = 0.0
    report: Mapping[str, Any] | None = None

    def to_json(self) -> dict[str, Any]:
        data = attrs.asdict(self, recurse=False)
        data["passes"] = list(self.passes)
        data["report"] = dict(self.report) if self.report is not None else None
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Artifact:
        return cls(**{f.name: data[f.name] for f in attrs.fields(cls) if f.name in data})


class TuneCache:
    """``<cache>/tune/<model fingerprint>/``: built models and ``state.json`` (artifacts, memory
    readings, rejections found by compiling), so that a rerun continues where the last one got."""

    def __init__(self, fingerprint: str, root: str | os.PathLike | None = None) -> None:
        from edgecore.cache import CACHE_ENV

        base = Path(root) if root is not None else (
            Path(os.environ[CACHE_ENV]) if os.environ.get(CACHE_ENV) else Path.home() / ".cache" / "edgecore")
        self.folder = base.expanduser() / "tune" / fingerprint[:32]
        self.folder.mkdir(parents=True, exist_ok=True)
        self._state_path = self.folder / "state.json"
        try:
            self.state: dict[str, Any] = json.loads(self._state_path.read_text())
        except (OSError, ValueError):
            self.state = {}
        for section in ("artifacts", "memory", "compile", "halving"):
            self.state.setdefault(section, {})
        self.resumed = any(self.state[s] for s in ("artifacts", "memory", "compile"))

    def get(self, section: str, key: str) -> Any:
        return self.state[section].get(key)

    def put(self, section: str, key: str, value: Any) -> None:
        self.state[section][key] = value
        temporary = self._state_path.with_suffix(f".{os.getpid()}.tmp")
        temporary.write_text(json.dumps(self.state, indent=1, default=str))
        temporary.replace(self._state_path)


def save_graph(graph: Graph, path: Path) -> Path:
    """Write ``graph`` as ONNX at ``path`` (weights as external data next to it when large)."""
    return save_proto(graph.to_proto(), path)


def save_proto(proto: Any, path: Path) -> Path:
    """Write the ModelProto ``proto`` at ``path`` (weights as ``<name>.data`` next to it when large)."""
    import onnx

    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(path.name + f".{os.getpid()}.tmp")
    large = proto.ByteSize() > EXTERNAL_DATA_BYTES if proto.ByteSize() < (2 << 30) - 1 else True
    if large:
        data = path.name + ".data"
        for stale in (path.parent / data,):
            stale.unlink(missing_ok=True)
        onnx.save_model(proto, str(temporary), save_as_external_data=True, all_tensors_to_one_file=True,
                        location=data, size_threshold=1024)
    else:
        onnx.save_model(proto, str(temporary))
    temporary.replace(path)
    return path


def lossy_stage(precision: str) -> str:
    return {"int8": "quantize", "fp16": "precision"}[precision]


def _check_digest(config: OptimizationConfig) -> str:
    """What the accuracy check of an artifact depends on besides the passes: budget and samples."""
    import numpy as np

    digest = hashlib.sha256(json.dumps(config.to_json(), sort_keys=True, default=str).encode())
    data = config.calibration_data
    if data is not None:
        rows = data.values() if isinstance(data, Mapping) else [a for feed in data for a in feed.values()]
        for array in rows:
            digest.update(np.ascontiguousarray(array).tobytes()[: 1 << 20])
    if config.labels is not None:
        digest.update(config.labels.tobytes())
    return digest.hexdigest()[:12]


def check_precision_hint(
    graph: Graph, backend: str, precision: str, config: OptimizationConfig, cache: TuneCache,
    plugin_manager: PluginManager,
) -> Artifact:
    """The model as given, run by ``backend`` with its ``precision`` hint (bf16: the runtime computes
    in bf16), checked like a lossy pass: its outputs on the calibration samples against the same
    backend's fp32 outputs, kept when the loss stays within the budget."""
    key = f"{precision}-hint-{backend}-{_check_digest(config)}"
    cached = cache.get("artifacts", key)
    if cached is not None:
        return Artifact.from_json(cached)
    from edgecore.config import EngineConfig
    from edgecore.optimize.agreement import compare
    from edgecore.optimize.evaluation import Evaluator, SampleSet

    started = time.perf_counter()
    samples = SampleSet.from_config(config, graph.inputs)
    reference = Evaluator(samples, backend=backend, engine_config=EngineConfig(backend=backend),
                          plugin_manager=plugin_manager).outputs(graph)
    outputs = Evaluator(samples, backend=backend, engine_config=EngineConfig(backend=backend, precision=precision),
                        plugin_manager=plugin_manager).outputs(graph)
    agreement = compare(reference, outputs, samples.labels)
    original = compare(reference, reference, samples.labels).accuracy
    if samples.labels is not None and agreement.accuracy is not None and original is not None:
        metric, loss = "top1_points", original - agreement.accuracy
    else:
        metric, loss = "cosine_loss", agreement.cosine_loss
    budget = config.budget()
    kept = loss <= budget
    reason = (f"{precision} outputs within the budget ({metric} {loss:.3g} <= {budget:g}; {samples.description})"
              if kept else f"{precision} outputs lose {loss:.3g} {metric}, over the budget {budget:g} "
              f"({samples.description})")
    artifact = Artifact(key=key, precision=precision, path=None, kept=kept, reason=reason, loss=float(loss),
                        metric=metric, checked_on=backend, seconds=time.perf_counter() - started)
    cache.put("artifacts", key, artifact.to_json())
    return artifact


def build_artifact(
    graph: Graph, backend: str, precision: str, config: OptimizationConfig, cache: TuneCache,
    plugin_manager: PluginManager,
) -> Artifact:
    """The ``precision`` model of ``graph`` for ``backend`` (from the cache when built before)."""
    if precision == "fp32":
        return Artifact(key="fp32", precision=precision, path=None, kept=True, reason="the model as given",
                        loss=0.0, checked_on=backend)
    if precision == "bf16":
        return check_precision_hint(graph, backend, precision, config, cache, plugin_manager)
    import attrs as _attrs

    from edgecore.config import EngineConfig
    from edgecore.optimize import PassManager, select_passes

    config = _attrs.evolve(config, enable_quantization=precision == "int8",
                           enable_mixed_precision=precision == "fp16")
    specs = select_passes(config, plugin_manager.passes(), backend)
    names = tuple(spec.name for spec in specs)
    key = f"{precision}-{'+'.join(names)}-{_check_digest(config)}"
    cached = cache.get("artifacts", key)
    if cached is not None and (cached["path"] is None or Path(cached["path"]).exists()):
        return Artifact.from_json(cached)
    started = time.perf_counter()
    manager = PassManager(config, backend=backend, engine_config=EngineConfig(backend=backend),
                          plugin_manager=plugin_manager)
    optimized, report = manager.run(graph)
    stage = lossy_stage(precision)
    lossy = [p for p in report.passes if p.stage == stage]
    record = lossy[0] if lossy else None
    kept = record is not None and record.kept
    path = None
    if kept:
        path = str(save_graph(optimized, cache.folder / f"{key}.onnx"))
    reason = record.reason if record is not None else f"no {stage} pass ran"
    artifact = Artifact(
        key=key, precision=precision, path=path, kept=kept, reason=reason,
        loss=report.final_loss if kept else (record.loss if record is not None else None),
        metric=report.metric, passes=names, checked_on=report.backend, seconds=time.perf_counter() - started,
        report=report.to_json(),
    )
    cache.put("artifacts", key, artifact.to_json())
    logger.info("tune: built %s for %s in %.1f s: %s", precision, backend, artifact.seconds, reason)
    return artifact
