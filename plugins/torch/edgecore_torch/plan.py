"""Recording a :class:`~edgecore_torch.lowering.Program` into a :class:`Plan` for one input signature.

The first run of a signature (input shapes and dtypes) interprets the program node by node and
records it. Every value is either *known* (a host tensor fixed for the signature: constants, input
shapes, and what is computed from them alone) or *live* (a tensor on the device computed from the
data). Nodes whose inputs are all known are evaluated on the host right away and leave nothing in
the plan; ``Shape``/``Size`` of a live tensor whose shape is fixed for the signature are known too.
Every other node is built once (its builder bakes the known values in as Python ints) and becomes a
step. So a plan is a straight line of torch calls over live tensors with static shapes: cheap to
replay, and capturable as a CUDA graph.

A node that needs a value only the data gives (a shape computed from input values, the size of a
``NonZero`` result...) is rebuilt on every run (a *dynamic* step, which syncs with the device); a plan
with such a step is not captured. ``If`` with a known condition is inlined; with a live one it is a
dynamic step that interprets the chosen branch.

Concurrency: a Plan is immutable once built; :meth:`Plan.run` keeps its values in a list local to
the call, so any number of threads may run one plan at once (on the CPU; CUDA callers serialize).
"""

from __future__ import annotations

import time
from typing import Any, Callable, Sequence

import attrs
import torch

from edgecore.errors import RequestTimeoutError
from edgecore_torch.lowering import Node, Program, Subgraph, as_outputs, evaluate_known
from edgecore_torch.ops import CONTROL_FLOW, OpContext, lookup
from edgecore_torch.ops._registry import run_dtype

__all__ = ["Plan", "Recorder"]

_SHAPE_OPS = frozenset({"Shape", "Size"})


class _Val:
    """A value while recording: ``known`` (host tensor) or ``live`` (device tensor)."""

    __slots__ = ("known", "live", "static", "slot")

    def __init__(self, known: torch.Tensor | None = None, live: torch.Tensor | None = None, static: bool = True):
        self.known, self.live, self.static, self.slot = known, live, static, -1


@attrs.frozen(kw_only=True)
class Step:
    fn: Callable[..., Any]
    ins: tuple[int, ...]
    outs: tuple[int, ...]
    multi: bool
    free: tuple[int, ...] = ()
    dynamic: bool = False  # built again on every run (reads values only the data gives)
    syncs: bool = False  # waits for the device (a data-dependent size): not capturable
    name: str = ""


@attrs.frozen(kw_only=True, eq=False)
class Plan:
    """One signature's recorded steps; :meth:`run` replays them on new inputs of that signature."""

    steps: tuple[Step, ...]
    template: tuple[Any, ...]
    input_slots: tuple[int, ...]
    input_casts: tuple[torch.dtype | None, ...]
    output_slots: tuple[int, ...]
    output_casts: tuple[torch.dtype | None, ...]
    output_copies: tuple[bool, ...]  # outputs that alias an input or a constant: copied when returned
    capturable: bool

    def run(self, inputs: Sequence[torch.Tensor], deadline_ns: int = 0) -> list[torch.Tensor]:
        env = list(self.template)
        for slot, x, cast in zip(self.input_slots, inputs, self.input_casts):
            env[slot] = x if cast is None else x.to(cast)
        now = time.perf_counter_ns
        for step in self.steps:
            if deadline_ns and now() > deadline_ns:
                raise RequestTimeoutError(f"the run passed its deadline before step {step.name!r}")
            result = step.fn(*[env[i] for i in step.ins])
            if step.multi:
                for slot, value in zip(step.outs, result):
                    if slot >= 0:
                        env[slot] = value
            else:
                env[step.outs[0]] = result
            for slot in step.free:
                env[slot] = None
        outputs = []
        for slot, cast, copy in zip(self.output_slots, self.output_casts, self.output_copies):
            value = env[slot]
            if cast is not None and value.dtype != cast:
                value = value.to(cast)
            elif copy:
                value = value.clone()
            outputs.append(value)
        return outputs

    @property
    def num_dynamic(self) -> int:
        return sum(1 for s in self.steps if s.dynamic)


