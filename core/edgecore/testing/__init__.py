"""Test helpers for backend plugins: the conformance suite, ONNX's node tests, generated graphs.

The fuzzing harness (:mod:`edgecore.testing.fuzz`, :mod:`edgecore.testing.fuzz_cases`) is imported
on its own.
"""

from edgecore.testing.conformance import BackendConformance, reference_outputs
from edgecore.testing.graphs import OP_CASES, OpCase, make_model
from edgecore.testing.node_tests import BackendNodeTests

__all__ = ["BackendConformance", "BackendNodeTests", "reference_outputs", "OP_CASES", "OpCase", "make_model"]
