"""What :func:`edgecore.tune.tune` returns."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

import attrs

if TYPE_CHECKING:
    from edgecore.tune.search import SearchOutcome

__all__ = ["TuneResult"]


@attrs.frozen(kw_only=True)
class TuneResult:
    """What :func:`tune` found and wrote: the chosen candidate's key (None: nothing met the budgets),
    the output folder and its files, the gain over the best default configuration (the objective
    figure's change, negative = faster, with its 95 % interval and verdict from ``bench --compare``),
    and the whole search (:class:`~edgecore.tune.search.SearchOutcome`)."""

    chosen: str | None
    output: Path | None
    files: Mapping[str, Path]
    gain: Mapping[str, Any] | None
    report: Mapping[str, Any]
    outcome: SearchOutcome = attrs.field(repr=False)

    @property
    def ok(self) -> bool:
        return self.chosen is not None
