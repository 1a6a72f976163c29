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
    """close(actual, expected, rtol, atol): every output has the expected shape and dtype, and differs
    by at most ``rtol`` of its largest magnitude plus ``atol`` (integers and booleans: exactly)."""

    def check(actual: dict, expected: dict, rtol: float = 1e-4, atol: float = 1e-6) -> None:
        assert set(actual) == set(expected), f"outputs {sorted(actual)} != {sorted(expected)}"
        for name, want in expected.items():
            got = np.asarray(actual[name])
            assert got.shape == want.shape, f"{name}: shape {got.shape} != {want.shape}"
            assert got.dtype == want.dtype, f"{name}: dtype {got.dtype} != {want.dtype}"
            if want.dtype.kind in "biu":
                np.testing.assert_array_equal(got, want, err_msg=name)
            else:
                if not want.size:
                    continue
                scale = float(np.abs(want.astype(np.float64)).max())
                err = float(np.abs(got.astype(np.float64) - want.astype(np.float64)).max())
                assert err <= rtol * scale + atol, (
                    f"output {name!r} differs by {err:.3g} (largest magnitude {scale:.3g}; allowed {rtol} of it + {atol})"
                )

    return check
