"""``edgecore serve MODEL --ray`` end to end (its own local Ray cluster, in a subprocess: started,
queried over KServe v2 HTTP, stopped by SIGINT), and the example Ray Serve config file
(``serve run contrib/ray/examples/config.yaml``) checked against Ray's schema and built."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

import edgecore_ray
from edgecore.errors import ConfigurationError

CONFIG = Path(__file__).resolve().parents[1] / "examples" / "config.yaml"


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_edgecore_serve_ray_serves_kserve_v2_and_stops_on_sigint(reference, cluster):
    port = _free_port()
    command = [sys.executable, "-m", "edgecore", "serve", "zoo:digits_cnn", "--ray", "--replicas", "2",
               "--router", "weighted", "--weights", "3,1", "--http-port", str(port), "--backend", "cpu_simd",
               "--num-threads", "1", "--replica-cpus", "0.5"]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "RAY_ADDRESS": ""})
    lines: list[str] = []
    ready = threading.Event()

    def read() -> None:
        for line in proc.stdout:
            lines.append(line)
            if line.startswith("serving digits_cnn on Ray Serve"):
                ready.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        assert ready.wait(120), "".join(lines[-30:])
        assert "2 replicas, router weighted" in "".join(lines)
        client = edgecore_ray.Client(f"http://127.0.0.1:{port}", model="digits_cnn", retries=2, backoff_s=0.2)
        for seed in range(20):
            x = cluster.inputs(seed, batch=1 + seed % 2)
            np.testing.assert_allclose(client.infer({"input": x})["logits"], reference(x), rtol=1e-5, atol=1e-6)
        proc.send_signal(signal.SIGINT)
        assert proc.wait(60) == 0, "".join(lines[-30:])
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(30)


def test_example_config_file_is_a_valid_serve_config_and_builds():
    import yaml
    from ray.serve.deployment import Application
    from ray.serve.schema import ServeDeploySchema

    doc = yaml.safe_load(CONFIG.read_text())
    ServeDeploySchema.model_validate(doc)
    (app,) = doc["applications"]
    assert app["import_path"] == "edgecore_ray.app:build"
    assert isinstance(edgecore_ray.build(app["args"]), Application)
    with pytest.raises(ConfigurationError, match=r"unknown key\(s\) in the application's args: replicas, engine.batch;"):
        edgecore_ray.build({"model": "zoo:digits_cnn", "replicas": 2, "engine": {"batch": 4}})
    with pytest.raises(ConfigurationError, match="need model"):
        edgecore_ray.build({"num_replicas": 2})


def test_serve_ray_refuses_what_it_cannot_honour(capsys):
    from edgecore.cli import main

    assert main(["serve", "a.onnx", "b.onnx", "--ray"]) == 1
    assert "--ray serves exactly one MODEL, got 2" in capsys.readouterr().err
    assert main(["serve", "a.onnx", "--ray", "--memory-budget", "1GB"]) == 1
    assert "--memory-budget cannot be used with --ray" in capsys.readouterr().err
    started = time.monotonic()
    assert main(["serve", "zoo:digits_cnn", "--ray", "--router", "round_robin", "--weights", "3,1"]) == 1
    assert "used by router='weighted' only" in capsys.readouterr().err
    assert time.monotonic() - started < 30  # refused before any cluster starts
