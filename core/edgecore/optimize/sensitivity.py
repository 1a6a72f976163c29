"""Finding the nodes that lose the most when lowered (fp16, int8), and keeping them in float.

Used by precision passes that must meet the accuracy budget:

1. :func:`local_errors` runs the float graph and the lowered graph side by side with every candidate
   node's output exposed, and scores each node by the error it *adds*: the relative L2 error at its
   output minus the largest error already present at the candidate nodes feeding it.
2. :func:`fallback_search` keeps the top-ranked 1, 2, 4, 8... nodes in float until the loss fits the
   budget, then bisects down to the fewest that do; each try is measured on the samples.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Callable, Sequence

import attrs
import numpy as np
import onnx_ir as ir

if TYPE_CHECKING:
    from edgecore.optimize.manager import PassContext

logger = logging.getLogger(__name__)

__all__ = ["local_errors", "rank_nodes", "fallback_search", "FallbackResult", "intermediate_values"]

#: Values exposed per run when collecting intermediate outputs (bounds memory on big graphs).
CHUNK = 48


def _copy(model: ir.Model) -> ir.Model:
    return ir.from_proto(ir.to_proto(model))


def _values_by_name(model: ir.Model) -> dict[str, ir.Value]:
    found = {}
    for node in model.graph:
        for value in node.outputs:
            if value.name:
                found[value.name] = value
    return found


def intermediate_values(
    context: PassContext, model: ir.Model, names: Sequence[str], rows: int, *, chunk_size: int = CHUNK,
    reduce: Callable[[np.ndarray], np.ndarray] | None = None,
) -> dict[str, np.ndarray]:
    """Values ``names`` of ``model`` on the first ``rows`` samples (``reduce``-d as they come, if given)."""
    result: dict[str, np.ndarray] = {}
    for start in range(0, len(names), chunk_size):
        chunk = list(names[start : start + chunk_size])
        probe = _copy(model)
        values = _values_by_name(probe)
        exposed = [
            values[n] for n in chunk
            if n in values and values[n].dtype is not None and not values[n].is_graph_output()
        ]
        if not exposed:
            continue
        probe.graph.outputs.extend(exposed)
        outputs = context.run(probe, rows=rows)
        for value in exposed:
            if value.name in outputs:
                array = outputs.pop(value.name)
                result[value.name] = reduce(array) if reduce is not None else array
    return result


def _relative_error(reference: np.ndarray, value: np.ndarray) -> float:
    a = reference.astype(np.float64).reshape(-1)
    b = value.astype(np.float64).reshape(-1)
    if a.shape != b.shape:
        return float("inf")
    norm = np.linalg.norm(a)
    err = np.linalg.norm(a - b)
    if not np.isfinite(err):
        return float("inf")
    return float(err / norm) if norm > 0 else float(err)


def local_errors(
    context: PassContext, float_model: ir.Model, lowered_model: ir.Model, candidates: Sequence[str], *, rows: int = 2
) -> dict[str, float]:
    """Error each candidate node (by name) adds when lowered: output error minus inherited error."""
    nodes = {n.name: n for n in float_model.graph if n.name}
    present = [c for c in candidates if c in nodes and nodes[c].outputs]
    out_name = {c: nodes[c].outputs[0].name for c in present}
    lowered_names = set(_values_by_name(lowered_model))
    wanted = [out_name[c] for c in present if out_name[c] in lowered_names]
    reference = intermediate_values(context, float_model, wanted, rows)
    lowered = intermediate_values(context, lowered_model, wanted, rows)
    error = {
        c: _relative_error(reference[out_name[c]], lowered[out_name[c]])
        for c in present
        if out_name[c] in reference and out_name[c] in lowered
    }
    candidate_set = set(error)
    scores = {}
    for name, err in error.items():
        inherited = max((error[p] for p in _feeding_candidates(nodes[name], candidate_set)), default=0.0)
        scores[name] = err - inherited if np.isfinite(err) else float("inf")
    return scores


def _feeding_candidates(node: ir.Node, candidates: set[str]) -> set[str]:
    """The nearest candidate nodes upstream of ``node``."""
    found: set[str] = set()
    stack = [v for v in node.inputs if v is not None]
    seen: set[int] = set()
    while stack:
        value = stack.pop()
        if id(value) in seen:
            continue
        seen.add(id(value))
        producer = value.producer()
        if producer is None:
            continue
        if producer.name in candidates:
            found.add(producer.name)
            continue
        stack.extend(v for v in producer.inputs if v is not None)
    return found


def rank_nodes(
    context: PassContext, float_model: ir.Model, lowered_model: ir.Model, candidates: Sequence[str]
) -> list[str]:
    """Candidates, most sensitive first (candidates that could not be scored come last)."""
    scores = local_errors(context, float_model, lowered_model, candidates)
    scored = sorted(scores, key=lambda n: -scores[n])
    return scored + [c for c in candidates if c not in scores]


@attrs.frozen(kw_only=True)
class FallbackResult:
    """The fewest nodes kept in float that meet the budget (``model`` None if none did)."""

    model: ir.Model | None = attrs.field(eq=False, repr=False)
    kept_float: tuple[str, ...]
    loss: float | None
    tries: tuple[tuple[int, float], ...]  # (nodes kept in float, loss)


def fallback_search(
    context: PassContext,
    ranked: Sequence[str],
    build: Callable[[frozenset[str]], ir.Model],
    *,
    max_tries: int = 12,
) -> FallbackResult:
    """Keep the top 1, 2, 4... of ``ranked`` in float until the loss fits, then bisect to the fewest."""
    tries: list[tuple[int, float]] = []
    best: tuple[int, ir.Model, float] | None = None

    def attempt(k: int) -> tuple[ir.Model, float]:
        model = build(frozenset(ranked[:k]))
        loss = context.measure(model)
        tries.append((k, loss))
        logger.debug("fallback with %d node(s) in float: loss %.4g", k, loss)
        return model, loss

    low, k = 0, 1
    while len(tries) < max_tries:
        k = min(k, len(ranked))
        model, loss = attempt(k)
        if context.within_budget(loss):
            best = (k, model, loss)
            break
        low = k
        if k == len(ranked):
            break
        k *= 2
    if best is not None:
        high = best[0]
        while high - low > 1 and len(tries) < max_tries:
            mid = (low + high) // 2
            model, loss = attempt(mid)
            if context.within_budget(loss):
                best, high = (mid, model, loss), mid
            else:
                low = mid
    if best is None:
        return FallbackResult(model=None, kept_float=(), loss=None, tries=tuple(tries))
    k, model, loss = best
    return FallbackResult(model=model, kept_float=tuple(ranked[:k]), loss=loss, tries=tuple(tries))
