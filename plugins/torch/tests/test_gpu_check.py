"""The CPU-side parts of benchmarks/gpu_check.sh: the same pipeline on a tiny model (zoo build,
agreement with onnxruntime, timed sides, the scheduler, the JSON report and the table), through the
shell script's no-pip setup (PYTHONPATH and written .dist-info entry points)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]


def test_quick_cpu_run_writes_the_report_and_the_table(tmp_path):
    env = dict(os.environ, PYTHON=sys.executable, OUT=str(tmp_path), EDGECORE_BENCH_QUIET_WAIT_S="0")
    args = ["--device", "cpu", "--quick", "--models", "BERT-tiny", "--batches", "1", "--iters", "2", "--rounds", "1",
            "--scheduler-seconds", "0.3", "--out", str(tmp_path)]
    done = subprocess.run(
        ["bash", str(ROOT / "benchmarks" / "gpu_check.sh"), *args],
        capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "backends:" in done.stdout and "'torch'" in done.stdout  # entry points found without pip
    report = json.loads((tmp_path / "gpu_check_cpu.json").read_text())
    assert report["card"] == "cpu" and report["quick"]
    [correct] = report["correctness"]
    assert correct["model"] == "BERT-tiny" and correct["fp32_ok"] and correct["fp16_ok"]
    [speed] = report["speed"]
    assert speed["batch"] == 1 and set(speed["timings"]) == {"edgecore", "edgecore_host_io"}
    assert speed["timings"]["edgecore"]["calls"] == 2
    assert report["scheduler"]["model"] == "mobilenet_v2_tiny" and report["scheduler"]["serial_per_s"] > 0
    table = done.stdout[done.stdout.index("edgecore torch backend on cpu"):]
    assert "BERT-tiny" in table and "scheduler (mobilenet_v2_tiny" in table
