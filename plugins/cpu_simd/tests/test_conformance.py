"""cpu_simd against the backend conformance suite (outputs checked against onnx.reference)."""

from edgecore.testing import BackendConformance


class TestCpuSimdConformance(BackendConformance):
    backend = "cpu_simd"
    config = {"num_threads": 2}
    rtol = 1e-4
