"""Shared fixtures for core tests."""

from __future__ import annotations

import numpy as np
import pytest

from edgecore.testing import OP_CASES


@pytest.fixture
def conv_case():
    return OP_CASES["Conv"]


@pytest.fixture
def conv_model(conv_case):
    return conv_case.build()


@pytest.fixture
def rng():
    return np.random.default_rng(0)
