"""Compare two benchmark reports figure by figure, with each figure's noise taken into account.

``edgecore bench --compare OLD.json NEW.json [--fail-on-regression 5%]`` (and :func:`compare_reports`)
pairs the results of two harness reports (same scenario and batch size) and, for every figure —
latency p50 and p99 (lower is better) and samples/s (higher is better) — gives the change from old to
new with a 95 % confidence interval, and a verdict:

``regression``  the whole interval lies beyond the threshold on the bad side (flagged: exit code 1)
``improvement`` the whole interval lies beyond the threshold on the good side
``changed``     the interval excludes no change but does not clear the threshold
``within noise`` the interval contains no change
``not judged``  a tail or throughput figure from a report measured on a busy machine (below)

Noise comes from the samples each report records. A percentile's interval is the distribution-free
one of order statistics: with ``n`` latencies, the ``q`` quantile lies between the values of rank
``n q ± z sqrt(n q (1-q))``; the values at those ranks are read from the report's latency histogram
(interpolated inside a bin; the histogram is clipped at p99.9, so a p99 interval of a few hundred
samples is cut at that edge). Throughput's interval is the standard error of the mean query latency
(``std / sqrt(n)``), as throughput is queries over measured time. The two reports' intervals are
combined into one for the ratio new / old.

Within-run intervals do not see what differs between two processes (MEASURING.md: fresh processes on
a small machine differ by up to 1.7x): the threshold is there for that, and reports measured on
another CPU or with other settings are named in ``notes``. On a busy machine (a report whose
``machine.load.quiet`` is false) one stolen time slice moves p99 and throughput by more than any
regression worth finding, and no interval of one run sees it coming: those figures are shown but not
judged; the median, which a few slow queries do not move, still is.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Iterable, Mapping

import attrs

from edgecore.errors import ConfigurationError

__all__ = ["FigureChange", "Comparison", "compare_reports", "load_report", "quantile_interval", "parse_threshold",
           "REGRESSION", "IMPROVEMENT", "CHANGED", "WITHIN_NOISE", "NOT_JUDGED"]

REGRESSION = "regression"
IMPROVEMENT = "improvement"
CHANGED = "changed"
WITHIN_NOISE = "within noise"
NOT_JUDGED = "not judged"

#: 95 % two-sided.
Z = 1.96

#: Figures compared: (name, where in a result, lower is better, judged on a busy machine).
FIGURES: tuple[tuple[str, str, bool, bool], ...] = (
    ("p50_ms", "p50", True, True),
    ("p99_ms", "p99", True, False),
    ("samples_per_s", "samples_per_s", False, False),
)


@attrs.frozen(kw_only=True)
class FigureChange:
    """One figure of one result in both reports: values, intervals, change and verdict.

    ``change`` is the relative change new/old - 1 oriented so that positive is worse (slower or
    less throughput); ``low``/``high`` its 95 % interval, in the same orientation.
    """

    scenario: str
    batch: int | None
    figure: str
    old: float
    new: float
    old_interval: tuple[float, float]
    new_interval: tuple[float, float]
    change: float
    low: float
    high: float
    verdict: str

    def to_json(self) -> dict[str, Any]:
        data = attrs.asdict(self)
        data["old_interval"] = list(self.old_interval)
        data["new_interval"] = list(self.new_interval)
        return data


@attrs.frozen(kw_only=True)
class Comparison:
    """Every figure compared, the threshold, and notes on what makes the two reports differ."""

    old: str
    new: str
    threshold: float
    figures: tuple[FigureChange, ...] = attrs.field(converter=tuple)
    notes: tuple[str, ...] = attrs.field(default=(), converter=tuple)
    unmatched: tuple[str, ...] = attrs.field(default=(), converter=tuple)
    #: each report's machine load record (``machine.load``), as measured with it
    load: Mapping[str, Any] = attrs.field(factory=dict)

    @property
    def regressions(self) -> tuple[FigureChange, ...]:
        return tuple(f for f in self.figures if f.verdict == REGRESSION)

    @property
    def regressed(self) -> bool:
        return bool(self.regressions)

    def to_json(self) -> dict[str, Any]:
        return {
            "old": self.old,
            "new": self.new,
            "threshold": self.threshold,
            "regressed": self.regressed,
            "figures": [f.to_json() for f in self.figures],
            "notes": list(self.notes),
            "unmatched": list(self.unmatched),
            "load": dict(self.load),
            "method": "95% intervals: order statistics of the recorded latencies for percentiles, standard error "
                      "of the mean latency for throughput; a regression is flagged only when the whole interval "
                      "of the change lies beyond the threshold",
        }

    def markdown(self) -> str:
        lines = [
            "| scenario | batch | figure | old | new | change (+ = worse) | 95% interval | verdict |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for f in self.figures:
            lines.append(
                f"| {f.scenario} | {f.batch if f.batch is not None else '-'} | {f.figure} | {_sig(f.old)} | "
                f"{_sig(f.new)} | {f.change:+.1%} | [{f.low:+.1%}, {f.high:+.1%}] | {f.verdict} |"
            )
        return "\n".join(lines)


def parse_threshold(text: str | float) -> float:
    """``"5%"``, ``"0.05"`` or ``0.05`` -> 0.05."""
    try:
        if isinstance(text, str) and text.strip().endswith("%"):
            value = float(text.strip()[:-1]) / 100
        else:
            value = float(text)
    except ValueError:
        raise ConfigurationError(f"a regression threshold is a share such as 5% or 0.05, got {text!r}") from None
    if not 0 <= value < 10:
        raise ConfigurationError(f"a regression threshold must lie in [0%, 1000%), got {text!r}")
    return value


def load_report(path: str | Path) -> dict[str, Any]:
    """A harness JSON report (docs/benchmarks.md), checked for the fields a comparison needs."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise ConfigurationError(f"cannot read benchmark report {path}: {exc}") from exc
    if not isinstance(data, dict) or not str(data.get("schema", "")).startswith("edgecore.bench/"):
        raise ConfigurationError(
            f"{path} is not an edgecore benchmark report (expected schema 'edgecore.bench/1', got "
            f"{data.get('schema') if isinstance(data, dict) else type(data).__name__!r}); write one with "
            f"edgecore bench MODEL --json FILE"
        )
    return data


