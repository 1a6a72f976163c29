"""The tensorrt plugin without TensorRT or a GPU: it loads, lists itself with the reason it cannot
run, and refuses to compile with that reason."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys

import pytest

from edgecore import Engine, EngineConfig
from edgecore.errors import BackendUnavailableError
from edgecore.testing import OP_CASES
from edgecore_cuda_trt.backend import TensorRTBackend

HAS_TENSORRT = importlib.util.find_spec("tensorrt") is not None
without_tensorrt = pytest.mark.skipif(HAS_TENSORRT, reason="tensorrt is installed here")


def test_registered_above_cpu_simd_and_torch():
    from edgecore.plugins import get_plugin_manager

    backends = get_plugin_manager().backends()
    assert "tensorrt" in backends
    assert backends["tensorrt"].devices == ("gpu", "npu")
    others = [spec.priority for name, spec in backends.items() if name != "tensorrt"]
    assert backends["tensorrt"].priority > max(others)


@without_tensorrt
def test_unavailable_with_the_reason_and_how_to_fix_it():
    availability = TensorRTBackend().availability()
    assert not availability.ok
    assert "tensorrt is not installed" in availability.reason
    assert "pip install" in availability.reason



@without_tensorrt
def test_without_tensorrt_it_claims_no_operator():
    """So that UnsupportedOperatorError never names tensorrt as a backend that has an operator."""
    from edgecore.graph import Graph

    graph = Graph.load(OP_CASES["MLP"].build())
    assert TensorRTBackend().unsupported_ops(graph) == ["Gemm", "Relu", "Softmax"]


@without_tensorrt
def test_backends_command_lists_tensorrt_as_unavailable():
    code = "import sys; from edgecore.cli import main; sys.exit(main(['backends', '--json']))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    rows = {row["name"]: row for row in json.loads(done.stdout)["backends"]}
    row = rows["tensorrt"]
    assert not row["available"] and "tensorrt is not installed" in row["reason"]
    assert row["distribution"] == "edgecore-cuda-trt"


@without_tensorrt
def test_engine_names_the_missing_runtime():
    with pytest.raises(BackendUnavailableError, match="tensorrt is not installed"):
        Engine(EngineConfig(backend="tensorrt")).load(OP_CASES["Relu"].build())


@without_tensorrt
def test_auto_skips_it_and_says_why_only_when_nothing_else_runs():
    with Engine(EngineConfig(num_threads=1)).load(OP_CASES["Relu"].build()) as engine:
        assert engine.backend != "tensorrt"


def test_plugin_import_pulls_in_no_runtime():
    code = (
        "import sys; import edgecore_cuda_trt.plugin, edgecore_cuda_trt.backend; "
        "print(json.dumps(sorted(m for m in ('tensorrt', 'cuda', 'torch') if m in sys.modules)))"
    )
    done = subprocess.run([sys.executable, "-c", "import json; " + code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == []
