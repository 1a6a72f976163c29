"""ONNX operators lowered to torch: importing this package registers every one of them."""

from edgecore_torch.ops import attention, detection, elementwise, extra, nn, quant, reduce, resize, rnn, tensor  # noqa: F401  (registration)
from edgecore_torch.ops._registry import OpContext, OpDef, lookup, registered, torch_dtype

#: Operators the recorder itself interprets (control flow), beside the registered builders.
CONTROL_FLOW = frozenset({"If", "Loop"})

__all__ = ["OpContext", "OpDef", "lookup", "registered", "torch_dtype", "CONTROL_FLOW"]