# -- noise ------------------------------------------------------------------------------------------


def _knots(histogram: Mapping[str, Any] | None, latency: Mapping[str, Any] | None) -> list[tuple[float, float]]:
    """``(cumulative share, latency)`` points of the latency distribution: the report's recorded
    percentiles (exact) merged with its histogram's bin edges, sorted, latency made non-decreasing."""
    points: list[tuple[float, float]] = []
    latency = latency or {}
    for share, key in ((0.0, "min"), (0.5, "p50"), (0.9, "p90"), (0.95, "p95"), (0.99, "p99"), (1.0, "max")):
        if latency.get(key) is not None:
            points.append((share, float(latency[key])))
    if histogram and histogram.get("counts") and sum(histogram["counts"]):
        edges, counts = histogram["edges_ms"], histogram["counts"]
        total, seen = float(sum(counts)), 0.0
        for index, count in enumerate(counts[:-1]):  # the last bin also holds everything above p99.9
            seen += count
            points.append((seen / total, float(edges[index + 1])))
    points.sort()
    out: list[tuple[float, float]] = []
    for share, value in points:
        value = max(value, out[-1][1]) if out else value
        out.append((share, value))
    return out


def _at(knots: list[tuple[float, float]], share: float) -> float:
    share = min(max(share, 0.0), 1.0)
    for (s0, v0), (s1, v1) in zip(knots, knots[1:]):
        if s0 <= share <= s1:
            return v0 if s1 == s0 else v0 + (share - s0) / (s1 - s0) * (v1 - v0)
    return knots[-1][1]


