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

from edgecore import hookimpl
from edgecore.errors import PluginError
from edgecore.plugins import build_plugin_manager
from edgecore.specs import BackendSpec

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


def test_disable_autoload(monkeypatch):
    monkeypatch.setenv("EDGECORE_DISABLE_PLUGIN_AUTOLOAD", "1")
    assert "cpu_simd" not in build_plugin_manager().backends()


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
