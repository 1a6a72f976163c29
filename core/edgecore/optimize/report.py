"""The record of an optimization run: :class:`OptimizationReport`, one :class:`PassRecord` per pass.

A report prints as a table (``str(report)``) and serializes with :meth:`OptimizationReport.to_json`.
"""

from __future__ import annotations

import math
from typing import Any, Mapping

import attrs
import numpy as np
import onnx_ir as ir

from edgecore.graph import Graph
from edgecore.optimize.agreement import Agreement, Signal

__all__ = ["GraphStats", "PassRecord", "OptimizationReport", "KEPT", "ROLLED_BACK", "SKIPPED", "FAILED", "UNCHANGED"]

_WEIGHT_TYPES = frozenset({
    ir.DataType.FLOAT, ir.DataType.FLOAT16, ir.DataType.BFLOAT16, ir.DataType.DOUBLE, ir.DataType.INT8,
    ir.DataType.UINT8, ir.DataType.INT4, ir.DataType.UINT4, ir.DataType.INT32,
})

KEPT = "kept"
ROLLED_BACK = "rolled_back"
SKIPPED = "skipped"
FAILED = "failed"
UNCHANGED = "unchanged"


@attrs.frozen(kw_only=True)
class GraphStats:
    """Size of a graph: nodes, parameters (weight elements, any type), serialized bytes."""

    nodes: int
    parameters: int
    bytes: int

    @classmethod
    def of(cls, graph: Graph) -> GraphStats:
        """``parameters``: elements of non-scalar float and quantized (8-bit, int32 bias) initializers."""
        parameters = 0
        for value in graph.model.graph.initializers.values():
            tensor = value.const_value
            if tensor is None or value.dtype not in _WEIGHT_TYPES:
                continue
            size = int(np.prod(tensor.shape.numpy())) if len(tensor.shape) else 1
            if size > 1:
                parameters += size
        return cls(nodes=graph.num_nodes, parameters=parameters, bytes=len(graph.to_bytes()))

    def to_json(self) -> dict[str, int]:
        return {"nodes": self.nodes, "parameters": self.parameters, "bytes": self.bytes}


def _frozen(value: Mapping[str, Any] | None) -> Mapping[str, Any]:
    from types import MappingProxyType

    return MappingProxyType(dict(value or {}))


@attrs.frozen(kw_only=True)
class PassRecord:
    """What one pass did and what it cost.

    ``status``: ``kept``, ``rolled_back`` (it broke the budget or float rounding), ``failed`` (it
    raised, or its graph did not run), ``skipped`` (not applicable) or ``unchanged``. ``reason`` says
    why in words. ``vs_previous`` compares with the graph before the pass, ``vs_original`` with the
    unoptimized graph; ``loss`` is the budgeted figure against the original (top-1 points, or
    ``1 - cosine``). ``notes`` and ``details`` are what the pass itself reported (calibration used,
    nodes left in float, channels removed...). ``judged`` is False when the samples could not judge
    the pass (the reference outputs carry no signal: see :class:`OptimizationReport`); the
    figures against the original are then left out.
    """

    name: str
    stage: str
    status: str
    reason: str
    exact: bool = False
    seconds: float = 0.0
    check_seconds: float = 0.0
    before: GraphStats | None = None
    after: GraphStats | None = None
    vs_previous: Agreement | None = None
    vs_original: Agreement | None = None
    loss: float | None = None
    notes: tuple[str, ...] = attrs.field(default=(), converter=tuple)
    details: Mapping[str, Any] = attrs.field(factory=dict, converter=_frozen)
    judged: bool = True

    @property
    def kept(self) -> bool:
        return self.status == KEPT

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "stage": self.stage,
            "status": self.status,
            "reason": self.reason,
            "judged": self.judged,
            "exact": self.exact,
            "seconds": round(self.seconds, 4),
            "check_seconds": round(self.check_seconds, 4),
            "before": self.before.to_json() if self.before else None,
            "after": self.after.to_json() if self.after else None,
            "vs_previous": self.vs_previous.to_json() if self.vs_previous else None,
            "vs_original": self.vs_original.to_json() if self.vs_original else None,
            "loss": _num(self.loss),
            "notes": list(self.notes),
            "details": _jsonable(dict(self.details)),
        }