def quantile_interval(
    histogram: Mapping[str, Any] | None, q: float, *, latency: Mapping[str, Any] | None = None, z: float = Z
) -> tuple[float, float, float] | None:
    """``(value, low, high)`` of quantile ``q`` (0-1) and its distribution-free interval (order
    statistics: ranks ``n q ± z sqrt(n q (1-q))``), read from a report's recorded percentiles
    (``latency``) and histogram, interpolated between them; None without samples."""
    n = sum(histogram["counts"]) if histogram and histogram.get("counts") else (latency or {}).get("count") or 0
    knots = _knots(histogram, latency)
    if n <= 0 or len(knots) < 2:
        return None
    spread = z * math.sqrt(n * q * (1 - q)) / n
    return _at(knots, q), _at(knots, q - spread), _at(knots, q + spread)


def _interval(result: Mapping[str, Any], figure: str) -> tuple[float, tuple[float, float]] | None:
    """A figure of one result and its 95 % interval (relative spread around the recorded value)."""
    latency = result.get("latency_ms") or {}
    if figure in ("p50", "p99"):
        value = latency.get(figure)
        found = quantile_interval(result.get("histogram"), int(figure[1:]) / 100, latency=latency)
        if value is None or found is None:
            return None
        middle, low, high = found
        # the recorded percentile is exact; the histogram gives the spread around it
        return value, (max(0.0, value - (middle - low)), value + (high - middle))
    value = result.get(figure)
    mean, std, count = latency.get("mean"), latency.get("std"), latency.get("count")
    if value is None or not mean or not count:
        return None
    relative = min(0.99, Z * (std or 0.0) / mean / math.sqrt(count))
    return value, (value * (1 - relative), value * (1 + relative))


def _change(old: tuple[float, tuple[float, float]], new: tuple[float, tuple[float, float]],
            lower_is_better: bool) -> tuple[float, float, float]:
    """new/old - 1 (positive = worse) and its interval, from the two intervals combined in
    quadrature on the log scale."""
    (a, (a_lo, a_hi)), (b, (b_lo, b_hi)) = old, new
    if a <= 0 or b <= 0:
        return float("nan"), float("nan"), float("nan")

    def half(value: float, lo: float, hi: float) -> float:
        lo = max(lo, value * 1e-6)
        return max(math.log(value / lo), math.log(hi / value))

    ratio = math.log(b / a)
    spread = math.hypot(half(a, a_lo, a_hi), half(b, b_lo, b_hi))
    sign = 1.0 if lower_is_better else -1.0
    low, high = sorted((sign * (ratio - spread), sign * (ratio + spread)))
    return math.expm1(sign * ratio), math.expm1(low), math.expm1(high)


def _verdict(low: float, high: float, threshold: float) -> str:
    if low > threshold:
        return REGRESSION
    if high < -threshold:
        return IMPROVEMENT
    if low > 0 or high < 0:
        return CHANGED
    return WITHIN_NOISE


# -- the comparison ---------------------------------------------------------------------------------


def _key(result: Mapping[str, Any]) -> tuple[str, int | None]:
    return str(result.get("scenario")), result.get("batch")


