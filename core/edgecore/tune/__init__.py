"""``edgecore tune``: the fastest configuration of a model on this machine, within accuracy and memory budgets.

::

    import edgecore.tune

    result = edgecore.tune("model.onnx", objective="latency", memory_budget="100MB", time_limit="5m",
                           output="tuned/")
    print(result.chosen, result.gain)
    engine = edgecore.tune.from_tuned("tuned/")          # Engine running the chosen configuration
    model_path, config = edgecore.tune.load_tuned("tuned/")

The module is callable: ``edgecore.tune(...)`` is :func:`tune`. The search space (backend ×
precision × threads × batch and scheduler instances × memory mode), how candidates are measured and
what the output folder holds are in docs/tuning.md and the docstrings of :mod:`.search` and
:mod:`.output`.
"""

from __future__ import annotations

import logging
import sys
import types
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

from edgecore.tune.output import from_tuned, load_tuned
from edgecore.tune.result import TuneResult
from edgecore.tune.settings import TuneSettings, parse_bytes, parse_duration, parse_latency

if TYPE_CHECKING:
    import numpy as np

    from edgecore.graph import ModelSource
    from edgecore.plugins import PluginManager
    from edgecore.tune.search import Progress

logger = logging.getLogger(__name__)

__all__ = ["tune", "TuneResult", "TuneSettings", "from_tuned", "load_tuned", "read_calibration"]


def read_calibration(path: str | Path) -> tuple[dict[str, np.ndarray], np.ndarray | None]:
    """Arrays of an ``.npz`` file (one per input name, samples along axis 0) and its ``labels``."""
    import numpy as np

    from edgecore.errors import ConfigurationError

    try:
        with np.load(Path(path), allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
    except (OSError, ValueError) as exc:
        raise ConfigurationError(f"cannot read calibration data {path}: {exc}") from exc
    return arrays, arrays.pop("labels", None)


def tune(
    model: ModelSource,
    *,
    objective: str = "latency",
    calibration: Mapping[str, Any] | str | Path | None = None,
    labels: Any = None,
    budget: float | None = None,
    memory_budget: int | str | None = None,
    latency_budget: float | str | None = None,
    time_limit: float | str = "10m",
    backends: Any = None,
    output: str | Path | None = "tuned",
    settings: TuneSettings | None = None,
    plugin_manager: PluginManager | None = None,
    cache_dir: str | Path | None = None,
    progress: Progress | None = None,
    **space: Any,
) -> TuneResult:
    """Search the fastest configuration of ``model`` here and write it to ``output`` (None: write nothing).

    ``calibration``: samples the accuracy checks run on (a mapping input name -> array with samples
    along axis 0, or an ``.npz`` path whose ``labels`` array gives labels); without it, generated
    samples. ``budget``: the largest accuracy loss (top-1 points with labels, else 1 - cosine; None:
    the optimizer's default). ``memory_budget``: bytes or ``"100MB"`` of PSS growth.
    ``latency_budget``: ms or ``"20ms"`` of p99. ``time_limit``: seconds or ``"10m"``. ``space``:
    further :class:`TuneSettings` fields (``precisions``, ``threads``, ``batches``, ``finalists``...),
    or give ``settings`` whole. ``cache_dir``: where the tuning cache lives (default: edgecore's cache).
    """
    from edgecore.bench.machine import machine_info
    from edgecore.plugins import get_plugin_manager
    from edgecore.selection import load_graph
    from edgecore.tune.artifacts import TuneCache, save_graph
    from edgecore.tune.search import search

    if settings is None:
        settings = TuneSettings(
            objective=objective, accuracy_budget=budget,
            memory_budget=parse_bytes(memory_budget) if memory_budget is not None else None,
            latency_budget_ms=parse_latency(latency_budget) if latency_budget is not None else None,
            time_limit_s=parse_duration(time_limit), backends=backends, **space,
        )
    if isinstance(calibration, (str, Path)):
        calibration, found = read_calibration(calibration)
        labels = labels if labels is not None else found
    pm = plugin_manager or get_plugin_manager()
    graph = load_graph(model, pm)
    cache = TuneCache(graph.fingerprint, root=cache_dir)
    source_path = _source_path(model)
    given = {}

    def artifact_path(candidate: Any, artifact: Any) -> str:
        if artifact.path is not None:
            return artifact.path
        if "model" not in given:  # the model as given: its own file, or saved once into the cache
            given["model"] = source_path or str(save_graph(graph, cache.folder / "given.onnx"))
        return given["model"]

    outcome = search(graph, str(model) if isinstance(model, (str, Path)) else graph.name, settings,
                     calibration=calibration, labels=labels, cache=cache, plugin_manager=pm,
                     artifact_path=artifact_path, progress=progress)
    machine = machine_info()
    machine["load"] = dict(outcome.load)
    from edgecore.tune.write import write_outputs

    chosen = outcome.chosen
    chosen_file = artifact_path(chosen.candidate, outcome.artifacts[chosen.artifact_key]) if chosen else None
    return write_outputs(outcome, graph=graph, model=model, settings=settings, output=output, machine=machine,
                         chosen_file=chosen_file)


def _source_path(model: Any) -> str | None:
    if isinstance(model, (str, Path)) and not str(model).startswith("zoo:") and Path(model).is_file():
        return str(Path(model).resolve())
    return None


class _CallableModule(types.ModuleType):
    """``edgecore.tune(...)`` calls :func:`tune`; ``edgecore.tune.from_tuned`` etc. stay attributes."""

    def __call__(self, *args: Any, **kwargs: Any) -> TuneResult:
        return tune(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
