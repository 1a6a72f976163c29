"""Plugin discovery: hooks, duplicate names, broken plugins, and a third-party backend installed
from its own distribution into a fresh virtual environment."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import sysconfig
import venv
from pathlib import Path

import pytest

from edgecore import Engine, EngineConfig, hookimpl
from edgecore.errors import BackendUnavailableError, PluginError
from edgecore.plugins import WRAPPER_SOURCE, build_plugin_manager
from edgecore.specs import BackendSpec, PassSpec

ROOT = Path(__file__).resolve().parents[1]


class _Dup:
    @hookimpl
    def edgecore_backends(self):
        return [BackendSpec(name="cpu_simd", factory=object)]


def test_builtin_hooks_are_all_specified():
    pm = build_plugin_manager(entrypoints=False)
    pm.check_pending()  # a misspelt hook name would raise here


def test_entry_point_plugins_load_and_hooks_check():
    pm = build_plugin_manager(entrypoints=True)
    pm.check_pending()
    assert "cpu_simd" in pm.backends()


def test_duplicate_backend_name_raises():
    pm = build_plugin_manager(entrypoints=True)
    pm.register(_Dup(), name="dup")
    with pytest.raises(PluginError, match="'cpu_simd' is registered by both"):
        pm.backends()


def test_wrong_record_type_raises():
    class Wrong:
        @hookimpl
        def edgecore_backends(self):
            return ["cpu"]

    pm = build_plugin_manager(entrypoints=False)
    pm.register(Wrong(), name="wrong")
    with pytest.raises(PluginError, match="must return BackendSpec"):
        pm.backends()


def test_registries_go_through_pluggy_so_wrappers_and_ordering_apply():
    calls = []

    class Early:  # registered first: pluggy would call it last, were it not tryfirst
        @hookimpl(tryfirst=True)
        def edgecore_backends(self):
            calls.append("early")
            return [BackendSpec(name="early_backend", factory=object)]

        @hookimpl(tryfirst=True)
        def edgecore_passes(self):
            return [PassSpec(name="early_pass", factory=object)]

    class Late:
        @hookimpl
        def edgecore_backends(self):
            calls.append("late")
            return (BackendSpec(name=n, factory=object) for n in ("late_backend", "dropped_backend"))

    class Wrapper:
        @hookimpl(hookwrapper=True)
        def edgecore_backends(self):
            calls.append("wrapper: before")
            outcome = yield
            kept = [[s for s in chunk if s.name != "dropped_backend"] for chunk in outcome.get_result()]
            outcome.force_result(kept + [[BackendSpec(name="added_backend", factory=object, priority=-1)]])
            calls.append("wrapper: after")

    class NewStyleWrapper:
        @hookimpl(wrapper=True)
        def edgecore_passes(self):
            result = yield
            return [[attrs_evolve(s, description="seen by the wrapper") for s in chunk] for chunk in result]

    pm = build_plugin_manager(entrypoints=False)
    for plugin in (Early(), Late(), Wrapper(), NewStyleWrapper()):
        pm.register(plugin, name=type(plugin).__name__.lower())
    pm.check_pending()
    backends = pm.backends()
    assert calls == ["wrapper: before", "early", "late", "wrapper: after"]
    assert "dropped_backend" not in backends and {"early_backend", "late_backend", "added_backend"} <= set(backends)
    assert pm.source_of("edgecore_backends", "early_backend") == "early"
    assert pm.source_of("edgecore_backends", "late_backend") == "late"
    assert pm.source_of("edgecore_backends", "added_backend") == WRAPPER_SOURCE
    passes = pm.passes()
    assert list(passes)[0] == "early_pass"  # tryfirst records first, then registration order (core's)
    assert list(passes)[1:] == list(build_plugin_manager(entrypoints=False).passes())
    assert {s.description for s in passes.values()} == {"seen by the wrapper"}


def attrs_evolve(record, **changes):
    import attrs

    return attrs.evolve(record, **changes)


def test_duplicate_names_are_refused_naming_both_plugins_even_through_a_wrapper():
    class Twice:
        @hookimpl
        def edgecore_backends(self):
            return [BackendSpec(name="same", factory=object)]

    class Passthrough:
        @hookimpl(wrapper=True)
        def edgecore_backends(self):
            return (yield)

    pm = build_plugin_manager(entrypoints=False)
    pm.register(Twice(), name="first")
    pm.register(Passthrough(), name="passthrough")
    pm.register(Twice(), name="second")
    with pytest.raises(PluginError, match="'same' is registered by both plugin 'first' and plugin 'second'"):
        pm.backends()


def test_a_registration_hook_must_return_an_iterable():
    class Single:
        @hookimpl
        def edgecore_backends(self):
            return BackendSpec(name="single", factory=object)

    pm = build_plugin_manager(entrypoints=False)
    pm.register(Single(), name="single")
    with pytest.raises(PluginError, match="plugin 'single': edgecore_backends\\(\\) must return an iterable"):
        pm.backends()


def test_disable_autoload_says_so(monkeypatch):
    monkeypatch.setenv("EDGECORE_DISABLE_PLUGIN_AUTOLOAD", "1")
    pm = build_plugin_manager()
    assert "cpu_simd" not in pm.backends() and not pm.autoload
    with pytest.raises(BackendUnavailableError) as info:
        Engine(EngineConfig(backend="cpu_simd"), plugin_manager=pm).load(_tiny_model())
    message = str(info.value)
    assert "autoload is disabled (EDGECORE_DISABLE_PLUGIN_AUTOLOAD=1)" in message
    if "cpu_simd" in _entry_points():
        assert "'cpu_simd' (edgecore-cpu-simd) is installed but was not loaded" in message
    assert "pip install" not in message.split("autoload is disabled")[0]

    result = subprocess.run([sys.executable, "-m", "edgecore", "backends"], capture_output=True, text=True,
                            env={**os.environ, "EDGECORE_DISABLE_PLUGIN_AUTOLOAD": "1", "COLUMNS": "200"})
    assert result.returncode == 0, result.stderr
    assert "autoload is disabled" in result.stdout and "pip install" not in result.stdout


def _entry_points() -> set[str]:
    import importlib.metadata

    return {ep.name for ep in importlib.metadata.entry_points(group="edgecore")}


def _tiny_model():
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2])
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "tiny", [x], [y])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


# -- a separate distribution, installed with pip into a temporary venv -------------------------------


@pytest.fixture(scope="module")
def plugin_venv(tmp_path_factory):
    """A venv that sees this environment's packages (edgecore, cpu_simd) and gets two plugins:
    the reference backend (contrib/reference_backend) and one whose import raises."""
    home = tmp_path_factory.mktemp("venv")
    venv.EnvBuilder(with_pip=False).create(home)
    python = home / "bin" / "python"
    site = subprocess.run(
        [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True, capture_output=True, text=True,
    ).stdout.strip()
    parent = sysconfig.get_paths()["purelib"]  # addsitedir also runs the parent's .pth (editable installs)
    Path(site, "_parent_env.pth").write_text(f"import site; site.addsitedir({parent!r})\n")
    for dist in (ROOT / "contrib" / "reference_backend", ROOT / "tests" / "data" / "broken_plugin"):
        subprocess.run(
            [python, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "--no-index",
             "--target", site, "--upgrade", str(dist)],
            check=True, capture_output=True, text=True, cwd=home,
        )
    return python


def _edgecore(python, *args, env=None):
    return subprocess.run(
        [python, "-m", "edgecore", *args], capture_output=True, text=True, env={**os.environ, **(env or {})}
    )


def test_third_party_backend_is_listed_and_broken_plugin_reported(plugin_venv):
    result = _edgecore(plugin_venv, "backends", "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    names = {b["name"]: b for b in report["backends"]}
    assert names["reference"]["distribution"] == "edgecore-reference"
    assert names["reference"]["available"] and names["cpu_simd"]["available"]
    broken = {b["name"]: b for b in report["broken_plugins"]}
    assert "libfrobnicate" in broken["broken"]["error"]
    assert broken["broken"]["distribution"] == "edgecore-broken-example"


def test_a_backend_of_a_broken_plugin_is_reported_as_installed_but_failing(plugin_venv):
    result = _edgecore(plugin_venv, "run", "zoo:resnet_tiny", "--backend", "broken")
    assert result.returncode == 1
    assert "its plugin 'broken' (edgecore-broken-example) is installed but failed to load" in result.stderr
    assert "libfrobnicate" in result.stderr and "pip install" not in result.stderr


def test_third_party_backend_runs_a_model_through_engine(plugin_venv):
    script = (
        "import numpy as np\n"
        "from edgecore import Engine, EngineConfig\n"
        "from edgecore.testing import OP_CASES, reference_outputs\n"
        "case = OP_CASES['MLP']; model = case.build(); feeds = case.feeds(batch=3)\n"
        "with Engine(EngineConfig(backend='reference')) as e:\n"
        "    e.load(model); got = e.run(feeds)\n"
        "    assert e.backend == 'reference'\n"
        "np.testing.assert_allclose(got['y'], reference_outputs(model, feeds)['y'], rtol=1e-6)\n"
        "with Engine() as e:\n"
        "    e.load(model); assert e.backend == 'cpu_simd', e.backend\n"
        "print('ok')\n"
    )
    result = subprocess.run([plugin_venv, "-c", script], capture_output=True, text=True)
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr


def test_strict_mode_makes_a_broken_plugin_fatal(plugin_venv):
    result = _edgecore(plugin_venv, "backends", "--json", env={"EDGECORE_STRICT_PLUGINS": "1"})
    assert result.returncode != 0
    assert "broken" in result.stderr and "libfrobnicate" in result.stderr


def test_cli_run_on_third_party_backend(plugin_venv):
    result = _edgecore(plugin_venv, "run", "zoo:resnet_tiny", "--backend", "reference", "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["backend"] == "reference" and report["outputs"][0]["shape"] == [1, 10]