def _notes(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    notes = []
    for label, report in (("old", old), ("new", new)):
        if _busy(report):
            notes.append(f"the {label} report was measured on a busy machine: its figures carry other work "
                         f"(p99 and throughput not judged)")
    old_machine, new_machine = old.get("machine") or {}, new.get("machine") or {}
    for field in ("cpu", "cpu_simd", "usable_cores"):
        if old_machine.get(field) != new_machine.get(field):
            notes.append(f"machine {field} differs: {old_machine.get(field)} vs {new_machine.get(field)}")
    for field in ("backend",):
        if old.get(field) != new.get(field):
            notes.append(f"{field} differs: {old.get(field)} vs {new.get(field)}")
    old_model, new_model = old.get("model") or {}, new.get("model") or {}
    if old_model.get("fingerprint") != new_model.get("fingerprint"):
        notes.append(f"the models differ: {old_model.get('source')} vs {new_model.get('source')}")
    old_config, new_config = old.get("config") or {}, new.get("config") or {}
    changed = sorted(k for k in set(old_config) | set(new_config) if old_config.get(k) != new_config.get(k))
    if changed:
        notes.append("engine settings differ: " + ", ".join(f"{k} {old_config.get(k)!r} -> {new_config.get(k)!r}"
                                                             for k in changed))
    notes.append("the reports come from separate processes: within-run intervals do not cover what differs "
                 "between processes; the threshold does")
    return notes


def _busy(report: Mapping[str, Any]) -> bool:
    return ((report.get("machine") or {}).get("load") or {}).get("quiet") is False


def compare_results(
    old: Iterable[Mapping[str, Any]], new: Iterable[Mapping[str, Any]], *, threshold: float, busy: bool = False
) -> tuple[list[FigureChange], list[str]]:
    """Figure changes of results matched by (scenario, batch), and the keys found in one side only.
    ``busy``: a report was measured on a busy machine (tail and throughput figures are not judged)."""
    old_by = {_key(r): r for r in old}
    new_by = {_key(r): r for r in new}
    changes: list[FigureChange] = []
    for key in [k for k in old_by if k in new_by]:
        for name, field, lower_is_better, judged_when_busy in FIGURES:
            a, b = _interval(old_by[key], field), _interval(new_by[key], field)
            if a is None or b is None:
                continue
            change, low, high = _change(a, b, lower_is_better)
            if math.isnan(change):
                continue
            changes.append(FigureChange(
                scenario=key[0], batch=key[1], figure=name, old=a[0], new=b[0], old_interval=a[1],
                new_interval=b[1], change=change, low=low, high=high,
                verdict=NOT_JUDGED if busy and not judged_when_busy else _verdict(low, high, threshold),
            ))
    unmatched = [f"{s} (batch {b}) only in the {side} report"
                 for side, mine, other in (("old", old_by, new_by), ("new", new_by, old_by))
                 for (s, b) in mine if (s, b) not in other]
    return changes, unmatched


def compare_reports(
    old: Mapping[str, Any] | str | Path, new: Mapping[str, Any] | str | Path, *, threshold: float | str = 0.05
) -> Comparison:
    """Compare two harness reports (JSON documents or paths to them); see the module docstring."""
    names = [str(x) if isinstance(x, (str, Path)) else str((x.get("model") or {}).get("source", "report"))
             for x in (old, new)]
    old_doc = load_report(old) if isinstance(old, (str, Path)) else old
    new_doc = load_report(new) if isinstance(new, (str, Path)) else new
    limit = parse_threshold(threshold)
    changes, unmatched = compare_results(old_doc.get("results") or [], new_doc.get("results") or [], threshold=limit,
                                         busy=_busy(old_doc) or _busy(new_doc))
    if not changes:
        raise ConfigurationError(
            f"the reports share no comparable result (scenario and batch size with latency figures): old has "
            f"{sorted(map(str, (_key(r) for r in old_doc.get('results') or [])))}, new has "
            f"{sorted(map(str, (_key(r) for r in new_doc.get('results') or [])))}"
        )
    return Comparison(old=names[0], new=names[1], threshold=limit, figures=changes,
                      notes=_notes(old_doc, new_doc), unmatched=unmatched,
                      load={side: (doc.get("machine") or {}).get("load") for side, doc in (("old", old_doc), ("new", new_doc))})


def _sig(value: float) -> str:
    if value == 0 or abs(value) >= 100:
        return f"{value:.0f}"
    return f"{value:.{max(0, 2 - math.floor(math.log10(abs(value))))}f}"
