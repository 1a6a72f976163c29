"""Fixtures of the serving tests: small ONNX models written with onnx.helper, and the real server
started as a subprocess (``python -m edgecore serve ...``, so the CLI hook is exercised) on free
loopback ports. Every wait is bounded; a server is stopped with SIGTERM and its exit code checked.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

pytest.importorskip("edgecore_serve", reason="edgecore-serve is not installed")
pytest.importorskip("tritonclient.http", reason="tritonclient[http] is not installed")
pytest.importorskip("tritonclient.grpc", reason="tritonclient[grpc] is not installed")

import onnx  # noqa: E402
from onnx import TensorProto as T  # noqa: E402
from onnx import helper  # noqa: E402

STARTUP_S = 90.0
STOP_S = 60.0


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _save(graph: onnx.GraphProto, path: Path) -> Path:
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    onnx.checker.check_model(model)
    onnx.save(model, path)
    return path


def write_models(folder: Path) -> dict[str, Path]:
    """addsub (FP32 a, b -> sum, diff), mul2 (INT64 x -> 2x), strid (BYTES s -> out), all batchable."""
    folder.mkdir(parents=True, exist_ok=True)
    v = helper.make_tensor_value_info
    addsub = helper.make_graph(
        [helper.make_node("Add", ["a", "b"], ["sum"]), helper.make_node("Sub", ["a", "b"], ["diff"])],
        "addsub",
        [v("a", T.FLOAT, ["batch", 4]), v("b", T.FLOAT, ["batch", 4])],
        [v("sum", T.FLOAT, ["batch", 4]), v("diff", T.FLOAT, ["batch", 4])],
    )
    mul2 = helper.make_graph(
        [helper.make_node("Mul", ["x", "two"], ["y"])],
        "mul2",
        [v("x", T.INT64, ["batch", 3])],
        [v("y", T.INT64, ["batch", 3])],
        initializer=[helper.make_tensor("two", T.INT64, [], [2])],
    )
    strid = helper.make_graph(
        [helper.make_node("Identity", ["s"], ["out"])],
        "strid",
        [v("s", T.STRING, ["batch", 2])],
        [v("out", T.STRING, ["batch", 2])],
    )
    return {
        "addsub": _save(addsub, folder / "addsub.onnx"),
        "mul2": _save(mul2, folder / "mul2.onnx"),
        "strid": _save(strid, folder / "strid.onnx"),
    }


class ServerProcess:
    """``python -m edgecore serve ARGS`` on free loopback ports."""

    def __init__(self, args: list[str], log: Path, env: dict[str, str] | None = None) -> None:
        self.http_port, self.grpc_port = free_port(), free_port()
        self.http_url = f"127.0.0.1:{self.http_port}"
        self.grpc_url = f"127.0.0.1:{self.grpc_port}"
        self.log_path = log
        self._log = open(log, "wb")
        command = [
            sys.executable, "-m", "edgecore", "serve", *args,
            "--host", "127.0.0.1", "--http-port", str(self.http_port), "--grpc-port", str(self.grpc_port),
        ]
        self.process = subprocess.Popen(
            command, stdout=self._log, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})}
        )
        self.returncode: int | None = None

    def wait_ready(self, timeout: float = STARTUP_S) -> None:
        deadline = time.monotonic() + timeout
        url = f"http://{self.http_url}/v2/health/ready"
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the server exited with {self.process.returncode}:\n{self.log()}")
            try:
                with urllib.request.urlopen(url, timeout=2) as response:
                    if response.status == 200:
                        return
            except (urllib.error.URLError, ConnectionError, OSError):
                pass
            time.sleep(0.1)
        self.kill()
        raise RuntimeError(f"the server was not ready within {timeout} s:\n{self.log()}")

    def log(self) -> str:
        if not self._log.closed:
            self._log.flush()
        return self.log_path.read_text(errors="replace")

    def stop(self, timeout: float = STOP_S) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            self.returncode = self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise
        finally:
            self._log.close()
        return self.returncode

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)


@pytest.fixture(scope="session")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return write_models(tmp_path_factory.mktemp("models"))


@pytest.fixture(scope="session")
def server(models: dict[str, Path], tmp_path_factory: pytest.TempPathFactory):
    """The default server: addsub, mul2 and zoo:digits_cnn on the best backend."""
    process = ServerProcess(
        [str(models["addsub"]), f"twice={models['mul2']}", "zoo:digits_cnn", "--max-queue-delay-us", "2000"],
        tmp_path_factory.mktemp("logs") / "server.log",
    )
    try:
        process.wait_ready()
        yield process
    finally:
        rc = process.stop()
    assert rc == 0, process.log()


@pytest.fixture(scope="session")
def reference_server(models: dict[str, Path], tmp_path_factory: pytest.TempPathFactory):
    """On the reference backend (string tensors), with a bearer token."""
    process = ServerProcess(
        [str(models["strid"]), str(models["addsub"]), "--backend", "reference"],
        tmp_path_factory.mktemp("logs") / "reference.log",
        env={"EDGECORE_SERVE_TOKEN": "s3cret"},
    )
    try:
        process.wait_ready()
        yield process
    finally:
        rc = process.stop()
    assert rc == 0, process.log()


@pytest.fixture
def start_server(tmp_path: Path):
    """A factory: ``start_server(args, env=None)`` starts a server and waits until it is ready; any
    still running at the end of the test is killed."""
    started: list[ServerProcess] = []

    def start(args: list[str], env: dict[str, str] | None = None) -> ServerProcess:
        process = ServerProcess(args, tmp_path / f"server{len(started)}.log", env)
        started.append(process)
        process.wait_ready()
        return process

    yield start
    for process in started:
        process.kill()
