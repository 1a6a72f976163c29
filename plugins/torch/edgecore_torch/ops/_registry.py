"""The operator registry and what an operator's builder may ask about its node.

Each ONNX operator is one *builder*: ``build(ctx) -> run``. The builder reads the node's attributes
and the inputs that steer the computation rather than feed it (shapes, axes, pads, ``k``...) through
the :class:`OpContext`, and returns ``run(*inputs)``, a closure of torch calls with every such value
baked in as Python ints. ``run`` receives one argument per node input: the tensor, or None for an
absent input or one the builder read as a value (through :meth:`OpContext.value`, ``ints``, ...).

Builders are called once per input signature (the recorder calls them while it runs the graph the
first time with those shapes), so ``run`` is a straight line of torch calls with static shapes: what
CUDA-graph capture needs. A builder that reads a value only known at run time (an input computed
from the data, or the shape of a tensor whose size depends on the data) marks the context
``dynamic``; the recorder then calls it again on every run and the signature is not captured.

Registration is explicit: ``@register("Relu")`` next to each builder, in the modules that
:mod:`edgecore_torch.ops` imports.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping, Sequence

import attrs
import torch

__all__ = ["OpDef", "OpContext", "register", "lookup", "registered", "ONNX_TO_TORCH", "torch_dtype", "run_dtype"]

Run = Callable[..., Any]
Builder = Callable[["OpContext"], Run]


@attrs.frozen(kw_only=True)
class OpDef:
    """One operator: ``build`` lowers a node; ``check(node)`` returns why a node's attributes are not
    supported (None when they are); ``data_dependent``: the output shape depends on input values."""

    op_type: str
    domain: str
    build: Builder
    check: Callable[[Any], str | None] | None = None
    data_dependent: bool = False


_OPS: dict[tuple[str, str], OpDef] = {}


def register(
    op_type: str,
    *,
    domain: str = "",
    check: Callable[[Any], str | None] | None = None,
    data_dependent: bool = False,
) -> Callable[[Builder], Builder]:
    """Register the decorated builder for ``domain::op_type`` (refuses a second one)."""

    def decorate(build: Builder) -> Builder:
        key = (domain, op_type)
        if key in _OPS:
            raise ValueError(f"operator {op_type!r} (domain {domain!r}) is registered twice")
        _OPS[key] = OpDef(op_type=op_type, domain=domain, build=build, check=check, data_dependent=data_dependent)
        return build

    return decorate


def lookup(domain: str, op_type: str) -> OpDef | None:
    return _OPS.get(("" if domain == "ai.onnx" else domain, op_type))


def registered() -> Mapping[tuple[str, str], OpDef]:
    return dict(_OPS)


ONNX_TO_TORCH: dict[int, torch.dtype] = {
    1: torch.float32,
    2: torch.uint8,
    3: torch.int8,
    4: torch.uint16,
    5: torch.int16,
    6: torch.int32,
    7: torch.int64,
    9: torch.bool,
    10: torch.float16,
    11: torch.float64,
    12: torch.uint32,
    13: torch.uint64,
    14: torch.complex64,
    15: torch.complex128,
    16: torch.bfloat16,
}


#: unsigned types torch has few kernels for: computed in the next wider signed type, cast back at the
#: outputs (wrap-around arithmetic and comparisons agree; uint64 values past 2**63 do not)
WIDENED = {torch.uint16: torch.int32, torch.uint32: torch.int64, torch.uint64: torch.int64}


def run_dtype(dtype: torch.dtype, compute: torch.dtype | None) -> torch.dtype:
    """The dtype a tensor of (ONNX-level) ``dtype`` has while a plan runs."""
    if dtype == torch.float32 and compute is not None:
        return compute
    return WIDENED.get(dtype, dtype)


def torch_dtype(elem_type: int) -> torch.dtype:
    try:
        return ONNX_TO_TORCH[int(elem_type)]
    except KeyError:
        raise NotImplementedError(f"ONNX element type {elem_type} has no torch dtype here") from None


class OpContext:
    """One node as its builder sees it: attributes, input facts, and values known before running.

    ``known[i]`` is a host tensor when input ``i`` is known for this signature (a constant, or
    computed from constants and shapes); ``live[i]`` is the tensor computed from the data otherwise
    (at record time, or at run time for a dynamic node); ``static[i]`` says whether that live
    tensor's shape is the same on every run of the signature.
    """

    __slots__ = ("node", "device", "compute", "known", "live", "static", "hints", "widen", "dynamic", "consumed")

    def __init__(
        self,
        node: Any,
        known: Sequence[torch.Tensor | None],
        live: Sequence[torch.Tensor | None],
        static: Sequence[bool],
        device: torch.device,
        compute: torch.dtype | None,
        hints: frozenset[str] = frozenset(),
        widen: bool = False,
    ) -> None:
        self.node = node
        self.known = known
        self.live = live
        self.static = static
        self.device = device
        self.compute = compute  # float32 tensors run in this dtype (None: as they are)
        self.hints = hints  # lowering choices for this device ("channels_last")
        self.widen = widen  # a plan's context: narrow unsigned types run widened (see WIDENED)
        self.dynamic = False
        self.consumed: set[int] = set()

    # -- the node --------------------------------------------------------------------------------

    def attr(self, name: str, default: Any = None) -> Any:
        return self.node.attrs.get(name, default)

    @property
    def opset(self) -> int:
        return self.node.opset

    @property
    def num_inputs(self) -> int:
        return len(self.node.inputs)

    @property
    def num_outputs(self) -> int:
        return len(self.node.outputs)

    def present(self, i: int) -> bool:
        return i < len(self.node.inputs) and bool(self.node.inputs[i])

    def output_wanted(self, j: int) -> bool:
        return j < len(self.node.outputs) and bool(self.node.outputs[j])

    # -- input values (steering inputs: shapes, axes, pads, k ...) ----------------------------------

    def is_known(self, i: int) -> bool:
        return self.present(i) and self.known[i] is not None

    def value(self, i: int) -> torch.Tensor:
        """Input ``i``'s content as a host tensor; the run closure gets None for it."""
        self.consumed.add(i)
        known = self.known[i]
        if known is not None:
            return known
        self.dynamic = True  # read from the data: a device sync, and a fresh build on every run
        return self.live[i].detach().cpu()

    def ints(self, i: int) -> list[int]:
        return [int(v) for v in self.value(i).reshape(-1).tolist()]

    def int(self, i: int) -> int:
        return int(self.value(i).reshape(-1)[0].item())

    def scalar(self, i: int) -> float | int | bool:
        return self.value(i).reshape(-1)[0].item()

    def optional_ints(self, i: int) -> list[int] | None:
        return self.ints(i) if self.present(i) else None

    # -- input facts -------------------------------------------------------------------------------

    def _tensor(self, i: int) -> torch.Tensor:
        known = self.known[i]
        return known if known is not None else self.live[i]

    def shape(self, i: int) -> tuple[int, ...]:
        if self.known[i] is None and not self.static[i]:
            self.dynamic = True
        return tuple(self._tensor(i).shape)

    def rank(self, i: int) -> int:
        return self._tensor(i).dim()

    def dtype(self, i: int) -> torch.dtype:
        """The dtype input ``i`` has when ``run`` receives it (float32 maps to the compute dtype)."""
        if self.known[i] is not None:
            return self.run_dtype(self.known[i].dtype)
        return self.live[i].dtype

    def run_dtype(self, dtype: torch.dtype) -> torch.dtype:
        """The dtype a tensor of ONNX type ``dtype`` has in this run (float32 -> the compute dtype;
        on a device, narrow unsigned types widened); as it is when evaluated on the host."""
        if self.widen:
            return run_dtype(dtype, self.compute)
        return self.compute if (dtype == torch.float32 and self.compute is not None) else dtype

    def onnx_dtype(self, elem_type: int) -> torch.dtype:
        return self.run_dtype(torch_dtype(elem_type))
