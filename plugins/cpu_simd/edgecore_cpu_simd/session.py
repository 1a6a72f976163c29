"""Creating ONNX Runtime sessions for ``cpu_simd``, and the arena that holds a budgeted session's
working memory.

Memory budget (``max_memory_usage``): besides the memory pool's checks (outputs), a budgeted session
allocates its working memory -- intermediate tensors and the outputs ONNX Runtime allocates itself --
from an arena capped at the budget. ONNX Runtime's Python API has no per-session arena settings
(``SessionOptions`` only switches the default arena on or off, ``enable_cpu_mem_arena``; no
``max_mem``). What it has is the environment's shared allocator:
``onnxruntime.create_and_register_allocator(OrtMemoryInfo, OrtArenaCfg(max_mem=...))``, used by the
sessions created with the session config ``session.use_env_allocators=1``. Registering again replaces
the environment's allocator for sessions created afterwards; a session keeps the one it was created
with. So :func:`new_session` registers the pool's arena (one per memory pool: the instances of an
engine share it; re-registered when another pool's arena was registered since) and creates the
session under one lock. A run that needs more fails inside ONNX Runtime ("Available memory of ... is
smaller than requested bytes") and :func:`arena_refused` recognises it, so that the compiled model
answers ``MemoryBudgetExceeded``: the arena never grows past its cap and, as every ONNX Runtime
arena, keeps what it took until its sessions go. Weights do not come from it. With
``custom_options={"enable_cpu_mem_arena": False}`` the session allocates from the system, unbounded.
Other code in the process that creates sessions with ``session.use_env_allocators=1`` shares the
arena registered last.

Concurrency: :func:`new_session` may be called from any thread; registration and creation take
``_sessions_lock``.
"""

from __future__ import annotations

import functools
import threading
import weakref
from typing import Any

from edgecore.memory import MemoryPool

__all__ = ["ort", "new_session", "budget", "uses_env_allocators", "arena_refused", "QUIET"]

QUIET = 4  # ORT log severity: fatal only, so nothing reaches stderr (failures still raise)
_ENV_ALLOCATORS = "session.use_env_allocators"
_REFUSALS = ("Available memory of", "Failed to allocate memory")  # ORT's arena refusing an allocation

_sessions_lock = threading.Lock()
_arena_pool: Any = None  # weak reference to the MemoryPool whose arena the environment holds now


@functools.cache
def ort() -> Any:
    import onnxruntime

    return onnxruntime


def budget(pool: MemoryPool | None) -> int:
    """The memory budget in bytes (0 = none) that a pool carries."""
    return pool.max_memory_usage if pool is not None else 0


def use_arena(so: Any) -> None:
    """Make ``so`` take its working memory from the environment's arena (see :func:`new_session`)."""
    so.add_session_config_entry(_ENV_ALLOCATORS, "1")


def uses_env_allocators(so: Any) -> bool:
    try:
        return so.get_session_config_entry(_ENV_ALLOCATORS) == "1"
    except RuntimeError:  # not set
        return False


def new_session(model: str | bytes, so: Any, pool: MemoryPool | None) -> Any:
    """An ``InferenceSession`` of ``model`` (a path: external data mapped from beside it; or the
    bytes of a small model) on the CPU provider; with ``session.use_env_allocators=1``, on an arena
    of ``max_mem`` = ``pool``'s budget."""
    rt = ort()
    if not uses_env_allocators(so):
        return rt.InferenceSession(model, so, providers=["CPUExecutionProvider"])
    global _arena_pool
    with _sessions_lock:  # a session takes the arena registered when it is created
        if pool is None or _arena_pool is None or _arena_pool() is not pool:
            memory = rt.OrtMemoryInfo("Cpu", rt.OrtAllocatorType.ORT_ARENA_ALLOCATOR, 0, rt.OrtMemType.DEFAULT)
            # arena_extend_strategy 1 (kSameAsRequested): grow by what a run needs, not to the next power of two
            cfg = rt.OrtArenaCfg({"max_mem": budget(pool), "arena_extend_strategy": 1})
            rt.create_and_register_allocator(memory, cfg)
            _arena_pool = weakref.ref(pool) if pool is not None else None
        return rt.InferenceSession(model, so, providers=["CPUExecutionProvider"])


def arena_refused(exc: BaseException) -> bool:
    """Whether ONNX Runtime failed ``exc`` because its arena could not allocate."""
    text = str(exc)
    return any(refusal in text for refusal in _REFUSALS)