@attrs.frozen(kw_only=True)
class OptimizationReport:
    """Every pass of one optimization run, and the whole run's effect.

    ``metric`` names the budgeted figure (``top1_points`` or ``cosine_loss``); ``budget`` its limit.
    ``samples`` describes what the passes were checked on (``generated_samples`` when no calibration
    data was given). ``final_agreement`` compares the final graph with the original.

    ``signal`` says whether the reference outputs vary across the samples enough to judge a pass
    (:func:`~edgecore.optimize.agreement.signal_of`); when they do not (:attr:`can_judge` False),
    ``final_agreement`` and ``final_loss`` are None, lossy passes are skipped, and ``check_hint``
    says what samples to give instead.
    """

    model: str
    backend: str
    metric: str
    budget: float
    samples: str
    generated_samples: bool
    original: GraphStats
    final: GraphStats
    passes: tuple[PassRecord, ...] = attrs.field(converter=tuple)
    original_accuracy: float | None = None
    final_agreement: Agreement | None = None
    final_loss: float | None = None
    seconds: float = 0.0
    config: Mapping[str, Any] = attrs.field(factory=dict, converter=_frozen)
    signal: Signal | None = None
    check_hint: str = ""

    @property
    def can_judge(self) -> bool:
        """Whether the checks could judge the passes (some reference output responds to the samples)."""
        return self.signal is None or self.signal.can_judge

    @property
    def check_problem(self) -> str:
        """What limits the checks, in words, with what to do about it ('' when nothing does)."""
        if self.signal is None or not self.signal.flat:
            return ""
        head = "the check cannot judge" if not self.signal.can_judge else "the checks ignore some outputs"
        return f"{head}: {self.signal.reason}" + (f"; {self.check_hint}" if self.check_hint else "")

    @property
    def kept(self) -> tuple[str, ...]:
        return tuple(p.name for p in self.passes if p.status == KEPT)

    @property
    def rolled_back(self) -> tuple[str, ...]:
        return tuple(p.name for p in self.passes if p.status in (ROLLED_BACK, FAILED))

    def record(self, name: str) -> PassRecord:
        """The record of pass ``name`` (KeyError if it did not run)."""
        for record in self.passes:
            if record.name == name:
                return record
        raise KeyError(f"no pass {name!r} in this report; passes: {[p.name for p in self.passes]}")

    @property
    def size_reduction(self) -> float:
        """Original bytes / final bytes."""
        return self.original.bytes / max(1, self.final.bytes)

    def to_json(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "backend": self.backend,
            "metric": self.metric,
            "budget": _num(self.budget),
            "samples": self.samples,
            "generated_samples": self.generated_samples,
            "original": self.original.to_json(),
            "final": self.final.to_json(),
            "size_reduction": round(self.size_reduction, 4),
            "original_accuracy": self.original_accuracy,
            "final_agreement": self.final_agreement.to_json() if self.final_agreement else None,
            "final_loss": _num(self.final_loss),
            "seconds": round(self.seconds, 3),
            "passes": [p.to_json() for p in self.passes],
            "config": _jsonable(dict(self.config)),
            "check": dict(self.signal.to_json(), problem=self.check_problem) if self.signal is not None else None,
        }

    def format_table(self) -> str:
        """A plain-text table: one row per pass, then the totals."""
        metric = "top-1 loss (pts)" if self.metric == "top1_points" else "1-cos vs orig"
        header = ["pass", "status", "time s", "nodes", "params", "MB", "max rel err", metric]
        rows = [header]
        for p in self.passes:
            rows.append(
                [
                    p.name,
                    p.status,
                    f"{p.seconds:.2f}",
                    _change(p.before.nodes if p.before else None, p.after.nodes if p.after else None),
                    _change(p.before.parameters if p.before else None, p.after.parameters if p.after else None),
                    _change(_mb(p.before), _mb(p.after), fmt="{:.2f}"),
                    _sci(p.vs_previous.max_rel_error) if p.vs_previous else "-",
                    _sci(p.loss) if p.loss is not None else ("-" if p.judged else "not judged"),
                ]
            )
        widths = [max(len(str(r[i])) for r in rows) for i in range(len(header))]
        lines = [
            f"Optimization of {self.model} on {self.backend}: checked on {self.samples}; "
            f"budget {self.metric} <= {_sci(self.budget)}",
        ]
        if self.check_problem:
            lines.append(("CHECK CANNOT JUDGE: " if not self.can_judge else "NOTE: ") + self.check_problem)
        for i, row in enumerate(rows):
            lines.append("  ".join(str(c).ljust(w) for c, w in zip(row, widths)).rstrip())
            if i == 0:
                lines.append("  ".join("-" * w for w in widths))
        for p in self.passes:
            lines.append(f"- {p.name}: {p.reason}")
            lines.extend(f"    {note}" for note in p.notes)
        final = f"total: {self.original.nodes} -> {self.final.nodes} nodes, " + (
            f"{self.original.bytes / 1e6:.2f} -> {self.final.bytes / 1e6:.2f} MB ({self.size_reduction:.2f}x smaller)"
        )
        if not self.can_judge:
            final += ", agreement with the original not judged (see above)"
        elif self.final_agreement is not None:
            final += f", cosine to original {self.final_agreement.cosine:.6f}"
            if self.final_agreement.accuracy is not None and self.original_accuracy is not None:
                final += f", top-1 {self.original_accuracy:.2f}% -> {self.final_agreement.accuracy:.2f}%"
        lines.append(final)
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.format_table()


def _mb(stats: GraphStats | None) -> float | None:
    return None if stats is None else stats.bytes / 1e6


def _change(before: Any, after: Any, fmt: str = "{}") -> str:
    if before is None:
        return "-"
    if after is None or after == before:
        return fmt.format(before)
    return f"{fmt.format(before)} -> {fmt.format(after)}"


def _sci(value: float | None) -> str:
    if value is None:
        return "-"
    if not math.isfinite(value):
        return str(value)
    return f"{value:.3g}"


def _num(value: float | None) -> float | str | None:
    if value is None:
        return None
    return value if math.isfinite(value) else str(value)


def _jsonable(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [_jsonable(v) for v in value]
    if isinstance(value, float):
        return _num(value)
    if isinstance(value, (str, int, bool)) or value is None:
        return value
    if hasattr(value, "item"):
        return _jsonable(value.item())
    return str(value)
