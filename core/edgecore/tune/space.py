"""The search space of ``edgecore tune``: candidates, rejections, and the cheap pruning done first.

A :class:`Candidate` is one configuration: backend × precision × threads × batch size × memory
mode. Precisions are ``fp32`` (the model as given), ``fp16`` and ``int8`` (graphs from the pass
manager, each lossy pass checked against the accuracy budget) and ``bf16`` (the fp32 graph with the
backend's precision hint, where the CPU computes in bf16).

Pruning by cheap signals, before anything is measured (each a :class:`Rejection` with its reason):
a backend that is unavailable, serves no CPU here, lacks operators of the model, or is a reference
evaluator (exact, not fast: its priority band says so); fp16 on a CPU without fp16 arithmetic
(onnxruntime and torch then run it through casts: smaller, not faster; kept when a memory budget is
given, where smaller matters); bf16 on a CPU without bf16 instructions.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any, Iterable

import attrs

from edgecore.specs import PRIORITY_REFERENCE

if TYPE_CHECKING:
    from edgecore.config import EngineConfig
    from edgecore.graph import Graph
    from edgecore.plugins import PluginManager

__all__ = ["Candidate", "Rejection", "PRECISIONS", "thread_choices", "batch_choices", "usable_backends",
           "precision_rejections", "BATCH_CHOICES", "STAGES"]

PRECISIONS = ("fp32", "int8", "fp16", "bf16")
#: Batch sizes tried for throughput (those the model's batch dimension allows).
BATCH_CHOICES = (1, 2, 4, 8, 16, 32)

#: CPU flags that mean the CPU computes in these types (x86 and Arm names).
_FP16_FLAGS = frozenset({"avx512_fp16", "amx_fp16", "asimdhp", "fphp"})
_BF16_FLAGS = frozenset({"avx512_bf16", "amx_bf16", "bf16", "sve_bf16"})

#: Rejection stages, in the order the search meets them.
STAGES = ("backend", "precision", "build", "accuracy", "compile", "latency", "halving", "memory", "final")


@attrs.frozen(kw_only=True)
class Candidate:
    """One configuration to measure. ``threads`` 0 = the runtime's default; ``batch`` is the batch
    size of one query (throughput; 1 for latency); ``instances`` parallel compiled models behind the
    scheduler, fed ``instances`` queries at once (throughput); ``memory_mode`` as :class:`EngineConfig`'s."""

    backend: str
    precision: str
    threads: int = 0
    batch: int = 1
    instances: int = 1
    memory_mode: str = "balanced"

    @property
    def key(self) -> str:
        text = f"{self.backend}/{self.precision}/t{self.threads}/b{self.batch}"
        if self.instances > 1:
            text += f"/i{self.instances}"
        return text if self.memory_mode == "balanced" else f"{text}/{self.memory_mode}"

    @property
    def samples_per_query(self) -> int:
        return self.batch * self.instances

    @property
    def is_default(self) -> bool:
        """The backend's default configuration (what ``EngineConfig(backend=...)`` runs)."""
        return (self.precision, self.threads, self.batch, self.instances, self.memory_mode) == (
            "fp32", 0, 1, 1, "balanced")

    @property
    def artifact(self) -> str:
        """The precision whose graph this candidate runs (bf16 runs the fp32 graph with a hint)."""
        return "fp32" if self.precision == "bf16" else self.precision

    @property
    def engine_key(self) -> tuple[str, str, int, int, int, str]:
        """What needs its own compiled engine (the batch size only behind the scheduler, with instances)."""
        return (self.backend, self.precision, self.threads, self.instances, self.batch if self.instances > 1 else 0,
                self.memory_mode)

    def engine_config(self, base: EngineConfig) -> EngineConfig:
        """``base`` with this candidate's settings."""
        changes: dict[str, Any] = dict(backend=self.backend, num_threads=self.threads, memory_mode=self.memory_mode,
                                       precision="bf16" if self.precision == "bf16" else base.precision)
        if self.batch > 1 or self.instances > 1:
            changes.update(max_batch_size=max(self.batch, 1), preferred_batch_sizes=(self.batch,),
                           instances=self.instances, max_queue_delay_us=0)
        return attrs.evolve(base, **changes)

    def to_json(self) -> dict[str, Any]:
        return dict(attrs.asdict(self), key=self.key)


