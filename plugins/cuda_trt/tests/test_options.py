"""Option checks, optimization profiles and cache keys: everything that needs neither TensorRT nor a GPU."""

from __future__ import annotations

import pytest

from edgecore.backend import CompileOptions
from edgecore.errors import ConfigurationError
from edgecore.tensor import DataType, TensorSpec
from edgecore_cuda_trt.cache import GpuFacts, plan_key
from edgecore_cuda_trt.options import TrtOptions
from edgecore_cuda_trt.profiles import compute_profiles, profile_for, to_json

IMAGE = TensorSpec(name="input", dtype=DataType.FLOAT, shape=("batch", 3, 224, 224))
TOKENS = [TensorSpec(name=n, dtype=DataType.INT64, shape=("batch", "sequence")) for n in ("ids", "mask")]
H200 = GpuFacts(name="NVIDIA H200", compute_capability="9.0", cuda_runtime="12.8", driver="13.0")


def _options(**custom) -> TrtOptions:
    return TrtOptions.from_compile_options(CompileOptions(device="gpu", options=custom))


# -- options ----------------------------------------------------------------------------------------


def test_defaults():
    options = _options()
    assert (options.device_index, options.max_batch_size, options.cuda_graphs, options.output_device) == (0, 8, True, "host")
    assert options.engine_cache and options.timing_cache and options.dla_core is None


@pytest.mark.parametrize(
    "compile_options, words",
    [
        (CompileOptions(device="gpu", options={"workspace": 1}), ["workspace", "known", "workspace_bytes"]),
        (CompileOptions(device="cpu"), ["NVIDIA GPUs", "DLA", "'cpu'"]),
        (CompileOptions(device="gpu", precision="fp16"), ["strongly typed", "--fp16", "fp16"]),
        (CompileOptions(device="gpu", precision="int8"), ["from the graph", "int8"]),
        (CompileOptions(device="gpu", options={"builder_optimization_level": 7}), ["builder_optimization_level", "0..5"]),
        (CompileOptions(device="gpu", options={"dim_ranges": {"sequence": [8, 4, 16]}}), ["sequence", "min <= opt <= max"]),
        (CompileOptions(device="gpu", options={"max_batch_size": 4, "opt_batch_size": 8}), ["opt_batch_size", "exceeds"]),
        (CompileOptions(device="gpu", options={"output_device": "cuda"}), ["output_device", "host", "device"]),
        (CompileOptions(device="gpu", options={"cuda_graphs": 1}), ["cuda_graphs", "true or false"]),
        (CompileOptions(device="gpu", options={"profiles": []}), ["profiles", "non-empty"]),
    ],
)
def test_bad_settings_say_what_is_expected(compile_options, words):
    with pytest.raises(ConfigurationError) as info:
        TrtOptions.from_compile_options(compile_options)
    for word in words:
        assert word in str(info.value)


def test_npu_and_dla_devices_build_for_a_dla_core():
    assert TrtOptions.from_compile_options(CompileOptions(device="npu")).dla_core == 0
    assert TrtOptions.from_compile_options(CompileOptions(device="dla:1")).dla_core == 1
    assert TrtOptions.from_compile_options(CompileOptions(device="npu", options={"dla_core": 1})).dla_core == 1
    assert TrtOptions.from_compile_options(CompileOptions(device="gpu")).dla_core is None


def test_graph_precisions_are_accepted():
    for precision in (None, "fp32", "graph"):
        TrtOptions.from_compile_options(CompileOptions(device="auto", precision=precision))


def test_cache_dir_from_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("EDGECORE_TENSORRT_CACHE_DIR", str(tmp_path))
    assert _options().cache_dir == tmp_path
    assert _options(cache_dir=str(tmp_path / "x")).cache_dir == tmp_path / "x"


# -- optimization profiles --------------------------------------------------------------------------


def test_static_models_need_no_profile():
    spec = TensorSpec(name="x", dtype=DataType.FLOAT, shape=(1, 3, 8, 8))
    assert compute_profiles([spec]) == []


def test_the_batch_dim_spans_one_to_max():
    [profile] = compute_profiles([IMAGE], max_batch_size=32, opt_batch_size=8)
    assert profile == {"input": ((1, 3, 224, 224), (8, 3, 224, 224), (32, 3, 224, 224))}
    [profile] = compute_profiles([IMAGE], max_batch_size=16)
    assert profile["input"][1][0] == 16


def test_named_dims_take_their_ranges():
    [profile] = compute_profiles(TOKENS, max_batch_size=4, dim_ranges={"sequence": (1, 128, 512)})
    assert profile["ids"] == ((1, 1), (4, 128), (4, 512))
    assert profile["mask"] == profile["ids"]


