"""Many models under one memory budget, measured from outside: three MatMul models (25 MiB of weights
each, written to a temporary folder) of which only one fits the budget are served in turn by
concurrent HTTP and gRPC clients. Every request succeeds with the right outputs, loads and evictions
are counted in the statistics and in ``/metrics``, and the server process's RSS (``VmRSS`` and the
kernel's exact high-water mark ``VmHWM`` from ``/proc/PID/status``, reset through ``clear_refs``)
stays within its base plus the budget. Then a model larger than the whole budget is refused (503 /
UNAVAILABLE, the message names the sizes) while the others keep serving.

The base is the server's RSS once ready with no model loaded (under a budget the runtime is already
started, on a one-node model). The budget counts what a model holds once loaded; while a model
loads, its file's parse and the runtime's session being built come on top (the load's transient),
so the peak is allowed the budget plus one load's transient, measured on a load alone, plus
``SLACK`` (request buffers, thread stacks, allocator slack). With the load over, RSS must be within
the budget plus ``SLACK``: three models loaded at once would exceed that.
"""

from __future__ import annotations

import json
import os
import re
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import onnx
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from onnx import TensorProto as T
from onnx import helper, numpy_helper
from tritonclient.utils import InferenceServerException

if not Path("/proc/self/clear_refs").exists():
    pytest.skip("needs /proc/PID/status and clear_refs (Linux) to read the server's memory", allow_module_level=True)

N = 2560  # 2560 x 2560 float32: 25 MiB of weights per model
BUDGET_MIB = 40  # one loaded model fits, two do not (each holds about its weights once loaded)
ROUNDS, PER_MODEL = 2, 2  # each client: ROUNDS x (3 models x PER_MODEL requests)
HTTP_CLIENTS = GRPC_CLIENTS = 2
SLACK = 24 << 20  # request buffers, thread stacks, allocator slack
X = np.linspace(-1, 1, 2 * N, dtype=np.float32).reshape(2, N)


