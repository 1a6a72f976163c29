"""``edgecore tune`` on the trained digits CNN, with time limits of seconds.

The chosen configuration is checked against raw onnxruntime on the model file tune wrote; budgets
are checked through the reasons the report gives. Speed is never asserted (the figures belong to the
lead's quiet-window runs).
"""

from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("edgecore_cpu_simd")
ort = pytest.importorskip("onnxruntime")


@pytest.fixture(scope="module")
def digits():
    from edgecore.zoo._digits import digits_test_split

    images, labels = digits_test_split()
    return images[:96], labels[:96]


def _backends() -> str:
    """cpu_simd, and openvino where it is installed (so that a default of another backend is re-measured)."""
    from edgecore.plugins import get_plugin_manager
    from edgecore.selection import available_backend

    names = ["cpu_simd"]
    spec = get_plugin_manager().backends().get("openvino")
    if spec is not None:
        try:
            available_backend(spec)
            names.append("openvino")
        except Exception:
            pass
    return ",".join(names)


def test_tune_writes_a_folder_whose_engine_matches_onnxruntime(tmp_path, digits):
    import edgecore.tune
    from edgecore.tune import from_tuned, load_tuned

    images, labels = digits
    out = tmp_path / "tuned"
    result = edgecore.tune(
        "zoo:digits_cnn", calibration={"input": images}, labels=labels, time_limit="20s", backends=_backends(),
        precisions="fp32,int8", threads=(0, 1), output=out, cache_dir=tmp_path / "cache",
    )
    assert result.ok, result.report["summary"]
    for name in ("model.onnx", "edgecore.toml", "report.md", "report.json"):
        assert (out / name).is_file(), name
    report = json.loads((out / "report.json").read_text())
    assert report["schema"] == "edgecore.tune/1"
    assert report["chosen"] == result.chosen
    keys = {c["key"] for c in report["candidates"]}
    assert result.chosen in keys and len(keys) == len(report["candidates"])
    chosen = next(c for c in report["candidates"] if c["key"] == result.chosen)
    assert chosen["status"] == "chosen" and chosen["memory_mb"] is not None
    # the digits CNN stays within the default budget: 1 point of top-1 on its labelled data
    assert chosen["accuracy_loss"] <= 1.0
    # the gain over the best default, judged by bench --compare on the final measurement
    assert result.gain is not None and result.gain["against"] != result.chosen
    compare = json.loads((out / "compare.json").read_text())
    assert {f["figure"] for f in compare["figures"]} >= {"p50_ms"}

    model, config = load_tuned(out)
    assert config.backend == chosen["backend"]
    assert config.num_threads == chosen["threads"]
    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    with from_tuned(out) as engine:
        got = engine.run({"input": images[:8]})["logits"]
    want = session.run(["logits"], {"input": images[:8]})[0]
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
    with from_tuned(out, num_threads=1) as engine:  # overrides reach the EngineConfig
        assert engine.config.num_threads == 1


def test_tight_budgets_reject_for_accuracy_and_memory_with_the_reason(tmp_path, capsys):
    from edgecore.cli import main

    out = tmp_path / "tuned"
    code = main(["tune", "zoo:digits_cnn", "--time-limit", "15s", "--budget", "1e-9", "--memory-budget", "1kB",
                 "--backends", "cpu_simd", "--precisions", "fp32,int8", "--pass-option", "int8.fallback=false",
                 "--threads", "0,1", "-o", str(out),
                 "--cache-dir", str(tmp_path / "cache"), "--json"])
    report = json.loads(capsys.readouterr().out)
    assert code == 1 and report["chosen"] is None  # nothing fits in a kilobyte
    stages = {c["stage"]: c["reason"] for c in report["candidates"] if c["status"] == "rejected"}
    assert "rolled back" in stages["accuracy"] and "budget" in stages["accuracy"]
    assert "over the memory budget" in stages["memory"]
    text = (out / "report.md").read_text()
    assert stages["accuracy"].split(":")[0] in text and "over the memory budget" in text
    assert not (out / "edgecore.toml").exists()

    # a rerun on the same cache continues: built models are read back, eliminated candidates stay out
    import edgecore.tune

    again = edgecore.tune("zoo:digits_cnn", time_limit="15s", budget=1e-9, memory_budget="1kB", backends="cpu_simd",
                          precisions="fp32,int8", threads=(0, 1), pass_options={"int8": {"fallback": False}},
                          output=None, cache_dir=tmp_path / "cache")
    assert again.outcome.resumed
    eliminated = [c["key"] for c in report["candidates"] if c["stage"] == "halving" and "round" in c["reason"]]
    carried = {e.candidate.key: e.reason for e in again.outcome.entries}
    assert eliminated and all("earlier run" in carried[key] for key in eliminated)
    assert all(a.seconds == report["artifacts"][k]["seconds"] for k, a in again.outcome.artifacts.items())
