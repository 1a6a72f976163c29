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
