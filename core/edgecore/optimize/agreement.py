"""How far a graph's outputs are from a reference's: error figures, cosine, top-1, accuracy --
and whether the reference carries enough signal for those figures to mean anything.

Outputs are lists of arrays (one per model output, samples along axis 0). Every figure is a plain
float so that reports serialize as they are.

A check can only judge a pass if the reference outputs respond to the inputs: a text detector fed
noise answers a probability map of ~1e-5 everywhere, whatever the noise, and then the cosine of two
such maps, or the loss of an INT8 graph against them, measures rounding, not the model.
:func:`signal_of` finds such outputs (the spread of the outputs across samples, relative to their
magnitude, below :data:`MIN_SIGNAL`).
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import attrs
import numpy as np

__all__ = ["Agreement", "MIN_SIGNAL", "OutputSignal", "Signal", "compare", "is_classifier_output", "signal_of",
           "top1_accuracy"]


@attrs.frozen(kw_only=True)
class Agreement:
    """Agreement of a candidate's outputs with a reference's, on the same samples.

    ``max_abs_error``: largest absolute difference over all outputs. ``max_rel_error``: largest
    difference relative to the reference output's largest magnitude (what float rounding is judged
    by). ``cosine``: per-sample cosine similarity of each output, averaged over samples, worst
    output; ``min_cosine``: the worst single sample. ``top1_agreement``: share of samples whose
    arg-max class agrees (classifier outputs only). ``accuracy``: the candidate's top-1 accuracy in
    percent when labels were given.
    """

    max_abs_error: float
    max_rel_error: float
    cosine: float
    min_cosine: float
    top1_agreement: float | None = None
    accuracy: float | None = None

    @property
    def cosine_loss(self) -> float:
        """``1 - cosine``: 0 for identical outputs."""
        return 1.0 - self.cosine

    def to_json(self) -> dict[str, Any]:
        return {
            "max_abs_error": _finite(self.max_abs_error),
            "max_rel_error": _finite(self.max_rel_error),
            "cosine": _finite(self.cosine),
            "min_cosine": _finite(self.min_cosine),
            "top1_agreement": self.top1_agreement,
            "accuracy": self.accuracy,
        }


def _finite(value: float) -> float | str:
    return value if math.isfinite(value) else str(value)


def is_classifier_output(array: np.ndarray) -> bool:
    """A ``[samples, classes]`` float array with more than one class."""
    return array.ndim == 2 and array.shape[1] > 1 and array.dtype.kind == "f"


def top1_accuracy(logits: np.ndarray, labels: np.ndarray) -> float:
    """Top-1 accuracy in percent of ``[samples, classes]`` scores against integer labels."""
    if len(logits) != len(labels):
        raise ValueError(f"{len(labels)} labels for {len(logits)} samples")
    return float(np.mean(np.argmax(logits, axis=-1) == labels) * 100.0)


def _per_sample_cosine(ref: np.ndarray, out: np.ndarray) -> np.ndarray:
    n = ref.shape[0] if ref.ndim else 1
    a = ref.reshape(n, -1).astype(np.float64)
    b = out.reshape(n, -1).astype(np.float64)
    dot = np.einsum("ij,ij->i", a, b)
    na, nb = np.linalg.norm(a, axis=1), np.linalg.norm(b, axis=1)
    both_zero = (na == 0) & (nb == 0)
    with np.errstate(invalid="ignore", divide="ignore"):
        cos = dot / (na * nb)
    cos = np.where(both_zero, 1.0, cos)
    return np.where(np.isfinite(cos), np.clip(cos, -1.0, 1.0), -1.0)


def compare(
    reference: Sequence[np.ndarray], candidate: Sequence[np.ndarray], labels: np.ndarray | None = None
) -> Agreement:
    """Agreement of ``candidate`` with ``reference`` (same outputs, same samples)."""
    if len(reference) != len(candidate):
        raise ValueError(f"{len(candidate)} outputs to compare against {len(reference)}")
    max_abs = max_rel = 0.0
    cosines, worst = [], []
    top1 = None
    for ref, out in zip(reference, candidate):
        if ref.shape != out.shape:
            raise ValueError(f"output shapes differ: {list(out.shape)} against {list(ref.shape)}")
        if ref.size == 0:
            continue
        a = ref.astype(np.float64)
        b = out.astype(np.float64)
        diff = np.abs(a - b)
        finite = np.isfinite(a)
        if np.any(finite & ~np.isfinite(b)):
            abs_err = math.inf
        else:
            abs_err = float(np.max(np.where(finite, diff, 0.0)))
        scale = float(np.max(np.abs(np.where(finite, a, 0.0)))) or 1.0
        max_abs = max(max_abs, abs_err)
        max_rel = max(max_rel, abs_err / scale)
        if ref.dtype.kind in "fc":
            cos = _per_sample_cosine(a, b)
            cosines.append(float(np.mean(cos)))
            worst.append(float(np.min(cos)))
        else:  # integer or boolean outputs: the share of equal elements stands in for cosine
            same = float(np.mean(ref == out))
            cosines.append(same)
            worst.append(same)
        if top1 is None and is_classifier_output(ref):
            top1 = float(np.mean(np.argmax(ref, axis=1) == np.argmax(out, axis=1)))
    accuracy = None
    if labels is not None:
        logits = next((c for r, c in zip(reference, candidate) if is_classifier_output(r)), None)
        if logits is not None:
            accuracy = top1_accuracy(logits, labels)
    return Agreement(
        max_abs_error=max_abs,
        max_rel_error=max_rel,
        cosine=min(cosines, default=1.0),
        min_cosine=min(worst, default=1.0),
        top1_agreement=top1,
        accuracy=accuracy,
    )


#: Smallest spread of an output across samples, relative to its magnitude (RMS over elements of the
#: per-element standard deviation across samples, over the RMS of the values), for a check on it to
#: judge anything: below it the output is (nearly) the same for every sample. Runtimes approximate
#: transcendental functions to ~1e-3 relative (onnxruntime's Sigmoid near 1e-5 spreads 1e-3 on a
#: constant input), so the bar sits 10x above that; the zoo's models on generated samples spread
#: 0.14 (resnet50) to 0.86.
MIN_SIGNAL = 1e-2


@attrs.frozen(kw_only=True)
class OutputSignal:
    """How much one reference output varies across the samples: ``spread`` is the relative figure
    compared with :data:`MIN_SIGNAL` (None when it cannot be measured: one sample, or no values)."""

    name: str
    spread: float | None
    magnitude: float
    has_signal: bool
    why: str = ""

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "spread": self.spread, "magnitude": self.magnitude, "has_signal": self.has_signal,
                "why": self.why}


@attrs.frozen(kw_only=True)
class Signal:
    """Whether the reference outputs can judge a pass: ``can_judge`` when at least one output has
    signal; checks then compare only ``judged`` (the indices of those outputs). ``reason`` says,
    in words, which outputs carry no signal and why."""

    outputs: tuple[OutputSignal, ...] = attrs.field(converter=tuple)
    min_signal: float = MIN_SIGNAL

    @property
    def judged(self) -> tuple[int, ...]:
        return tuple(i for i, o in enumerate(self.outputs) if o.has_signal)

    @property
    def can_judge(self) -> bool:
        return bool(self.judged) or not self.outputs

    @property
    def flat(self) -> tuple[OutputSignal, ...]:
        return tuple(o for o in self.outputs if not o.has_signal)

    @property
    def reason(self) -> str:
        if not self.flat:
            return ""
        parts = "; ".join(f"output {o.name!r} {o.why}" for o in self.flat)
        if self.can_judge:
            return f"{parts}: left out of the checks"
        return f"{parts}: no output responds to these samples, so no check can tell a good pass from a bad one"

    def to_json(self) -> dict[str, Any]:
        return {"can_judge": self.can_judge, "reason": self.reason, "min_signal": self.min_signal,
                "outputs": [o.to_json() for o in self.outputs]}


def _output_signal(name: str, ref: np.ndarray, min_signal: float) -> OutputSignal:
    n = ref.shape[0] if ref.ndim else 1
    if ref.size == 0:
        return OutputSignal(name=name, spread=None, magnitude=0.0, has_signal=True)
    if ref.dtype.kind not in "fc":
        flat = ref.reshape(n, -1)
        varies = n < 2 or bool(np.any(flat != flat[:1]))
        why = "" if varies else f"is the same for all {n} samples"
        return OutputSignal(name=name, spread=None, magnitude=0.0, has_signal=varies, why=why)
    a = ref.reshape(n, -1).astype(np.float64)
    a = np.where(np.isfinite(a), a, 0.0)
    magnitude = float(np.sqrt(np.mean(a * a)))
    if magnitude == 0.0:
        return OutputSignal(name=name, spread=0.0, magnitude=0.0, has_signal=False,
                            why=f"is all zeros on the {n} sample(s)")
    if n < 2:
        return OutputSignal(name=name, spread=None, magnitude=magnitude, has_signal=True)
    spread = float(np.sqrt(np.mean(np.var(a, axis=0)))) / magnitude
    if spread >= min_signal:
        return OutputSignal(name=name, spread=spread, magnitude=magnitude, has_signal=True)
    return OutputSignal(
        name=name, spread=spread, magnitude=magnitude, has_signal=False,
        why=(f"is nearly the same for all {n} samples (spread {spread:.2g} of its magnitude {magnitude:.3g}, "
             f"below {min_signal:g})"),
    )


def signal_of(reference: Sequence[np.ndarray], names: Sequence[str], min_signal: float = MIN_SIGNAL) -> Signal:
    """Which reference outputs vary across the samples enough for a check to judge a pass by them."""
    return Signal(outputs=[_output_signal(n, r, min_signal) for n, r in zip(names, reference)], min_signal=min_signal)
