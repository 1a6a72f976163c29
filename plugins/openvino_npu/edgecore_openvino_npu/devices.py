"""Which OpenVINO devices this machine has, and which OpenVINO device an edgecore request means.

edgecore names device *kinds* (``auto``, ``cpu``, ``gpu``, ``npu``); OpenVINO names devices
(``CPU``, ``GPU.0``, ``GPU.1``, ``NPU``, and the virtual ``AUTO``). :func:`resolve_device` maps one
to the other and raises :class:`~edgecore.errors.BackendUnavailableError` saying why when the kind
is absent (no NPU node, no driver, plugin failed to load).
"""

from __future__ import annotations

import glob
import logging
from typing import Any

from edgecore.backend import Availability, DeviceInfo
from edgecore.errors import BackendUnavailableError, ConfigurationError

from edgecore_openvino_npu import _ov

logger = logging.getLogger(__name__)

__all__ = ["list_devices", "kind_of", "kind_status", "resolve_device", "KINDS"]

KINDS = ("cpu", "gpu", "npu")
_VIRTUAL = ("AUTO", "MULTI", "HETERO", "BATCH")

#: Device properties copied into DeviceInfo.properties when the device reports them.
_REPORTED = ("DEVICE_TYPE", "DEVICE_ARCHITECTURE", "OPTIMIZATION_CAPABILITIES", "RANGE_FOR_STREAMS")

_FIX = {
    "npu": "an Intel Core Ultra NPU and its driver (github.com/intel/linux-npu-driver; user in the 'render' group)",
    "gpu": "an Intel GPU and its compute runtime (intel-opencl-icd / level-zero)",
    "cpu": "an x86-64 or Arm CPU that OpenVINO's CPU plugin supports",
}


def kind_of(device: str) -> str:
    """edgecore kind of an OpenVINO device name (``GPU.1`` -> ``gpu``; ``AUTO:NPU,CPU`` -> ``auto``)."""
    head = device.split(".", 1)[0].split(":", 1)[0].upper()
    return {"CPU": "cpu", "GPU": "gpu", "NPU": "npu"}.get(head, "auto")


def _safe(device: str, name: str) -> Any:
    try:
        value = _ov.core().get_property(device, name)
    except Exception:
        return None
    if isinstance(value, (list, tuple)):
        return [v if isinstance(v, (int, float, bool)) else str(v) for v in value]
    return value if isinstance(value, (int, float, bool)) else str(value)


def list_devices() -> list[DeviceInfo]:
    """Every device OpenVINO sees, then ``AUTO`` (whose properties say why absent kinds are absent).

    ``DeviceInfo.kind`` is cpu, gpu or npu; AUTO carries the kind of the device it would prefer.
    """
    found = [str(d) for d in _ov.core().available_devices]
    infos = []
    for name in found:
        properties: dict[str, Any] = {"openvino": _ov.version(), "openvino_device": name}
        for key in _REPORTED:
            value = _safe(name, key)
            if value is not None:
                properties[key.lower()] = value
        description = _safe(name, "FULL_DEVICE_NAME") or name
        infos.append(DeviceInfo(name=name.lower(), kind=kind_of(name), description=str(description), properties=properties))
    missing = {kind: kind_status(kind).reason for kind in KINDS if not any(kind_of(d) == kind for d in found)}
    auto = {"openvino": _ov.version(), "openvino_device": "AUTO", "candidates": found, "unavailable": missing}
    if found:  # AUTO is listed under the kind of the device it prefers (OpenVINO's order: GPU, NPU, CPU)
        preferred = min((kind_of(d) for d in found), key=lambda k: ("gpu", "npu", "cpu").index(k) if k in KINDS else 9)
        infos.append(DeviceInfo(name="auto", kind=preferred if preferred in KINDS else "cpu",
                                description=f"OpenVINO AUTO over {', '.join(found)}", properties=auto))
    return infos


def kind_status(kind: str) -> Availability:
    """Whether OpenVINO has a device of ``kind`` here; if not, why and how to fix it."""
    found = [str(d) for d in _ov.core().available_devices]
    if any(kind_of(d) == kind for d in found):
        return Availability(ok=True)
    head = kind.upper()
    detail = ""
    try:  # asking the plugin directly makes it say why it found nothing
        _ov.core().get_property(head, "FULL_DEVICE_NAME")
    except Exception as exc:
        detail = str(exc).strip().splitlines()[-1][:200] if str(exc).strip() else repr(exc)
        if "configuration key" in detail:  # the plugin loaded and simply has no device to describe
            detail = ""
    if kind == "npu" and not glob.glob("/dev/accel/accel*"):
        why = "no NPU device node (/dev/accel/accel*): this machine has no Intel NPU or its kernel driver is missing"
    else:
        why = f"OpenVINO {_ov.short_version()} sees devices {found} and no {head}"
    if detail:
        why += f" (the {head} plugin says: {detail})"
    return Availability(ok=False, reason=f"{why}; {kind} needs {_FIX[kind]}")


def resolve_device(kind: str, explicit: str | None = None) -> str:
    """The OpenVINO device string for edgecore ``kind`` (or the ``device_name`` custom option).

    ``auto`` means the only device when there is one (no AUTO indirection), else OpenVINO's AUTO.
    """
    found = [str(d) for d in _ov.core().available_devices]
    if explicit:
        name = str(explicit)
        virtual = name.split(":", 1)[0].upper() in _VIRTUAL
        if not virtual and name not in found:
            raise BackendUnavailableError(
                f"openvino: device_name {name!r} is not a device OpenVINO sees here; available: {found} "
                f"(or a virtual device: {', '.join(_VIRTUAL)})"
            )
        if kind != "auto" and kind_of(name) not in ("auto", kind):
            raise ConfigurationError(
                f"openvino: device_name {name!r} is a {kind_of(name)} device but EngineConfig.device is {kind!r}"
            )
        return name
    if kind == "auto":
        return found[0] if len(found) == 1 else "AUTO"
    if kind not in KINDS:
        raise ConfigurationError(f"openvino: device must be one of {('auto',) + KINDS}, got {kind!r}")
    status = kind_status(kind)
    if not status.ok:
        raise BackendUnavailableError(f"openvino: device {kind!r} is unavailable: {status.reason}")
    return next(d for d in found if kind_of(d) == kind)
