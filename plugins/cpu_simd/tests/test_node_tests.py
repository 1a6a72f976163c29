"""ONNX's backend node tests through cpu_simd: every case raw ONNX Runtime passes passes through
edgecore, and every case edgecore cannot run fails with an edgecore error.

Every case runs here (EDGECORE_NODE_TESTS=N runs a seeded subset of N);
``python -m edgecore.testing.node_tests --backend cpu_simd`` writes the full counts.
"""

import pytest

pytest.importorskip("edgecore_cpu_simd", reason="edgecore-cpu-simd is not installed")
pytest.importorskip("onnxruntime", reason="onnxruntime is not installed")

from edgecore.testing.node_tests import BackendNodeTests  # noqa: E402


class TestCpuSimdNodeTests(BackendNodeTests):
    backend = "cpu_simd"
    config = {"num_threads": 1}
    count = None  # every case: about 20 s after the 18 s it takes onnx to build them
