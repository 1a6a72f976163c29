"""The torch backend against the backend conformance suite (outputs checked against onnx.reference)."""

from edgecore.testing import BackendConformance


class TestTorchConformance(BackendConformance):
    backend = "torch"
    config = {"num_threads": 1, "device": "cpu"}
    rtol = 1e-4
