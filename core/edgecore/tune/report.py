"""The tuning report: every candidate with its figures and fate, as JSON, Markdown, a rich table and a
Pareto plot (latency against accuracy loss, memory as colour; matplotlib only when installed).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Sequence

import attrs

if TYPE_CHECKING:
    from edgecore.tune.search import Entry, SearchOutcome

__all__ = ["SCHEMA", "rows", "markdown", "rich_table", "write_pareto"]

#: Identifies the layout of ``report.json`` (docs/tuning.md).
SCHEMA = "edgecore.tune/1"

HEADERS = ("candidate", "p50 ms", "p99 ms", "samples/s", "vs anchor", "memory MB", "accuracy loss", "status",
           "why")


def _num(value: float | None, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    if value == 0:
        return "0"
    magnitude = math.floor(math.log10(abs(value)))
    return f"{value:.{max(0, digits - 1 - magnitude)}f}" if magnitude < digits else f"{value:.0f}"


def _order(entry: Entry) -> tuple:
    rank = {"chosen": 0, "default": 1, "finalist": 2, "candidate": 3, "rejected": 4}[entry.status]
    relative = entry.figures.relative if entry.figures is not None else math.inf
    return rank, -entry.rounds, relative, entry.candidate.key


def rows(outcome: SearchOutcome) -> list[list[str]]:
    """One row per candidate (chosen first, rejected last), then one per pruned backend/precision."""
    found = []
    for entry in sorted(outcome.entries, key=_order):
        f = entry.figures
        found.append([
            entry.candidate.key, _num(f.p50_ms if f else None), _num(f.p99_ms if f else None),
            _num(f.samples_per_s if f else None), _num(f.relative if f else None), _num(entry.memory_mb),
            _num(entry.loss) + (f" {entry.metric}" if entry.loss and entry.metric else ""),
            entry.status + (f" ({entry.stage})" if entry.stage else ""), entry.reason,
        ])
    for rejection in outcome.rejections:
        found.append([rejection.what, "-", "-", "-", "-", "-", "-", f"pruned ({rejection.stage})", rejection.reason])
    return found


def markdown(outcome: SearchOutcome, summary: Sequence[str], comparison: str | None) -> str:
    lines = ["# edgecore tune report", "", *summary, ""]
    if comparison:
        lines += ["## Gain over the default configuration (bench --compare)", "", comparison, ""]
    lines += ["## Candidates", "",
              "Figures are from each candidate's last round (interleaved with that round's anchor: "
              "'vs anchor' < 1 is better); memory is PSS growth in a fresh process (finalists only).", "",
              "| " + " | ".join(HEADERS) + " |", "|" + "---|" * len(HEADERS)]
    for row in rows(outcome):
        lines.append("| " + " | ".join(cell.replace("|", "/").replace("\n", " ") for cell in row) + " |")
    if outcome.notes:
        lines += ["", "## Notes", ""] + [f"- {note}" for note in outcome.notes]
    return "\n".join(lines) + "\n"


def rich_table(outcome: SearchOutcome, title: str) -> Any:
    """The candidates that were measured or are still in the running, and the pruned backends and
    precisions; the rest (rejected unmeasured) are counted in the caption (report.md lists them)."""
    from rich.table import Table

    hidden = sum(1 for e in outcome.entries if e.figures is None and e.status == "rejected")
    table = Table(title=title, caption=f"{hidden} candidates rejected before being measured, and every reason: "
                  "see report.md" if hidden else "every reason: see report.md")
    for header in HEADERS[:-1]:
        table.add_column(header, overflow="fold", justify="left" if header in ("candidate", "status") else "right")
    styles = {"chosen": "bold green", "default": "cyan", "finalist": "", "candidate": "", "rejected": "dim"}
    shown = [e for e in outcome.entries if e.figures is not None or e.status != "rejected"]
    for row in rows(attrs.evolve(outcome, entries=shown, rejections=())):
        table.add_row(*row[:-1], style=styles.get(row[7].split(" ")[0], "dim"))
    return table


def _pareto(points: list[tuple[float, float]]) -> list[int]:
    """Indices of the points no other point beats on both coordinates (lower is better on both)."""
    front = []
    for i, (x, y) in enumerate(points):
        if not any((x2 <= x and y2 <= y) and (x2 < x or y2 < y) for j, (x2, y2) in enumerate(points) if j != i):
            front.append(i)
    return sorted(front, key=lambda i: points[i])


def write_pareto(outcome: SearchOutcome, destination: str | Path, objective: str) -> Path | None:
    """PNG of every measured candidate: its objective figure (x) against accuracy loss (y), memory as
    colour (grey: not measured), the Pareto front drawn, the chosen one ringed. None without matplotlib."""
    try:
        import matplotlib
    except ImportError:
        return None
    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    measured = [e for e in outcome.entries if e.figures is not None and e.loss is not None]
    if not measured:
        return None

    def x_of(entry: Entry) -> float:
        f = entry.figures
        if objective == "throughput":
            return 1000.0 / f.samples_per_s if f.samples_per_s else math.inf
        return f.p50_ms if f.p50_ms is not None else math.inf

    points = [(x_of(e), max(0.0, float(e.loss))) for e in measured]
    figure, ax = plt.subplots(figsize=(8, 5))
    memory = [e.memory_mb for e in measured]
    known = [i for i, m in enumerate(memory) if m is not None]
    unknown = [i for i, m in enumerate(memory) if m is None]
    if unknown:
        ax.scatter([points[i][0] for i in unknown], [points[i][1] for i in unknown], c="lightgrey",
                   edgecolors="grey", label="memory not measured", zorder=2)
    if known:
        dots = ax.scatter([points[i][0] for i in known], [points[i][1] for i in known],
                          c=[memory[i] for i in known], cmap="viridis", edgecolors="black", zorder=3)
        figure.colorbar(dots, ax=ax, label="PSS growth (MB)")
    front = _pareto(points)
    ax.plot([points[i][0] for i in front], [points[i][1] for i in front], color="tab:red", linewidth=1,
            label="Pareto front", zorder=1)
    for i, entry in enumerate(measured):
        if entry.status in ("chosen", "default") or i in front:
            ax.annotate(entry.candidate.key, points[i], fontsize=7, xytext=(4, 4), textcoords="offset points")
        if entry.status == "rejected":
            ax.scatter([points[i][0]], [points[i][1]], marker="x", color="black", s=20, zorder=4)
        if entry.status == "chosen":
            ax.scatter([points[i][0]], [points[i][1]], s=220, facecolors="none", edgecolors="tab:red",
                       linewidths=2, label="chosen", zorder=4)
    ax.set_xlabel("ms per sample (lower is better)" if objective == "throughput" else "p50 latency, ms")
    metric = next((e.metric for e in measured if e.metric), "vs the original")
    ax.set_ylabel(f"accuracy loss ({metric})")
    finite = [x for x, _ in points if math.isfinite(x) and x > 0]
    if finite and max(finite) / min(finite) > 20:
        ax.set_xscale("log")
    ax.set_title("edgecore tune: candidates (x = rejected)")
    ax.legend(fontsize=8, loc="best")
    path = Path(destination)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def entries_json(entries: Sequence[Entry]) -> list[Mapping[str, Any]]:
    return [e.to_json() for e in sorted(entries, key=_order)]
