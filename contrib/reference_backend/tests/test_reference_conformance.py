"""The reference backend passes the same conformance suite as the fast backends."""

import pytest

pytest.importorskip("edgecore_reference", reason="edgecore-reference is not installed")

from edgecore.testing import BackendConformance  # noqa: E402


class TestReferenceConformance(BackendConformance):
    backend = "reference"
