"""Test helpers for backend plugins: the conformance suite and generated graphs."""

from edgecore.testing.conformance import BackendConformance, reference_outputs
from edgecore.testing.graphs import OP_CASES, OpCase, make_model

__all__ = ["BackendConformance", "reference_outputs", "OP_CASES", "OpCase", "make_model"]
