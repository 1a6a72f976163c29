"""Fixtures of the torch plugin's tests: skipped as a whole where torch is not installed."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("torch", reason="torch is not installed (pip install torch==2.13.0)")


def cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def relative_error(actual: np.ndarray, expected: np.ndarray) -> float:
    if expected.size == 0:
        return 0.0
    scale = max(float(np.abs(expected).max()), 1e-6)
    return float(np.abs(actual.astype(np.float64) - expected.astype(np.float64)).max()) / scale


@pytest.fixture
def close():
    """assert_close(actual, expected, rtol): every output, same shape and dtype, within rtol of its range."""

    def check(actual: dict, expected: dict, rtol: float = 1e-4) -> None:
        assert set(actual) == set(expected), f"outputs {sorted(actual)} != {sorted(expected)}"
        for name, want in expected.items():
            got = np.asarray(actual[name])
            assert got.shape == want.shape, f"{name}: shape {got.shape} != {want.shape}"
            assert got.dtype == want.dtype, f"{name}: dtype {got.dtype} != {want.dtype}"
            if want.dtype.kind in "biu":
                np.testing.assert_array_equal(got, want, err_msg=name)
            else:
                err = relative_error(got, want)
                assert err <= rtol, f"output {name!r} differs by {err:.3g} of its range (allowed {rtol})"

    return check