class Recorder:
    """Records plans of one program for one device and compute dtype.

    ``materialize`` turns a known host tensor into the device operand a step receives (cast to the
    compute dtype for float32, channels-last for 4-D convolution weights when hinted); constants of
    the program are materialized once per Recorder and shared by every plan.
    """

    def __init__(
        self,
        program: Program,
        device: torch.device,
        compute: torch.dtype | None,
        output_dtypes: Sequence[torch.dtype],
        hints: frozenset[str] = frozenset(),
    ) -> None:
        self.program = program
        self.device = device
        self.compute = compute
        self.output_dtypes = tuple(output_dtypes)
        self.hints = hints
        self._device_constants: dict[tuple[int, bool], torch.Tensor] = {}
        self._constant_ids = {id(t) for t in program.constants.values()}

    # -- materializing known values on the device ------------------------------------------------

    def materialize(self, value: torch.Tensor, channels_last: bool = False) -> torch.Tensor:
        key = (id(value), channels_last)
        shared = key[0] in self._constant_ids
        if shared and key in self._device_constants:
            return self._device_constants[key]
        dtype = run_dtype(value.dtype, self.compute)
        if value.dtype == torch.float32 and dtype == torch.float16:
            value = torch.clamp(value, -65504.0, 65504.0)  # float32 extremes (masks) stay finite
        tensor = value.to(self.device, dtype=dtype)
        if channels_last:
            tensor = tensor.contiguous(memory_format=torch.channels_last)
        if shared:
            self._device_constants[key] = tensor
        return tensor

    def constants_bytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self._device_constants.values())

    # -- recording ---------------------------------------------------------------------------------

    def record(self, inputs: Sequence[torch.Tensor]) -> tuple[Plan, list[torch.Tensor]]:
        """Run the program on ``inputs`` (device tensors of the model's dtypes), recording its plan;
        returns the plan and this run's outputs."""
        program = self.program
        env: dict[str, _Val] = {name: _Val(known=t) for name, t in program.constants.items()}
        feeds = []
        for name, x in zip(program.inputs, inputs):
            if run_dtype(x.dtype, self.compute) != x.dtype:
                x = x.to(run_dtype(x.dtype, self.compute))
            env[name] = val = _Val(live=x, static=True)
            feeds.append(val)
        steps: list[tuple[Callable, list[_Val | None], list[_Val | None], bool, bool, str]] = []
        self._interpret(program.nodes, env, steps)
        results = [env[name] for name in program.outputs]
        return self._finish(feeds, inputs, results, steps)

    def _interpret(self, nodes: Sequence[Node], env: dict[str, _Val], steps: list) -> None:
        for node in nodes:
            ins = [env[name] if name else None for name in node.inputs]
            if node.op_type in CONTROL_FLOW and not node.domain:
                outs = self._control_flow(node, ins, env, steps)
            elif all(v is None or v.known is not None for v in ins) or (
                node.op_type in _SHAPE_OPS and not node.domain and ins[0].static
            ):
                outs = self._evaluate_known(node, ins)
            else:
                outs = self._step(node, ins, steps)
            for name, val in zip(node.outputs, outs):
                if name and val is not None:
                    env[name] = val

    def _evaluate_known(self, node: Node, ins: list[_Val | None]) -> list[_Val | None]:
        if node.op_type in _SHAPE_OPS:  # reads only the (static) shape of its input
            op = lookup(node.domain, node.op_type)
            v = ins[0]
            ctx = OpContext(node, [v.known], [v.live], [True], torch.device("cpu"), None)
            return [_Val(known=op.build(ctx)())]
        values = evaluate_known(node, [v.known if v is not None else None for v in ins])
        return [_Val(known=t) if t is not None else None for t in values]

    def _context(self, node: Node, ins: list[_Val | None], live_override: list | None = None) -> OpContext:
        known = [v.known if v is not None else None for v in ins]
        live = live_override if live_override is not None else [v.live if v is not None else None for v in ins]
        static = [v.static if v is not None else True for v in ins]
        return OpContext(node, known, live, static, self.device, self.compute, self.hints, widen=True)

    def _operand(self, node: Node, index: int, v: _Val) -> torch.Tensor:
        if v.live is not None:
            return v.live
        channels_last = "channels_last" in self.hints and node.op_type == "Conv" and index == 1 and v.known.dim() == 4
        return self.materialize(v.known, channels_last)

    def _step(self, node: Node, ins: list[_Val | None], steps: list) -> list[_Val | None]:
        op = lookup(node.domain, node.op_type)
        if op is None:
            raise NotImplementedError(f"operator {node.op_type!r} (domain {node.domain!r}) has no torch lowering")
        ctx = self._context(node, ins)
        fn = op.build(ctx)
        if ctx.dynamic:
            fn = self._rebuilding(node, op, ins)
            step_ins = [v if v is not None else None for v in ins]
        else:
            step_ins = [None if (v is None or i in ctx.consumed) else v for i, v in enumerate(ins)]
        args = [self._operand(node, i, v) if v is not None else None for i, v in enumerate(step_ins)]
        result = fn(*args)
        multi = not isinstance(result, torch.Tensor)
        static = not ctx.dynamic and not op.data_dependent and all(v.static for v in ins if v is not None and v.live is not None)
        values = as_outputs(result, len(node.outputs))
        outs = [_Val(live=t, static=static) if t is not None and name else None for name, t in zip(node.outputs, values)]
        steps.append((fn, step_ins, args, outs, multi, (ctx.dynamic, op.data_dependent), node.name or node.op_type))
        return outs

    def _rebuilding(self, node: Node, op: Any, ins: list[_Val | None]) -> Callable[..., Any]:
        """A step that builds its node again on every run, from the values of that run."""
        known = [v.known if v is not None else None for v in ins]
        device, compute, hints = self.device, self.compute, self.hints
        count = len(ins)

        def rebuild(*xs):
            live = [None if known[i] is not None else xs[i] for i in range(count)]
            ctx = OpContext(node, known, live, [False] * count, device, compute, hints, widen=True)
            fn = op.build(ctx)
            return fn(*[None if i in ctx.consumed else xs[i] for i in range(count)])

        return rebuild

    # -- control flow ------------------------------------------------------------------------------

    def _control_flow(self, node: Node, ins: list[_Val | None], env: dict[str, _Val], steps: list) -> list[_Val | None]:
        if node.op_type == "Loop":
            return self._loop(node, ins, env, steps)
        cond = ins[0]
        branches = (node.attrs["then_branch"], node.attrs["else_branch"])
        if cond.known is not None:
            branch = branches[0] if bool(cond.known.reshape(-1)[0].item()) else branches[1]
            scope = dict(env)
            scope.update({name: _Val(known=t) for name, t in branch.constants.items()})
            self._interpret(branch.nodes, scope, steps)
            return [scope[name] for name in branch.outputs]
        free = sorted(set().union(*(_free_names(b) for b in branches)) & set(env))
        outer = [env[name] for name in free]

        def run_branch(flag, *values):
            branch = branches[0] if bool(flag.reshape(-1)[0].item()) else branches[1]
            scope = {name: _Val(known=v.known) if v.known is not None else _Val(live=x, static=False) for name, v, x in zip(free, outer, values)}
            scope.update({name: _Val(known=t) for name, t in branch.constants.items()})
            inner: list = []
            self._interpret(branch.nodes, scope, inner)
            return [s.live if s.live is not None else self.materialize(s.known) for s in (scope[n] for n in branch.outputs)]

        args = [cond.live] + [self._operand(node, -1, v) for v in outer]
        result = run_branch(*args)
        outs = [_Val(live=t, static=False) for t in result]
        steps.append((run_branch, [cond, *outer], args, outs, True, (True, True), node.name or "If"))
        return outs

    def _loop(self, node: Node, ins: list[_Val | None], env: dict[str, _Val], steps: list) -> list[_Val | None]:
        """Loop: a dynamic step that interprets the body once per iteration (trip count and condition
        are read from their values; scan outputs are stacked along a new first axis)."""
        body: Subgraph = node.attrs["body"]
        carried_count = len(node.inputs) - 2
        scan_count = len(body.outputs) - 1 - carried_count
        free = sorted((_free_names(body) - set(body.inputs)) & set(env))
        outer = [env[name] for name in free]
        device = self.device

        def scalar(value: Any) -> Any:
            return value.reshape(-1)[0].item()

        def run_loop(trip, cond, *rest):
            carried = list(rest[:carried_count])
            outer_values = rest[carried_count:]
            limit = int(scalar(trip)) if trip is not None else None
            going = bool(scalar(cond)) if cond is not None else True
            scans: list[list[torch.Tensor]] = [[] for _ in range(scan_count)]
            i = 0
            while going and (limit is None or i < limit):
                scope = {n: _Val(known=v.known) if v.known is not None else _Val(live=x, static=False) for n, v, x in zip(free, outer, outer_values)}
                scope.update({n: _Val(known=t) for n, t in body.constants.items()})
                scope[body.inputs[0]] = _Val(known=torch.tensor(i, dtype=torch.int64))
                scope[body.inputs[1]] = _Val(known=torch.tensor(going))
                for name, value in zip(body.inputs[2:], carried):
                    scope[name] = _Val(live=value, static=False)
                self._interpret(body.nodes, scope, [])
                produced = [s.live if s.live is not None else self.materialize(s.known) for s in (scope[n] for n in body.outputs)]
                going = bool(scalar(produced[0]))
                carried = produced[1 : 1 + carried_count]
                for store, value in zip(scans, produced[1 + carried_count :]):
                    store.append(value)
                i += 1
            stacked = [torch.stack(s) if s else torch.empty(0, device=device) for s in scans]
            return carried + stacked

        args = [self._operand(node, i, v) if v is not None else None for i, v in enumerate(ins)]
        args += [self._operand(node, -1, v) for v in outer]
        result = run_loop(*args)
        outs = [_Val(live=t, static=False) for t in result]
        steps.append((run_loop, [*ins, *outer], args, outs, True, (True, True), node.name or "Loop"))
        return outs

    # -- the plan ----------------------------------------------------------------------------------

    def _finish(
        self, feeds: list[_Val], inputs: Sequence[torch.Tensor], results: list[_Val], steps: list
    ) -> tuple[Plan, list[torch.Tensor]]:
        template: list[Any] = [None]  # slot 0: absent inputs

        def slot_of(v: _Val) -> int:
            if v.slot < 0:
                v.slot = len(template)
                template.append(None)
            return v.slot

        for v in feeds:
            slot_of(v)
        operands: dict[int, int] = {}  # id(known value) -> its slot, holding the device operand
        raw_steps = []
        for fn, ins, args, outs, multi, flags, name in steps:
            in_slots = []
            for v, arg in zip(ins, args):
                if v is None:
                    in_slots.append(0)
                elif v.live is not None:
                    in_slots.append(slot_of(v))
                else:
                    if id(v) not in operands:
                        operands[id(v)] = len(template)
                        template.append(arg)
                    in_slots.append(operands[id(v)])
            out_slots = [slot_of(v) if v is not None else -1 for v in outs]
            raw_steps.append((fn, in_slots, out_slots, multi, flags, name))
        held = {x.untyped_storage().data_ptr() for x in inputs if x.numel()}
        held.update(t.untyped_storage().data_ptr() for t in template if isinstance(t, torch.Tensor) and t.numel())
        held.update(t.untyped_storage().data_ptr() for t in self._device_constants.values() if t.numel())
        output_slots, output_casts, copies, values = [], [], [], []
        for v, dtype in zip(results, self.output_dtypes):
            if v.live is None:  # a known output: held by the plan, copied for each caller
                value = v.known.to(self.device)
                slot = len(template)
                template.append(value)
                copy = True
            else:
                value, slot = v.live, slot_of(v)
                copy = v in feeds or (value.numel() > 0 and value.untyped_storage().data_ptr() in held)
            output_slots.append(slot)
            output_casts.append(dtype if value.dtype != dtype else None)
            copies.append(copy)
            if value.dtype != dtype:
                value = value.to(dtype)
            elif copy:
                value = value.clone()
            values.append(value)
        last_use: dict[int, int] = {}
        for i, (_, ins, _, _, _, _) in enumerate(raw_steps):
            for s in ins:
                if s > 0:
                    last_use[s] = i
        keep = set(output_slots) | set(operands.values())
        free: dict[int, list[int]] = {}
        for s, i in last_use.items():
            if s not in keep:
                free.setdefault(i, []).append(s)
        plan_steps = tuple(
            Step(
                fn=fn, ins=tuple(ins), outs=tuple(outs), multi=multi, free=tuple(free.get(i, ())),
                dynamic=flags[0], syncs=flags[0] or flags[1], name=name,
            )
            for i, (fn, ins, outs, multi, flags, name) in enumerate(raw_steps)
        )
        casts = tuple(run_dtype(x.dtype, self.compute) if run_dtype(x.dtype, self.compute) != x.dtype else None for x in inputs)
        plan = Plan(
            steps=plan_steps,
            template=tuple(template),
            input_slots=tuple(v.slot for v in feeds),
            input_casts=casts,
            output_slots=tuple(output_slots),
            output_casts=tuple(output_casts),
            output_copies=tuple(copies),
            capturable=not any(s.syncs for s in plan_steps),
        )
        return plan, values


def _free_names(branch: Subgraph) -> set[str]:
    defined = set(branch.constants)
    used: set[str] = set()
    for node in branch.nodes:
        used.update(n for n in node.inputs if n and n not in defined)
        defined.update(n for n in node.outputs if n)
        for value in node.attrs.values():
            if isinstance(value, Subgraph):
                used.update(_free_names(value) - defined)
    used.update(n for n in branch.outputs if n not in defined)
    return used
