"""The model zoo: exact architectures, sane seeded weights, the trained digits model, the cache, the CLI.

Numerics are checked against independent references: parameter counts against torchvision's and
Hugging Face's published figures, outputs against ``onnx.reference`` (tiny variants; the full-size
models only run in onnxruntime, which is enough to show they are valid and well scaled).
"""

from __future__ import annotations

import argparse
import json
import math

import numpy as np
import onnx
import pytest
from onnx.reference import ReferenceEvaluator

from edgecore import zoo
from edgecore.errors import ModelLoadError
from edgecore.specs import ModelSpec

ort = pytest.importorskip("onnxruntime")

#: torchvision's and Hugging Face's parameter counts (``sum(p.numel() for p in model.parameters())``).
REFERENCE_PARAMETERS = {
    "mobilenet_v2": 3_504_872,
    "resnet50": 25_557_032,
    "efficientnet_b0": 5_288_548,
    "bert_base": 109_482_240,
}
BIG_CNNS = ("mobilenet_v2", "resnet50", "efficientnet_b0")
TINY = ("mobilenet_v2_tiny", "resnet_tiny", "efficientnet_tiny", "bert_tiny")
BERT_INPUTS = ("input_ids", "attention_mask", "token_type_ids")


@pytest.fixture(autouse=True)
def cache_in_tmp(tmp_path, monkeypatch):
    """Every test gets its own, empty zoo cache."""
    monkeypatch.setenv("EDGECORE_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.fixture(scope="module")
def big_models():
    """The four full-size models, built once for the module (not cached: up to 440 MB each)."""
    built: dict[str, onnx.ModelProto] = {}

    def get(name: str) -> onnx.ModelProto:
        if name not in built:
            built[name] = zoo.build(name, cache=False)
        return built[name]

    yield get
    built.clear()


def parameters_of(model: onnx.ModelProto) -> int:
    """Float initializers, less BatchNormalization running mean/var (buffers in PyTorch)."""
    buffers = {n.input[i] for n in model.graph.node if n.op_type == "BatchNormalization" for i in (3, 4)}
    return sum(
        math.prod(t.dims)
        for t in model.graph.initializer
        if t.data_type == onnx.TensorProto.FLOAT and t.name not in buffers
    )


def sample_feeds(model: onnx.ModelProto, *, batch: int = 2, sequence: int = 12, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    feeds = {}
    for value in model.graph.input:
        dims = value.type.tensor_type.shape.dim
        if value.type.tensor_type.elem_type == onnx.TensorProto.INT64:  # BERT
            if value.name == "input_ids":
                feeds[value.name] = rng.integers(0, 1000, (batch, sequence))
            elif value.name == "attention_mask":
                mask = np.ones((batch, sequence), np.int64)
                mask[-1, sequence // 2 :] = 0  # one padded row
                feeds[value.name] = mask
            else:
                feeds[value.name] = (np.arange(sequence) >= sequence // 2).astype(np.int64)[None].repeat(batch, 0)
        else:
            shape = [batch if d.dim_param else d.dim_value for d in dims]
            feeds[value.name] = rng.standard_normal(shape, dtype=np.float32)
    return feeds


def ort_run(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(names, feeds)))


def reference_run(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    names = [o.name for o in model.graph.output]
    return dict(zip(names, ReferenceEvaluator(model).run(names, feeds)))


def assert_close(actual: np.ndarray, expected: np.ndarray, rel: float = 1e-4) -> None:
    """Agreement within ``rel`` of the reference's largest magnitude."""
    scale = float(np.abs(expected).max()) or 1.0
    np.testing.assert_allclose(actual, expected, rtol=0, atol=rel * scale)


def engine_for(model: onnx.ModelProto):
    from edgecore import Engine, EngineConfig
    from edgecore.plugins import get_plugin_manager

    if "cpu_simd" not in get_plugin_manager().backends():
        pytest.skip("edgecore-cpu-simd is not installed")
    return Engine(EngineConfig(backend="cpu_simd")).load(model)


# -- registry --------------------------------------------------------------------------------------------


def test_zoo_registers_through_the_models_hook():
    from edgecore.plugins import build_plugin_manager

    pm = build_plugin_manager(entrypoints=False)
    pm.check_pending()
    models = pm.models()
    for name in (*REFERENCE_PARAMETERS, *TINY, "digits_cnn"):
        assert isinstance(models[name], ModelSpec)
        assert models[name].description
    assert set(models) <= set(zoo.list_models())


def test_spec_parameters_state_the_reference_counts():
    models = zoo.list_models()
    for name, count in REFERENCE_PARAMETERS.items():
        assert models[name].parameters == count


def test_unknown_name_lists_the_available_models():
    with pytest.raises(ModelLoadError, match="no zoo model named 'resnet51'") as info:
        zoo.build("resnet51")
    assert "resnet50" in str(info.value) and "bert_base" in str(info.value)


def test_unknown_option_is_a_model_load_error():
    with pytest.raises(ModelLoadError, match="colour.*options it takes: layers, widths"):
        zoo.build("resnet_tiny", colour="blue")


# -- full-size models --------------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(REFERENCE_PARAMETERS))
def test_full_size_model_is_architecture_exact_and_valid(big_models, name):
    model = big_models(name)
    assert parameters_of(model) == REFERENCE_PARAMETERS[name]
    assert zoo.count_parameters(model) == REFERENCE_PARAMETERS[name]
    onnx.checker.check_model(model, full_check=True)
    assert [(o.domain, o.version) for o in model.opset_import] == [("", 17)]
    assert model.ir_version <= 10


@pytest.mark.parametrize("name", BIG_CNNS)
def test_full_size_cnn_runs_with_sane_logits(big_models, name):
    model = big_models(name)
    (inp,) = model.graph.input
    assert inp.name == "input"
    dims = [d.dim_param or d.dim_value for d in inp.type.tensor_type.shape.dim]
    assert dims == ["batch", 3, 224, 224]
    assert [d.dim_param or d.dim_value for d in model.graph.output[0].type.tensor_type.shape.dim] == ["batch", 1000]
    out = ort_run(model, sample_feeds(model, batch=2))
    logits = out["logits"]
    assert logits.shape == (2, 1000)
    assert np.isfinite(logits).all()
    assert 0.1 < float(logits.std()) < 100


@pytest.mark.parametrize("name", BIG_CNNS)
def test_full_size_cnn_agrees_with_onnx_reference_through_engine(big_models, name):
    """Same graph and weights, with height and width made dynamic so that the pure-numpy reference
    runs a 64x64 image in about a second instead of a 224x224 one in a minute."""
    model = onnx.ModelProto.FromString(big_models(name).SerializeToString())
    for axis, label in ((2, "height"), (3, "width")):
        model.graph.input[0].type.tensor_type.shape.dim[axis].dim_param = label
    feeds = {"input": np.random.default_rng(1).standard_normal((1, 3, 64, 64), dtype=np.float32)}
    with engine_for(model) as engine:
        actual = engine.run(feeds)["logits"]
    assert_close(actual, reference_run(model, feeds)["logits"])


@pytest.mark.parametrize("name", BIG_CNNS)
def test_batch_norm_statistics_and_weights_look_trained(big_models, name):
    model = big_models(name)
    inits = {t.name: onnx.numpy_helper.to_array(t) for t in model.graph.initializer}
    bns = [n for n in model.graph.node if n.op_type == "BatchNormalization"]
    assert len(bns) > 30
    variances = np.concatenate([inits[n.input[4]] for n in bns])
    gammas = np.concatenate([inits[n.input[1]] for n in bns])
    betas = np.concatenate([inits[n.input[2]] for n in bns])
    assert not np.allclose(variances, 1.0) and (variances > 0).all()
    assert gammas.std() > 0.05 and betas.std() > 0.01
    convs = [inits[n.input[1]] for n in model.graph.node if n.op_type == "Conv"]
    assert all(0.001 < float(w.std()) < 2 for w in convs)


def test_cnn_building_blocks():
    def ops(name: str) -> set[str]:
        return {n.op_type for n in zoo.build(name).graph.node}

    def depthwise(name: str) -> bool:
        convs = [n for n in zoo.build(name).graph.node if n.op_type == "Conv"]
        return any(a.name == "group" and a.i > 1 for n in convs for a in n.attribute)

    assert {"Clip", "BatchNormalization", "Conv", "Add", "Gemm"} <= ops("mobilenet_v2_tiny")  # ReLU6 = Clip
    assert {"Sigmoid", "Mul", "GlobalAveragePool", "BatchNormalization", "Add"} <= ops("efficientnet_tiny")
    assert {"MaxPool", "Relu", "BatchNormalization", "Add", "Gemm"} <= ops("resnet_tiny")
    assert depthwise("mobilenet_v2_tiny") and depthwise("efficientnet_tiny") and not depthwise("resnet_tiny")


def test_bert_base_runs_with_dynamic_shapes(big_models):
    model = big_models("bert_base")
    assert [i.name for i in model.graph.input] == list(BERT_INPUTS)
    for value in model.graph.input:
        assert [d.dim_param for d in value.type.tensor_type.shape.dim] == ["batch", "sequence"]
    ops = {n.op_type for n in model.graph.node}
    assert {"Gather", "LayerNormalization", "MatMul", "Softmax", "Erf", "Tanh"} <= ops
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    for batch, sequence in ((1, 7), (2, 16)):
        values = session.run(None, sample_feeds(model, batch=batch, sequence=sequence))
        out = dict(zip([o.name for o in session.get_outputs()], values))
        assert out["last_hidden_state"].shape == (batch, sequence, 768)
        assert out["pooler_output"].shape == (batch, 768)
        assert all(np.isfinite(v).all() for v in out.values())


# -- tiny variants and the digits model ----------------------------------------------------------------


@pytest.mark.parametrize("name", [*TINY, "digits_cnn"])
def test_small_model_agrees_with_onnx_reference(name):
    model = zoo.build(name)
    onnx.checker.check_model(model, full_check=True)
    assert model.ir_version <= 10
    feeds = sample_feeds(model)
    actual, expected = ort_run(model, feeds), reference_run(model, feeds)
    assert actual.keys() == expected.keys()
    for key in expected:
        assert np.isfinite(expected[key]).all()
        assert_close(actual[key], expected[key])


@pytest.mark.parametrize("name", [*TINY, "digits_cnn"])
def test_small_model_runs_through_engine(name):
    model = zoo.build(name)
    feeds = sample_feeds(model)
    with engine_for(model) as engine:
        out = engine.run(feeds)
    expected = reference_run(model, feeds)
    for key in expected:
        assert_close(out[key], expected[key])


def test_tiny_variants_share_the_full_builders():
    models = zoo.list_models()
    for tiny, full in (("mobilenet_v2_tiny", "mobilenet_v2"), ("resnet_tiny", "resnet50"),
                       ("efficientnet_tiny", "efficientnet_b0"), ("bert_tiny", "bert_base")):
        assert models[tiny].builder.func is models[full].builder
        assert parameters_of(zoo.build(tiny)) == models[tiny].parameters


def test_bert_attention_mask_hides_padding():
    model = zoo.build("bert_tiny")
    ids = np.array([[5, 17, 301, 42]])
    short = {"input_ids": ids, "attention_mask": np.ones_like(ids), "token_type_ids": np.zeros_like(ids)}
    padded_ids = np.concatenate([ids, [[0, 0, 0]]], axis=1)
    padded = {
        "input_ids": padded_ids,
        "attention_mask": (padded_ids > 0).astype(np.int64),
        "token_type_ids": np.zeros_like(padded_ids),
    }
    a, b = ort_run(model, short), ort_run(model, padded)
    assert_close(b["last_hidden_state"][:, :4], a["last_hidden_state"], rel=1e-4)
    assert_close(b["pooler_output"], a["pooler_output"], rel=1e-4)


def test_digits_model_is_accurate_through_engine():
    images, labels = zoo.digits_test_split()
    assert images.dtype == np.float32 and images.shape[1:] == (1, 8, 8) and 0 <= images.min() <= images.max() <= 1
    assert labels.dtype == np.int64 and len(labels) == len(images) >= 400
    assert set(labels.tolist()) == set(range(10))
    with engine_for(zoo.build("digits_cnn")) as engine:
        logits = engine.run({"input": images})["logits"]
    accuracy = float((logits.argmax(axis=1) == labels).mean())
    assert accuracy >= 0.95
    ops = {n.op_type for n in zoo.build("digits_cnn").graph.node}
    assert {"Conv", "Relu", "MaxPool", "Gemm"} <= ops


# -- seeds and cache ---------------------------------------------------------------------------------


def test_same_seed_same_weights_other_seed_other_weights():
    a = zoo.build("resnet_tiny", seed=3, cache=False)
    b = zoo.build("resnet_tiny", seed=3, cache=False)
    c = zoo.build("resnet_tiny", seed=4, cache=False)
    assert a.SerializeToString() == b.SerializeToString()
    assert a.graph.initializer[0].raw_data != c.graph.initializer[0].raw_data


def test_second_build_loads_from_the_cache(cache_in_tmp):
    first = zoo.build("efficientnet_tiny", seed=1)
    files = list(cache_in_tmp.glob("efficientnet_tiny-seed1-*.onnx"))
    assert len(files) == 1 and not list(cache_in_tmp.glob("*.tmp"))
    assert zoo.build("efficientnet_tiny", seed=1).SerializeToString() == first.SerializeToString()
    # Put another (valid) model in the cache file: the next build must return it, so it read the file.
    onnx.save(zoo.build("digits_cnn"), files[0])
    assert zoo.build("efficientnet_tiny", seed=1).graph.name == "digits_cnn"
    # Other seeds and options are other entries.
    zoo.build("efficientnet_tiny", seed=2)
    zoo.build("efficientnet_tiny", seed=1, num_classes=5)
    assert len(list(cache_in_tmp.glob("efficientnet_tiny-*.onnx"))) == 3


def test_damaged_cache_file_is_rebuilt(cache_in_tmp, caplog):
    zoo.build("bert_tiny")
    (path,) = cache_in_tmp.glob("bert_tiny-*.onnx")
    path.write_bytes(b"\x00not a model")
    model = zoo.build("bert_tiny")
    assert zoo.count_parameters(model) == zoo.list_models()["bert_tiny"].parameters
    assert "unreadable zoo cache file" in caplog.text


def test_export_writes_a_loadable_model(tmp_path):
    path = zoo.export("mobilenet_v2_tiny", tmp_path / "out" / "m.onnx", seed=5)
    model = onnx.load(path)
    assert model.SerializeToString() == zoo.build("mobilenet_v2_tiny", seed=5).SerializeToString()


# -- CLI -----------------------------------------------------------------------------------------------------


def run_cli(*argv: str) -> int:
    from edgecore.cli import zoo as zoo_cli

    parser = argparse.ArgumentParser(prog="edgecore")
    zoo_cli.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(list(argv))
    return args.func(args)


def test_cli_zoo_list_json(capsys):
    assert run_cli("zoo", "list", "--json") == 0
    rows = {row["name"]: row for row in json.loads(capsys.readouterr().out)}
    assert rows["resnet50"]["parameters"] == REFERENCE_PARAMETERS["resnet50"]
    assert rows["bert_base"]["task"] == "feature-extraction"


def test_cli_zoo_list_table(capsys):
    assert run_cli("zoo", "list") == 0
    out = capsys.readouterr().out
    assert "efficientnet_b0" in out and "5,288,548" in out


def test_cli_zoo_export(tmp_path, capsys):
    target = tmp_path / "tiny.onnx"
    assert run_cli("zoo", "export", "zoo:bert_tiny", "-o", str(target), "--seed", "2") == 0
    assert str(target) in capsys.readouterr().out
    assert onnx.load(target).SerializeToString() == zoo.build("bert_tiny", seed=2).SerializeToString()


def test_cli_zoo_export_unknown_name(tmp_path, capsys):
    assert run_cli("zoo", "export", "nope", "-o", str(tmp_path / "x.onnx")) == 1
    assert "available:" in capsys.readouterr().err
    assert not (tmp_path / "x.onnx").exists()
