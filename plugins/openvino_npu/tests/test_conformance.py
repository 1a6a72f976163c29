"""The openvino backend (CPU device) against edgecore's backend conformance suite."""

import pytest

pytest.importorskip("openvino", reason="openvino is not installed")

from edgecore.testing import BackendConformance  # noqa: E402


class TestOpenVinoConformance(BackendConformance):
    """Default precision (f32) on the CPU device, so results match onnx.reference."""

    backend = "openvino"
    config = {"num_threads": 2, "device": "cpu"}
    rtol = 1e-4


class TestOpenVinoBucketsConformance(BackendConformance):
    """The NPU's static-shape bucket path, forced on the CPU device."""

    backend = "openvino"
    config = {"num_threads": 2, "device": "cpu", "custom_options": {"static_buckets": True}}
    rtol = 1e-4