def _matmul(path: Path, n: int, seed: int) -> np.ndarray:
    weight = np.random.default_rng(seed).standard_normal((n, n), dtype=np.float32)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"])],
        path.stem,
        [helper.make_tensor_value_info("x", T.FLOAT, ["batch", n])],
        [helper.make_tensor_value_info("y", T.FLOAT, ["batch", n])],
        initializer=[numpy_helper.from_array(weight, "w")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    onnx.save(model, path)
    return weight


def _status(pid: int, key: str) -> int:
    """``VmRSS`` (now) or ``VmHWM`` (peak since the last reset) of ``pid``, in bytes."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    raise AssertionError(f"no {key} line in /proc/{pid}/status")


def _reset_peak(pid: int) -> None:
    """Set ``VmHWM`` back to the current RSS (Linux 4.0+: ``clear_refs`` with 5)."""
    with open(f"/proc/{pid}/clear_refs", "w") as f:
        f.write("5")


def _infer(module, client, model: str, x: np.ndarray):
    tensor = module.InferInput("x", list(x.shape), "FP32")
    tensor.set_data_from_numpy(x)
    return client.infer(model, [tensor], client_timeout=120) if module is grpcclient else client.infer(model, [tensor])


@pytest.fixture(scope="module")
def repository(tmp_path_factory):
    folder = tmp_path_factory.mktemp("budget_repo")
    weights = {f"m{i}": _matmul(folder / f"m{i}.onnx", N, i) for i in range(3)}
    huge = tmp_path_factory.mktemp("huge") / "huge.onnx"
    _matmul(huge, 3584, 9)  # 49 MiB of weights: ~3x that once loaded, more than the whole budget
    return folder, weights, huge


def test_three_models_over_budget_served_in_turn_under_load(repository, start_server, tmp_path):
    folder, weights, huge = repository
    server = start_server(["--model-repository", str(folder), "--memory-budget", f"{BUDGET_MIB}MiB",
                           "--max-queue-delay-us", "1000"], env={"EDGECORE_CACHE_DIR": str(tmp_path / "cache")})
    pid = server.process.pid
    budget = BUDGET_MIB << 20
    http = httpclient.InferenceServerClient(url=server.http_url)
    grpc = grpcclient.InferenceServerClient(url=server.grpc_url)
    try:
        assert http.get_server_metadata() and grpc.get_server_metadata()
        time.sleep(0.3)
        base = _status(pid, "VmRSS")
        expected = {name: X @ w for name, w in weights.items()}

        # one load alone: its peak over the base is one model plus the transient of a (cold) load
        _reset_peak(pid)
        np.testing.assert_allclose(_infer(httpclient, http, "m0", X).as_numpy("y"), expected["m0"],
                                   rtol=1e-4, atol=1e-3)
        single_peak = _status(pid, "VmHWM") - base
        footprint = http.get_inference_statistics("m0")["model_stats"][0]["memory_usage"][0]["byte_size"]
        transient = max(single_peak - footprint, 0)

        failures: list[str] = []
        answered = [0] * (HTTP_CLIENTS + GRPC_CLIENTS)

        def client(module, url: str, slot: int) -> None:
            c = module.InferenceServerClient(url=url)
            try:
                for turn in range(ROUNDS * 3 * PER_MODEL):
                    model = f"m{turn // PER_MODEL % 3}"  # all clients in the same order; they drift apart
                    try:
                        got = _infer(module, c, model, X).as_numpy("y")
                        np.testing.assert_allclose(got, expected[model], rtol=1e-4, atol=1e-3)
                        answered[slot] += 1
                    except Exception as exc:  # noqa: BLE001 - every failure is reported
                        failures.append(f"{module.__name__} {model}: {type(exc).__name__}: {exc}")
            finally:
                c.close()

        threads = [threading.Thread(target=client, args=(httpclient, server.http_url, i)) for i in range(HTTP_CLIENTS)]
        threads += [threading.Thread(target=client, args=(grpcclient, server.grpc_url, HTTP_CLIENTS + i))
                    for i in range(GRPC_CLIENTS)]
        _reset_peak(pid)
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(240)
        peak = _status(pid, "VmHWM") - base
        assert not any(t.is_alive() for t in threads), "clients did not finish"
        assert not failures, failures
        total = ROUNDS * 3 * PER_MODEL * (HTTP_CLIENTS + GRPC_CLIENTS)
        assert sum(answered) == total

        stats = {s["name"]: s for s in http.get_inference_statistics()["model_stats"]}
        assert sum(stats[m]["inference_stats"]["success"]["count"] for m in weights) == total + 1
        counts = {m: (s["load_count"], s["eviction_count"], s.get("memory_usage")) for m, s in stats.items()}
        # each client walks m0..m2 ROUNDS times and one model fits at a time: every change of model
        # loads one and evicts another, whatever the clients' interleaving
        assert all(stats[m]["load_count"] >= ROUNDS for m in weights), counts
        evictions = sum(stats[m]["eviction_count"] for m in weights)
        assert evictions >= 3 * ROUNDS - 1, counts
        loaded = [m for m in weights if stats[m].get("memory_usage")]
        assert len(loaded) == 1, counts  # one fits the budget at a time
        measured = stats[loaded[0]]["memory_usage"][0]["byte_size"]
        assert 2 * measured > budget, counts  # the premise: two do not fit, so the sum of three exceeds it

        with urllib.request.urlopen(f"http://{server.http_url}/metrics", timeout=30) as response:
            text = response.read().decode()
        series = re.findall(r'edgecore_server_model_evictions_total\{model="(m\d)",version="1"\} (\d+)', text)
        assert sum(int(v) for _, v in series) == evictions, text[-2000:]

        # with the load over (one model loaded), RSS is within the budget; at its peak, within the
        # budget plus one load's transient
        time.sleep(0.2)
        steady = _status(pid, "VmRSS") - base
        figures = (f"base {base / 2**20:.0f} MiB; over it: one load alone peaked {single_peak / 2**20:.0f} MiB "
                   f"(model {footprint / 2**20:.0f} MiB, transient {transient / 2**20:.0f} MiB), the load peaked "
                   f"{peak / 2**20:.0f} MiB, after it {steady / 2**20:.0f} MiB; budget {BUDGET_MIB} MiB, "
                   f"slack {SLACK >> 20} MiB; {evictions} evictions")
        print(figures)  # shown with -s, and on failure
        assert steady <= budget + SLACK, figures
        assert peak <= budget + transient + SLACK, figures

        # a model larger than the whole budget is refused; the others keep serving
        os.link(huge, folder / "huge.onnx")  # found by the next scan of the repository
        good = _infer(httpclient, http, "m1", X).as_numpy("y")
        np.testing.assert_allclose(good, expected["m1"], rtol=1e-4, atol=1e-3)
        with pytest.raises(InferenceServerException) as info:
            grpc.load_model("huge")
        assert info.value.status() == "StatusCode.UNAVAILABLE" and "memory budget" in info.value.message()
        body = json.dumps({"inputs": [{"name": "x", "shape": [1, 3584], "datatype": "FP32",
                                       "data": [0.0] * 3584}]}).encode()
        request = urllib.request.Request(f"http://{server.http_url}/v2/models/huge/infer", data=body)
        with pytest.raises(urllib.error.HTTPError) as raw:
            urllib.request.urlopen(request, timeout=60)
        assert raw.value.code == 503 and raw.value.headers["Retry-After"]
        message = json.loads(raw.value.read())["error"]
        assert "more than the whole memory budget" in message and f"{BUDGET_MIB:.1f} MiB" in message
        np.testing.assert_allclose(_infer(grpcclient, grpc, "m1", X).as_numpy("y"), expected["m1"],
                                   rtol=1e-4, atol=1e-3)
        index = {m["name"]: m for m in http.get_model_repository_index()}
        assert index["huge"]["state"] == "UNAVAILABLE" and "memory budget" in index["huge"]["reason"]
        assert index["m1"]["state"] == "READY"

        # every model unloaded: their memory went back to the system
        http.unload_model("m1")
        time.sleep(0.2)
        assert _status(pid, "VmRSS") - base <= SLACK, figures
    finally:
        http.close()
        grpc.close()
    assert server.stop() == 0
