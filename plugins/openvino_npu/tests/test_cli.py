"""The plugin shows in ``edgecore backends``; without openvino it is listed as unavailable, with the reason."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap


def _backends(prelude: str = "") -> dict:
    code = textwrap.dedent(
        f"""
        import sys
        {prelude}
        from edgecore.cli import main
        sys.exit(main(["backends", "--json"]))
        """
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return {row["name"]: row for row in json.loads(done.stdout)["backends"]}


def test_backends_lists_openvino_with_devices():
    row = _backends()["openvino"]
    assert row["available"], row["reason"]
    assert row["distribution"] == "edgecore-openvino-npu"
    names = [d["name"] for d in row["devices"]]
    assert "cpu" in names and "auto" in names
    auto = next(d for d in row["devices"] if d["name"] == "auto")
    assert "CPU" in auto["properties"]["candidates"]
    for kind, reason in auto["properties"]["unavailable"].items():
        assert kind.upper() in reason or kind in reason


def test_without_openvino_the_backend_is_unavailable_and_the_rest_works():
    blocked = "sys.modules['openvino'] = None  # import openvino -> ImportError"
    rows = _backends(blocked)
    assert rows["openvino"]["available"] is False
    assert "openvino" in rows["openvino"]["reason"] and "pip install" in rows["openvino"]["reason"]
    assert rows["cpu_simd"]["available"] is True

    code = textwrap.dedent(
        f"""
        import sys
        {blocked}
        import numpy as np
        from edgecore import Engine, EngineConfig
        from edgecore.errors import BackendUnavailableError
        with Engine(EngineConfig(backend="cpu_simd")).load("zoo:digits_cnn") as engine:
            assert engine.run({{"input": np.zeros((2, 1, 8, 8), np.float32)}})["logits"].shape == (2, 10)
        try:
            Engine(EngineConfig(backend="openvino")).load("zoo:digits_cnn")
        except BackendUnavailableError as exc:
            print("refused:", exc)
        """
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "refused:" in done.stdout and "openvino" in done.stdout
