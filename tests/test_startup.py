"""Start-up stays cheap: what ``import edgecore`` and the CLI's listing commands import.

Time is measured by benchmarks, never asserted here; these tests pin the cause of slow starts
instead: which heavy modules a fresh interpreter has imported after each step.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

#: Modules that cost hundreds of milliseconds to import (onnx_ir pulls in sympy).
HEAVY = ("onnx", "onnx_ir", "sympy", "onnxruntime", "openvino", "torch", "numpy")


def _imported_after(code: str) -> set[str]:
    script = (
        "import contextlib, io, json, sys\n"
        f"{code}\n"
        f"print(json.dumps(sorted(m for m in {HEAVY!r} if m in sys.modules)))\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=True)
    return set(json.loads(done.stdout.strip().splitlines()[-1]))


def _cli(*argv: str) -> str:
    return (
        "from edgecore.cli import main\n"
        "with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):\n"
        "    try:\n"
        f"        main({list(argv)!r})\n"
        "    except SystemExit:\n"
        "        pass"
    )


def test_import_edgecore_imports_nothing_heavy():
    assert _imported_after("import edgecore, edgecore.optimize, edgecore.metrics, edgecore.zoo") == set()


def test_building_the_plugin_manager_imports_no_runtime():
    """Every plugin's entry point module registers without importing its runtime or onnx."""
    assert _imported_after("from edgecore.plugins import build_plugin_manager; build_plugin_manager()") == set()


@pytest.mark.parametrize("argv", [("--help",), ("zoo", "list"), ("run", "--help"), ("optimize", "--help")])
def test_cli_help_and_listings_import_nothing_heavy(argv):
    assert _imported_after(_cli(*argv)) == set()


def test_listing_backends_never_imports_onnx():
    """``edgecore backends`` asks each runtime what it can do (so runtimes load), but never onnx."""
    assert not _imported_after(_cli("backends", "--json")) & {"onnx", "onnx_ir", "sympy"}


_CACHED_START = """
import json, sys
import numpy as np
from edgecore import Engine, EngineConfig
engine = Engine(EngineConfig(backend={backend!r}, num_threads=1, cache_dir={cache!r})).load({model!r})
y = engine.run({{"x": np.linspace(-1, 1, 256, dtype=np.float32).reshape(1, 256)}})["y"]
print(json.dumps({{"heavy": sorted(m for m in ("onnx", "onnx_ir", "sympy") if m in sys.modules), "y": y.tolist()}}))
"""


def _start(model, cache, backend: str) -> dict:
    script = _CACHED_START.format(cache=str(cache), model=str(model), backend=backend)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("backend, plugin", [("cpu_simd", "edgecore_cpu_simd"), ("openvino", "edgecore_openvino_npu")])
def test_a_model_in_the_artifact_cache_starts_without_onnx(tmp_path, backend, plugin):
    """A second start of an unchanged model file takes its specs, fingerprint and operators from the
    cached metadata and its compiled artifact from the cache: neither onnx nor onnx_ir is imported,
    and the output equals raw onnxruntime's on the original file. A changed file is read again."""
    ort = pytest.importorskip("onnxruntime", reason="onnxruntime is not installed")
    pytest.importorskip(plugin, reason=f"{plugin} is not installed")
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    weights = [
        numpy_helper.from_array(rng.standard_normal((256, 1024)).astype(np.float32) * 0.05, "w1"),  # 1 MiB inline
        numpy_helper.from_array(rng.standard_normal((1024, 64)).astype(np.float32) * 0.05, "w2"),
    ]
    nodes = [helper.make_node("MatMul", ["x", "w1"], ["h"]), helper.make_node("Relu", ["h"], ["r"]),
             helper.make_node("MatMul", ["r", "w2"], ["y"])]
    graph = helper.make_graph(nodes, "mlp", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 256])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 64])], weights)
    model = tmp_path / "mlp.onnx"
    onnx.save_model(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), model)
    x = np.linspace(-1, 1, 256, dtype=np.float32).reshape(1, 256)
    expected = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    cache = tmp_path / "cache"

    first = _start(model, cache, backend)
    assert "onnx" in first["heavy"]  # the first start reads and checks the model
    second = _start(model, cache, backend)
    assert second["heavy"] == []
    np.testing.assert_allclose(np.array(second["y"], np.float32), expected, rtol=1e-4, atol=1e-5)
    model.write_bytes(model.read_bytes())  # same content, a new file identity: not trusted blindly
    assert "onnx" in _start(model, cache, backend)["heavy"]
