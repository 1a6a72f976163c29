"""Between numpy arrays and OpenVINO's ports: element types, tensors that wrap arrays, port matching.

What raw OpenVINO's ``compiled_model(inputs)`` hides, and edgecore's zero-copy binding must do itself:

* **Element types numpy's OpenVINO binding does not know.** ``ov.Tensor(array)`` refuses
  ``ml_dtypes.bfloat16`` and float8 arrays, and ``Type.to_dtype()`` answers float16 for bf16 (and
  uint8 for float8), so an output read back as ``to_dtype()`` is silently wrong. Arrays of these
  types are wrapped as their bit pattern with the element type said explicitly (``ov.Tensor(array,
  shape, type)``, still no copy), and outputs are viewed back as the ``ml_dtypes`` type.
* **Arrays OpenVINO cannot wrap.** ``np.ascontiguousarray`` turns a rank-0 array into shape (1)
  (OpenVINO then refuses it: "model input (shape=[]) and the tensor (shape=(1)) are incompatible"),
  and a read-only array (``onnx.numpy_helper`` gives them; so do memory-mapped files) cannot be
  shared ("array is not writeable"): :func:`bindable` copies only what must be copied, keeping ranks.
* **Ports whose names OpenVINO merged or dropped.** When OpenVINO removes a node between an input
  and an output (Dropout and Identity at inference, one-input Sum/Max/Min, a scalar Einsum) the
  input's port can lose its own name and carry the output's instead; an input no node reads has no
  port at all. :func:`match_inputs` matches by name first, then the leftovers by position.
* **Outputs that are an input.** A result fed straight by a parameter shares the input's memory:
  an output buffer bound to it is never written (it comes back as whatever it held) and OpenVINO
  may copy that buffer *into the caller's input*. :func:`passthrough_outputs` finds them; they are
  never bound and are copied from the input instead.

Pure functions; thread-safe.
"""

from __future__ import annotations

from typing import Any, Sequence

import ml_dtypes
import numpy as np

from edgecore.errors import ModelLoadError

__all__ = ["numpy_dtype", "bindable", "wrap", "match_inputs", "passthrough_outputs"]

#: OpenVINO element type name -> (numpy dtype of its values, numpy dtype of its bit pattern)
_SPECIAL = {
    "bf16": (np.dtype(ml_dtypes.bfloat16), np.dtype(np.uint16)),
    "f8e4m3": (np.dtype(ml_dtypes.float8_e4m3fn), np.dtype(np.uint8)),
    "f8e5m2": (np.dtype(ml_dtypes.float8_e5m2), np.dtype(np.uint8)),
    "f8e8m0": (np.dtype(ml_dtypes.float8_e8m0fnu), np.dtype(np.uint8)),
}
#: numpy dtype -> (OpenVINO type name, bit-pattern dtype), for arrays ``ov.Tensor`` refuses
_BY_NUMPY = {values: (name, bits) for name, (values, bits) in _SPECIAL.items()}


def numpy_dtype(element_type: Any) -> np.dtype:
    """The numpy dtype of an OpenVINO ``Type`` (``ml_dtypes`` types where ``to_dtype()`` is wrong)."""
    special = _SPECIAL.get(element_type.get_type_name())
    return special[0] if special is not None else np.dtype(element_type.to_dtype())


def bindable(array: np.ndarray) -> np.ndarray:
    """``array`` if OpenVINO can share its memory, else a C-ordered copy of the same shape (rank 0
    stays rank 0, unlike ``np.ascontiguousarray``)."""
    if array.flags.c_contiguous and array.flags.writeable:
        return array
    return np.array(array, order="C")


def wrap(tensor_type: Any, runtime: Any, array: np.ndarray) -> Any:
    """An ``ov.Tensor`` over ``array``'s memory (``array`` must be :func:`bindable`)."""
    special = _BY_NUMPY.get(array.dtype)
    if special is None:
        return tensor_type(array, shared_memory=True)
    name, bits = special
    return tensor_type(array.view(bits), array.shape, getattr(runtime.Type, name))


def output_view(data: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """OpenVINO's output data as ``dtype`` (a view of the bit pattern for the special types)."""
    if data.dtype != dtype and dtype in _BY_NUMPY and data.dtype.itemsize == dtype.itemsize:
        return data.view(dtype)
    return data


def match_inputs(ports: Sequence[Any], names: Sequence[str]) -> tuple[int | None, ...]:
    """Per input name, the index of its port (None: OpenVINO dropped the input, as no node reads it).

    By name first; the names left over take the ports left over in order (OpenVINO keeps the graph's
    input order), which is exact when the counts agree. With more names than ports left over, the
    inputs without a port are the ones OpenVINO dropped; which ones is known only when no port is
    left (then all of them), so any other mix is refused.
    """
    found: list[int | None] = [None] * len(names)
    taken: set[int] = set()
    for n, name in enumerate(names):
        for i, port in enumerate(ports):
            if i not in taken and name in port.get_names():
                found[n] = i
                taken.add(i)
                break
    left_names = [n for n, i in enumerate(found) if i is None]
    left_ports = [i for i in range(len(ports)) if i not in taken]
    if len(left_names) == len(left_ports) or not left_ports:
        for n, i in zip(left_names, left_ports):
            found[n] = i
        return tuple(found)
    known = [sorted(p.get_names()) for p in ports]
    raise ModelLoadError(
        f"OpenVINO's compiled model has ports {known} for the inputs {list(names)}; the inputs "
        f"{[names[n] for n in left_names]} match no port by name and cannot be matched by position "
        f"({len(left_ports)} ports are left)"
    )


def passthrough_outputs(
    in_ports: Sequence[Any], in_index: Sequence[int | None], out_ports: Sequence[Any], out_index: Sequence[int]
) -> dict[int, int]:
    """``{output position: input position}`` for outputs that are an input's own tensor (the same
    tensor names on both ports: OpenVINO names one tensor once)."""
    by_port = {i: n for n, i in enumerate(in_index) if i is not None}
    found = {}
    for m, o in enumerate(out_index):
        names = set(out_ports[o].get_names())
        for i, port in enumerate(in_ports):
            if i in by_port and names & set(port.get_names()):
                found[m] = by_port[i]
                break
    return found
