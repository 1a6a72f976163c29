"""The plugin contract seen from a third-party author: a backend that fails to compile, a plugin
manager of one's own for backend choice and ``zoo:`` names."""

from __future__ import annotations

import types

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from edgecore import BackendExecutionError, Engine, EngineConfig, hookimpl
from edgecore.backend import Availability, Backend
from edgecore.plugins import build_plugin_manager
from edgecore.specs import BackendSpec, ModelSpec
from edgecore.testing import reference_outputs


class _BrokenCompiler(Backend):
    """Claims every op, then fails to compile: the trap a new plugin author falls into."""

    name = "broken_compiler"

    def availability(self) -> Availability:
        return Availability(ok=True)

    def compile(self, graph, options):
        raise RuntimeError("kernel library libfoo.so not found")


def _relu_model() -> onnx.ModelProto:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 4])
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "relu", [x], [y])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _plugin_manager(*plugins: types.ModuleType):
    pm = build_plugin_manager()
    for plugin in plugins:
        pm.register(plugin, name=plugin.__name__)
    pm.check_pending()
    return pm


def _module(name: str, **hooks) -> types.ModuleType:
    module = types.ModuleType(name)
    for hook_name, function in hooks.items():
        setattr(module, hook_name, hookimpl(function))
    return module


BROKEN = _module(
    "broken_plugin",
    edgecore_backends=lambda: [BackendSpec(name="broken_compiler", factory=_BrokenCompiler, priority=90)],
)


def test_a_backend_that_fails_to_compile_is_named_and_auto_falls_back():
    pm = _plugin_manager(BROKEN)
    model = _relu_model()
    with pytest.raises(BackendExecutionError, match="broken_compiler.*broken_plugin.*libfoo") as info:
        Engine(EngineConfig(backend="broken_compiler"), plugin_manager=pm).load(model)
    assert isinstance(info.value.__cause__, RuntimeError)
    assert info.value.backend == "broken_compiler"

    with Engine(plugin_manager=pm).load(model) as engine:  # auto: the broken one is tried first
        assert engine.backend != "broken_compiler"
        assert [name for name, _ in engine.backend_fallbacks] == ["broken_compiler"]
        assert "libfoo" in engine.backend_fallbacks[0][1]
        feeds = {"x": np.linspace(-1, 1, 8, dtype=np.float32).reshape(2, 4)}
        np.testing.assert_allclose(engine.run(feeds)["y"], reference_outputs(model, feeds)["y"])


def test_engine_resolves_zoo_names_through_its_own_plugin_manager():
    model = _relu_model()
    mine = _module(
        "my_models", edgecore_models=lambda: [ModelSpec(name="my_relu", builder=lambda seed=0: model)]
    )
    pm = _plugin_manager(mine)
    with Engine(plugin_manager=pm).load("zoo:my_relu") as engine:
        assert engine.inputs[0].name == "x"
    from edgecore.errors import ModelLoadError

    with pytest.raises(ModelLoadError, match="my_relu"):  # the process-wide manager has no such model
        Engine().load("zoo:my_relu")


def test_backend_choice_follows_the_given_plugin_manager():
    """A plugin's select hook in one manager decides for engines built on that manager only."""
    chosen = []

    def pick(graph, candidates, config):
        chosen.append([c.name for c in candidates])
        return next(c for c in candidates if c.name == "reference") if any(c.name == "reference" for c in candidates) else None

    pm = _plugin_manager(_module("picker", edgecore_select_backend=pick))
    with Engine(plugin_manager=pm).load(_relu_model()) as engine:
        expected = "reference" if "reference" in pm.backends() else engine.backend
        assert engine.backend == expected
    assert chosen
