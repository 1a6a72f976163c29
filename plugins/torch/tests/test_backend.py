"""The torch backend's settings, device resolution, priority, and behaviour at the engine boundary
(``out`` buffers, device outputs, torch tensors in, deadlines, signatures kept, errors)."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from edgecore import Engine, EngineConfig
from edgecore.backend import CompileOptions
from edgecore.errors import BackendUnavailableError, ConfigurationError, RequestTimeoutError, UnsupportedOperatorError
from edgecore.testing import OP_CASES
from edgecore_torch.options import DeviceFacts, TorchOptions, resolve_device
from edgecore_torch.plugin import CPU_PRIORITY, GPU_PRIORITY, priority

NO_GPU = DeviceFacts(cuda_count=0, torch_version="2.13.0+cpu")
TWO_GPUS = DeviceFacts(cuda_count=2, torch_version="2.13.0+cu130")


# -- devices ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "requested, override, facts, expected",
    [
        ("auto", None, NO_GPU, "cpu"),
        ("auto", None, TWO_GPUS, "cuda:0"),
        ("gpu", None, TWO_GPUS, "cuda:0"),
        ("gpu", "cuda:1", TWO_GPUS, "cuda:1"),
        ("cpu", None, TWO_GPUS, "cpu"),
        ("cuda:1", None, TWO_GPUS, "cuda:1"),
        ("cuda", None, TWO_GPUS, "cuda:0"),
        ("auto", None, DeviceFacts(mps=True), "mps"),
        ("auto", "cpu", TWO_GPUS, "cpu"),
    ],
)
def test_devices_resolve(requested, override, facts, expected):
    assert resolve_device(requested, override, facts) == expected


@pytest.mark.parametrize(
    "requested, override, facts, error, words",
    [
        ("gpu", None, NO_GPU, BackendUnavailableError, ["no GPU", "2.13.0+cpu"]),
        ("cuda:2", None, TWO_GPUS, BackendUnavailableError, ["cuda:2", "2 CUDA device"]),
        ("npu", None, TWO_GPUS, ConfigurationError, ["npu", "cpu and gpu"]),
        ("cpu", "cuda:0", TWO_GPUS, ConfigurationError, ["contradicts", "'cpu'"]),
        ("tpu", None, TWO_GPUS, ConfigurationError, ["unknown device", "cuda:N"]),
        ("mps", None, NO_GPU, BackendUnavailableError, ["mps"]),
    ],
)
def test_device_errors_say_what_is_there(requested, override, facts, error, words):
    with pytest.raises(error) as info:
        resolve_device(requested, override, facts)
    for word in words:
        assert word in str(info.value)


def test_cuda_defaults_turn_on_graphs_staging_and_channels_last():
    options = TorchOptions.from_compile_options(CompileOptions(device="gpu", precision="fp16"), TWO_GPUS)
    assert (options.device, options.precision) == ("cuda:0", "fp16")
    assert options.cuda_graphs and options.pinned_staging and options.channels_last
    cpu = TorchOptions.from_compile_options(CompileOptions(device="cpu"), TWO_GPUS)
    assert not (cpu.cuda_graphs or cpu.pinned_staging or cpu.channels_last)


@pytest.mark.parametrize(
    "options, words",
    [
        ({"cuda_graph": True}, ["cuda_graph", "known", "cuda_graphs"]),
        ({"precision": "int4"}, ["precision", "fp16", "int4"]),
        ({"cuda_graphs": True}, ["cuda_graphs", "CUDA device", "cpu"]),
        ({"output_device": "gpu"}, ["output_device", "host", "device"]),
        ({"max_signatures": 0}, ["max_signatures", ">= 1"]),
        ({"channels_last": "yes"}, ["channels_last", "true or false"]),
    ],
)
def test_bad_options_are_named(options, words):
    with pytest.raises(ConfigurationError) as info:
        TorchOptions.from_compile_options(CompileOptions(device="cpu", options=options), NO_GPU)
    for word in words:
        assert word in str(info.value)


def test_precision_given_twice_must_agree():
    with pytest.raises(ConfigurationError, match="disagree"):
        TorchOptions.from_compile_options(CompileOptions(precision="bf16", options={"precision": "fp16"}), NO_GPU)
    same = TorchOptions.from_compile_options(CompileOptions(precision="bf16", options={"precision": "bfloat16"}), NO_GPU)
    assert same.precision == "bf16"


def test_priority_is_below_cpu_simd_without_a_gpu(tmp_path):
    from edgecore.plugins import get_plugin_manager

    assert priority(device_files=(str(tmp_path / "absent"),)) == CPU_PRIORITY
    backends = get_plugin_manager().backends()
    if "cpu_simd" in backends:
        assert CPU_PRIORITY < backends["cpu_simd"].priority < GPU_PRIORITY
    marker = tmp_path / "nvidiactl"
    marker.touch()
    import importlib.metadata

    gpu_build = "+cpu" not in importlib.metadata.version("torch")
    assert priority(device_files=(str(marker),)) == (GPU_PRIORITY if gpu_build else CPU_PRIORITY)


def test_backends_command_lists_torch_with_its_devices():
    code = "import sys; from edgecore.cli import main; sys.exit(main(['backends', '--json']))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    rows = {row["name"]: row for row in json.loads(done.stdout)["backends"]}
    row = rows["torch"]
    assert row["available"], row["reason"]
    assert row["distribution"] == "edgecore-torch"
    names = [d["name"] for d in row["devices"]]
    assert names[0] == "cpu"
    assert ("cuda:0" in names) == torch.cuda.is_available()


def test_auto_on_a_cpu_machine_keeps_onnxruntime():
    from edgecore.plugins import get_plugin_manager

    if "cpu_simd" not in get_plugin_manager().backends() or torch.cuda.is_available():
        pytest.skip("needs cpu_simd and no GPU")
    with Engine(EngineConfig(num_threads=1)).load(OP_CASES["Relu"].build()) as engine:
        assert engine.backend == "cpu_simd"


# -- the engine boundary ----------------------------------------------------------------------------


def _engine(case: str = "Conv", **options) -> Engine:
    config = EngineConfig(backend="torch", device="cpu", num_threads=1, custom_options=options)
    return Engine(config).load(OP_CASES[case].build())


def test_out_buffers_are_filled():
    op = OP_CASES["Gemm"]
    feeds = op.feeds(batch=2, seed=3)
    with _engine("Gemm") as engine:
        want = engine.run(feeds)["y"]
        out = {"y": np.empty((2, 24), np.float32)}
        got = engine.run(feeds, out=out)
    assert got["y"] is out["y"]
    np.testing.assert_array_equal(out["y"], want)


def test_device_outputs_are_torch_tensors():
    op = OP_CASES["Conv"]
    feeds = op.feeds(batch=2, seed=4)
    with _engine() as host, _engine(output_device="device") as device:
        want = host.run(feeds)["y"]
        got = device.run(feeds)["y"]
    assert isinstance(got, torch.Tensor) and got.device.type == "cpu"
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-6)


def test_torch_tensors_go_in_without_conversion_by_the_caller():
    op = OP_CASES["Conv"]
    feeds = op.feeds(batch=1, seed=5)
    with _engine() as engine:
        want = engine.run(feeds)["y"]
        got = engine.run({"x": torch.from_numpy(feeds["x"])})["y"]
        np.testing.assert_array_equal(got, want)
        with pytest.raises(Exception, match="'x'"):
            engine.run({"x": torch.zeros(1, 3, 10, 11)})  # checked like numpy input


def test_outputs_never_alias_inputs_or_constants():
    """Identity outputs (the input itself, or a constant) are copies the caller may change."""
    from onnx import TensorProto, helper, numpy_helper

    from edgecore.testing import make_model

    nodes = [helper.make_node("Identity", ["x"], ["same"]), helper.make_node("Identity", ["c"], ["const"])]
    model = make_model(
        nodes,
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [3])],
        [helper.make_tensor_value_info("same", TensorProto.FLOAT, [3]), helper.make_tensor_value_info("const", TensorProto.FLOAT, [2])],
        [numpy_helper.from_array(np.array([1.0, 2.0], np.float32), "c")],
    )
    x = np.arange(3, dtype=np.float32)
    with Engine(EngineConfig(backend="torch", device="cpu")).load(model) as engine:
        for _ in range(2):
            out = engine.run({"x": x})
            out["same"][:] = -1
            out["const"][:] = -1
        again = engine.run({"x": x})
    np.testing.assert_array_equal(x, [0, 1, 2])
    np.testing.assert_array_equal(again["const"], [1.0, 2.0])


def test_a_passed_deadline_stops_the_run_between_steps():
    op = OP_CASES["MLP"]
    feeds = op.feeds(batch=2, seed=6)
    with _engine("MLP") as engine:
        engine.run(feeds)  # records the plan
        with pytest.raises(RequestTimeoutError, match="deadline"):
            engine.run(feeds, timeout_ms=1e-9)
        engine.run(feeds)  # and keeps serving


def test_signatures_are_kept_up_to_the_limit():
    op = OP_CASES["MLP"]
    with _engine("MLP", max_signatures=2) as engine:
        for batch in (1, 2, 3, 2):
            engine.run(op.feeds(batch=batch))
        kept = [s["inputs"][0][0] for s in engine.compiled.signatures()]
    assert kept == [3, 2]  # least recently used (batch 1) dropped


def test_attribute_level_gaps_are_unsupported_operators():
    from onnx import TensorProto, helper

    from edgecore.testing import make_model

    node = helper.make_node("Resize", ["x", "", "s"], ["y"], mode="linear", antialias=1)
    model = make_model(
        [node],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 4, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [helper.make_tensor("s", TensorProto.FLOAT, [4], [1, 1, 0.5, 0.5])],
    )
    model.opset_import[0].version = 18
    with pytest.raises(UnsupportedOperatorError, match=r"Resize\(antialias=1\)"):
        Engine(EngineConfig(backend="torch")).load(model)


def test_memory_and_signature_reports():
    op = OP_CASES["Conv"]
    with _engine() as engine:
        engine.run(op.feeds(batch=2))
        assert engine.compiled.memory_bytes() == (8 * 3 * 3 * 3 + 8) * 4
        [signature] = engine.compiled.signatures()
    assert signature == {
        "inputs": [[2, 3, 10, 10]], "steps": 1, "dynamic_steps": 0, "capturable": True, "cuda_graph": False, "runs": 1,
    }