@attrs.frozen(kw_only=True)
class Rejection:
    """Why something left the search: ``what`` is a backend, ``backend/precision`` or a candidate key."""

    what: str
    stage: str
    reason: str

    def to_json(self) -> dict[str, str]:
        return attrs.asdict(self)


def usable_cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def thread_choices(cores: int | None = None) -> tuple[int, ...]:
    """0 (the runtime's default), 1, powers of two below the core count, and the core count."""
    cores = cores or usable_cores()
    found = {0, 1, cores}
    power = 2
    while power < cores:
        found.add(power)
        power *= 2
    return tuple(sorted(found))


def batch_choices(graph: Graph, limit: int = 32) -> tuple[int, ...]:
    """Batch sizes the model takes: :data:`BATCH_CHOICES` up to ``limit`` when every input's first
    dimension is symbolic, else the fixed one."""
    fixed = set()
    for spec in graph.inputs:
        if spec.shape is None or not spec.shape:
            continue
        first = spec.shape[0]
        if isinstance(first, int):
            fixed.add(first)
    if fixed:
        return (min(fixed),)
    return tuple(b for b in BATCH_CHOICES if b <= limit) or (1,)


def usable_backends(
    graph: Graph, plugin_manager: PluginManager, wanted: Iterable[str] | None
) -> tuple[list[str], list[Rejection]]:
    """Backends to search, best priority first, and those pruned (with the reason)."""
    from edgecore.errors import EdgecoreError
    from edgecore.selection import available_backend

    specs = plugin_manager.backends()
    names = list(wanted) if wanted else sorted(specs, key=lambda n: -specs[n].priority)
    kept, rejected = [], []
    for name in names:
        spec = specs.get(name)
        if spec is None:
            rejected.append(Rejection(what=name, stage="backend",
                                      reason=f"no backend named {name!r} is registered; registered: {sorted(specs)}"))
            continue
        if not wanted and spec.priority <= PRIORITY_REFERENCE:
            rejected.append(Rejection(what=name, stage="backend", reason="a reference evaluator (priority "
                                      f"{spec.priority}): exact, not fast; name it in backends= to search it"))
            continue
        try:
            backend = available_backend(spec, plugin_manager)
            missing = backend.unsupported_ops(graph)
        except EdgecoreError as exc:
            rejected.append(Rejection(what=name, stage="backend", reason=str(exc)))
            continue
        except Exception as exc:  # a plugin's own failure: the search goes on without it
            rejected.append(Rejection(what=name, stage="backend", reason=f"{type(exc).__name__}: {exc}"))
            continue
        if missing:
            rejected.append(Rejection(what=name, stage="backend", reason=f"cannot run operators {sorted(missing)}"))
            continue
        kept.append(name)
    return kept, rejected


def precision_rejections(
    backend: str, device_kinds: set[str], cpu_flags: frozenset[str], *, memory_budget: bool, wanted: Iterable[str]
) -> tuple[list[str], list[Rejection]]:
    """Precisions worth building for ``backend``, and those pruned by what the hardware lacks."""
    kept, rejected = [], []
    cpu_only = device_kinds <= {"cpu"}
    for precision in wanted:
        why = ""
        if precision == "fp16" and cpu_only and not cpu_flags & _FP16_FLAGS and not memory_budget:
            why = ("the CPU lacks fp16 arithmetic (no avx512_fp16/amx_fp16): fp16 runs through casts, smaller but "
                   "not faster (kept when a memory budget is given)")
        elif precision == "bf16" and cpu_only and not cpu_flags & _BF16_FLAGS:
            why = "the CPU lacks bf16 instructions (no avx512_bf16/amx_bf16)"
        if why:
            rejected.append(Rejection(what=f"{backend}/{precision}", stage="precision", reason=why))
        else:
            kept.append(precision)
    return kept, rejected