def test_dims_without_a_range_are_named():
    with pytest.raises(ConfigurationError) as info:
        compute_profiles(TOKENS + [TensorSpec(name="pixels", dtype=DataType.FLOAT, shape=(1, None))])
    message = str(info.value)
    for word in ("input 'ids' axis 1 ('sequence')", "input 'pixels' axis 1 (unnamed)", "dim_ranges"):
        assert word in message


def test_explicit_profiles_are_checked_against_the_model():
    good = {"input": {"min": [1, 3, 224, 224], "opt": [4, 3, 224, 224], "max": [8, 3, 224, 224]}}
    assert len(compute_profiles([IMAGE], profiles=[good, good])) == 2
    bad_fixed = {"input": {"min": [1, 3, 224, 224], "opt": [4, 3, 224, 224], "max": [8, 3, 256, 224]}}
    with pytest.raises(ConfigurationError, match="axis 2 is fixed at 224"):
        compute_profiles([IMAGE], profiles=[bad_fixed])
    with pytest.raises(ConfigurationError, match="missing inputs"):
        compute_profiles([IMAGE], profiles=[{}])
    with pytest.raises(ConfigurationError, match="rank 3"):
        compute_profiles([IMAGE], profiles=[{"input": {"min": [1, 3, 224], "opt": [1, 3, 224], "max": [1, 3, 224]}}])
    order = {"input": {"min": [4, 3, 224, 224], "opt": [2, 3, 224, 224], "max": [8, 3, 224, 224]}}
    with pytest.raises(ConfigurationError, match="min <= opt <= max"):
        compute_profiles([IMAGE], profiles=[order])


def test_a_request_picks_the_first_profile_that_holds_it():
    small = {"input": {"min": [1, 3, 224, 224], "opt": [1, 3, 224, 224], "max": [4, 3, 224, 224]}}
    large = {"input": {"min": [5, 3, 224, 224], "opt": [16, 3, 224, 224], "max": [32, 3, 224, 224]}}
    profiles = compute_profiles([IMAGE], profiles=[small, large])
    assert profile_for(profiles, {"input": (2, 3, 224, 224)}) == 0
    assert profile_for(profiles, {"input": (20, 3, 224, 224)}) == 1
    assert profile_for(profiles, {"input": (64, 3, 224, 224)}) == -1
    assert to_json(profiles)[1]["input"]["opt"] == [16, 3, 224, 224]


# -- cache keys -------------------------------------------------------------------------------------


def _key(**changes):
    parts = {"model": "a" * 64, "trt": "10.13.0", "gpu": H200, "config": _options().build_config([])}
    parts.update(changes)
    return plan_key(parts["model"], parts["trt"], parts["gpu"], parts["config"])


def test_plan_keys_hold_everything_that_changes_a_plan():
    base = _key()
    assert _key() == base and _key().digest() == base.digest()
    variants = [
        _key(model="b" * 64),
        _key(trt="11.0.0"),
        _key(gpu=GpuFacts(name="NVIDIA H100", compute_capability="9.0", cuda_runtime="12.8", driver="13.0")),
        _key(gpu=GpuFacts(name="NVIDIA H200", compute_capability="8.9", cuda_runtime="12.8", driver="13.0")),
        _key(gpu=GpuFacts(name="NVIDIA H200", compute_capability="9.0", cuda_runtime="12.9", driver="13.0")),
        _key(gpu=GpuFacts(name="NVIDIA H200", compute_capability="9.0", cuda_runtime="12.8", driver="12.4")),
        _key(config=_options(workspace_bytes=1 << 30).build_config([])),
        _key(config=_options(builder_optimization_level=5).build_config([])),
        _key(config=_options().build_config(to_json(compute_profiles([IMAGE])))),
        _key(config=_options(dla_core=0).build_config([])),
    ]
    digests = {k.digest() for k in variants} | {base.digest()}
    assert len(digests) == len(variants) + 1


def test_settings_that_do_not_change_the_plan_share_it():
    assert _key(config=_options(cuda_graphs=False, output_device="device").build_config([])) == _key()


def test_gpu_facts_name_the_sm():
    assert H200.sm == "sm90"
    assert "sm90" in H200.describe() and "NVIDIA H200" in H200.describe()


def test_device_arrays_describe_themselves_to_cuda_consumers():
    """What torch.as_tensor / cupy.asarray read from a pooled output (no CUDA needed to check it)."""
    import numpy as np

    from edgecore_cuda_trt.cuda import DeviceArray

    array = DeviceArray(0x7F0000001000, (2, 3), np.dtype(np.float16), 1)
    interface = array.__cuda_array_interface__
    assert interface == {"shape": (2, 3), "typestr": "<f2", "data": (0x7F0000001000, False), "version": 3, "strides": None, "stream": None}
    assert array.nbytes == 12 and "cuda:1" in repr(array)
