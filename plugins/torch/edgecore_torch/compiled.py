"""The torch backend's compiled model: plans per input signature, host/device staging, CUDA graphs.

A request's signature is its inputs' dtypes and shapes. The first request of a signature records a
:class:`~edgecore_torch.plan.Plan` (see :mod:`edgecore_torch.plan`); later ones replay it. On CUDA,
after ``warmup_runs`` eager replays, a capturable plan is captured as a CUDA graph with static input
and output buffers (:class:`CapturedPlan`); each request then copies its inputs in, replays the
graph and copies the outputs out. Up to ``max_signatures`` signatures are kept (least recently used
dropped first), each with its graph's memory.

Inputs: numpy arrays (host; through a pinned buffer per signature on CUDA, copied asynchronously),
or torch tensors / DLPack tensors already on the device, used without a copy. Outputs: numpy
arrays (through pinned memory on CUDA), or, with ``output_device="device"``, torch tensors on the
device (each request gets its own; work is ordered on the current stream, so torch consumers need no
synchronisation and DLPack consumers get the stream through ``__dlpack__``).

Concurrency: on the CPU any number of threads run at once (a plan keeps its values in the caller's
frame; the signature table takes ``_lock`` for lookups and inserts). On CUDA the whole request runs
under ``_lock``: graphs and staging buffers are shared state, and the device serializes the work
anyway.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import threading
from typing import Any, Mapping

import numpy as np
import torch

from edgecore.backend import CompiledModel
from edgecore.errors import InvalidInputError
from edgecore.graph import Graph
from edgecore.inputs import fill_out
from edgecore_torch.convert import from_numpy, numpy_dtype, to_numpy
from edgecore_torch.lowering import Program
from edgecore_torch.ops import torch_dtype
from edgecore_torch.options import TorchOptions
from edgecore_torch.plan import Plan, Recorder

logger = logging.getLogger(__name__)

__all__ = ["TorchCompiledModel", "CapturedPlan"]

_COMPUTE = {"fp32": None, "fp16": torch.float16, "bf16": torch.bfloat16}


class CapturedPlan:
    """A plan captured as one CUDA graph, with its static input and output tensors."""

    def __init__(self, plan: Plan, example: list[torch.Tensor], warmup: int) -> None:
        self.inputs = [torch.empty_like(x) for x in example]
        for buffer, x in zip(self.inputs, example):
            buffer.copy_(x)
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):  # warm-up off the default stream, as torch's docs ask
            for _ in range(max(warmup, 1)):
                plan.run(self.inputs)
        torch.cuda.current_stream().wait_stream(side)
        self.graph = torch.cuda.CUDAGraph()
        # thread_local: other threads (engine instances, the scheduler's workers) keep using CUDA
        with torch.cuda.graph(self.graph, capture_error_mode="thread_local"):
            self.outputs = plan.run(self.inputs)

    def run(self, inputs: list[torch.Tensor]) -> list[torch.Tensor]:
        for buffer, x in zip(self.inputs, inputs):
            if buffer.data_ptr() != x.data_ptr():
                buffer.copy_(x, non_blocking=True)
        self.graph.replay()
        return self.outputs


class _Signature:
    """One input signature: its plan, its replay count, its graph and staging buffers (CUDA)."""

    __slots__ = ("plan", "runs", "captured", "capture_failed", "pinned", "staged")

    def __init__(self, plan: Plan) -> None:
        self.plan = plan
        self.runs = 0
        self.captured: CapturedPlan | None = None
        self.capture_failed = False
        self.pinned: list[torch.Tensor | None] | None = None
        self.staged: torch.cuda.Event | None = None  # the last async copy out of the pinned inputs


def _is_device_tensor(value: Any) -> bool:
    if isinstance(value, torch.Tensor):
        return value.device.type != "cpu"
    device = getattr(value, "__dlpack_device__", None)
    if device is None or isinstance(value, np.ndarray):
        return False
    try:
        return int(device()[0]) != 1  # kDLCPU
    except Exception:
        return False


class TorchCompiledModel(CompiledModel):
    backend = "torch"

    def __init__(self, program: Program, graph: Graph, options: TorchOptions) -> None:
        self.inputs = graph.inputs
        self.outputs = graph.outputs
        self.options = options
        self.device = torch.device(options.device)
        self._cuda = self.device.type == "cuda"
        hints = frozenset({"channels_last"}) if options.channels_last else frozenset()
        self._out_dtypes = tuple(torch_dtype(int(spec.dtype)) for spec in graph.outputs)
        self._recorder = Recorder(program, self.device, _COMPUTE[options.precision], self._out_dtypes, hints)
        self._names = tuple(spec.name for spec in graph.inputs)
        self._out_names = tuple(spec.name for spec in graph.outputs)
        self._signatures: collections.OrderedDict[tuple, _Signature] = collections.OrderedDict()
        self._lock = threading.Lock()
        self._host_bytes = sum(t.numel() * t.element_size() for t in program.constants.values())
        self._stand_ins: dict[tuple, np.ndarray] = {}
        self._closed = False

    # -- feeds: numpy, host or device tensors --------------------------------------------------------

    def check(self, feeds: Mapping[str, Any]) -> dict[str, Any]:
        """As core's check, and device tensors (torch, or any DLPack producer) pass without a copy."""
        if not isinstance(feeds, Mapping) or not any(_is_device_tensor(v) for v in feeds.values()):
            return super().check(feeds)
        device = {k: v if isinstance(v, torch.Tensor) else torch.from_dlpack(v) for k, v in feeds.items() if _is_device_tensor(v)}
        stand_ins = {k: self._stand_in(t.dtype, tuple(t.shape)) for k, t in device.items()}
        checked = super().check({**feeds, **stand_ins})
        checked.update(device)
        return checked

    def _stand_in(self, dtype: torch.dtype, shape: tuple[int, ...]) -> np.ndarray:
        """A zero-stride numpy array of ``dtype`` and ``shape``: what the feed checker reads."""
        key = (dtype, shape)
        found = self._stand_ins.get(key)
        if found is None:
            if len(self._stand_ins) >= 64:
                self._stand_ins.clear()
            found = self._stand_ins[key] = np.broadcast_to(np.zeros((), numpy_dtype(dtype)), shape)
        return found

    def _tensor(self, value: Any) -> torch.Tensor:
        if isinstance(value, torch.Tensor):
            return value if value.device == self.device else value.to(self.device)
        return from_numpy(value) if self.device.type == "cpu" else from_numpy(value).to(self.device)

    # -- running -----------------------------------------------------------------------------------

    def _run(self, feeds: dict[str, Any], out: Mapping[str, np.ndarray] | None, deadline_ns: int) -> dict[str, Any]:
        if self._closed:
            raise InvalidInputError("this compiled model is closed")
        values = [feeds[name] for name in self._names]
        key = tuple((v.dtype, tuple(v.shape)) for v in values)
        with torch.no_grad():
            if not self._cuda:
                outputs = self._run_cpu(key, values, deadline_ns)
            else:
                with self._lock:
                    outputs = self._run_cuda(key, values, deadline_ns)
                    return self._deliver(outputs, out)
        return self._deliver(outputs, out)

    def _lookup(self, key: tuple) -> _Signature | None:
        with self._lock:
            entry = self._signatures.get(key)
            if entry is not None:
                self._signatures.move_to_end(key)
            return entry

    def _remember(self, key: tuple, entry: _Signature) -> None:
        with self._lock if not self._cuda else contextlib.nullcontext():  # CUDA callers hold it
            self._signatures[key] = entry
            while len(self._signatures) > self.options.max_signatures:
                self._signatures.popitem(last=False)

    def _run_cpu(self, key: tuple, values: list[Any], deadline_ns: int) -> list[torch.Tensor]:
        tensors = [self._tensor(v) for v in values]
        entry = self._lookup(key)
        if entry is None:
            plan, outputs = self._recorder.record(tensors)
            self._remember(key, _Signature(plan))
            return outputs
        return entry.plan.run(tensors, deadline_ns)

    def _run_cuda(self, key: tuple, values: list[Any], deadline_ns: int) -> list[torch.Tensor]:
        entry = self._signatures.get(key)
        if entry is not None:
            self._signatures.move_to_end(key)
            if entry.captured is not None:
                entry.runs += 1
                return entry.captured.run(self._stage(entry, values, entry.captured.inputs))
        tensors = self._stage(entry, values)
        if entry is None:
            plan, outputs = self._recorder.record(tensors)
            self._remember(key, _Signature(plan))
            return outputs
        entry.runs += 1
        if (
            self.options.cuda_graphs
            and entry.plan.capturable
            and not entry.capture_failed
            and entry.runs > self.options.warmup_runs
        ):
            try:
                entry.captured = CapturedPlan(entry.plan, tensors, self.options.warmup_runs)
                logger.debug("torch: captured a CUDA graph for signature %s", key)
                return entry.captured.run(tensors)
            except Exception as exc:  # a plan that cannot be captured keeps running eagerly
                entry.capture_failed = True
                logger.warning("torch: CUDA graph capture failed for signature %s (%r); running eagerly", key, exc)
                torch.cuda.synchronize(self.device)
        return entry.plan.run(tensors, deadline_ns)

    def _stage(
        self, entry: _Signature | None, values: list[Any], into: list[torch.Tensor] | None = None
    ) -> list[torch.Tensor]:
        """Device tensors of ``values``; host arrays go through pinned buffers kept per signature,
        straight into ``into`` (a captured graph's static inputs) when given."""
        if entry is None or not self.options.pinned_staging or all(isinstance(v, torch.Tensor) for v in values):
            return [self._tensor(v) for v in values]
        if entry.pinned is None:
            entry.pinned = [
                None if isinstance(v, torch.Tensor) else torch.empty(v.shape, dtype=from_numpy(v).dtype, pin_memory=True)
                for v in values
            ]
        if entry.staged is not None:
            entry.staged.synchronize()  # the previous request's copies have left the pinned buffers
        staged = []
        for i, (value, pinned) in enumerate(zip(values, entry.pinned)):
            if pinned is None or isinstance(value, torch.Tensor):
                staged.append(self._tensor(value))
                continue
            pinned.copy_(from_numpy(value))
            if into is not None:
                into[i].copy_(pinned, non_blocking=True)
                staged.append(into[i])
            else:
                staged.append(pinned.to(self.device, non_blocking=True))
        entry.staged = torch.cuda.Event()
        entry.staged.record()
        return staged

    # -- outputs -----------------------------------------------------------------------------------

    def _deliver(self, outputs: list[torch.Tensor], out: Mapping[str, np.ndarray] | None) -> dict[str, Any]:
        if self.options.output_device == "device" and out is None:
            if self._cuda:
                return {name: t.clone() for name, t in zip(self._out_names, outputs)}
            return dict(zip(self._out_names, outputs))
        if not self._cuda:
            host = [t if t.device.type == "cpu" else t.cpu() for t in outputs]
        elif self.options.pinned_staging:
            host = []
            for t in outputs:
                pinned = torch.empty(t.shape, dtype=t.dtype, pin_memory=True)
                pinned.copy_(t, non_blocking=True)
                host.append(pinned)
            torch.cuda.current_stream(self.device).synchronize()
        else:
            host = [t.cpu() for t in outputs]
        result = {name: to_numpy(t) for name, t in zip(self._out_names, host)}
        return fill_out(result, out) if out else result

    # -- facts -------------------------------------------------------------------------------------

    def memory_bytes(self) -> int:
        if self.device.type == "cpu":
            return self._host_bytes
        return self._recorder.constants_bytes()

    def signatures(self) -> list[dict[str, Any]]:
        """What is kept per signature: shapes, steps, steps rebuilt per run, whether the plan can be
        captured (no step waits for the device) and whether a CUDA graph runs it."""
        with self._lock:
            items = list(self._signatures.items())
        return [
            {
                "inputs": [list(shape) for _, shape in key],
                "steps": len(entry.plan.steps),
                "dynamic_steps": entry.plan.num_dynamic,
                "capturable": entry.plan.capturable,
                "cuda_graph": entry.captured is not None,
                "runs": entry.runs + 1,
            }
            for key, entry in items
        ]

    def close(self) -> None:
        with self._lock:
            self._closed = True
            self._signatures.clear()

