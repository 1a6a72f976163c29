"""SIGTERM under load: the server stops accepting, answers every request it accepted, and exits 0.

HTTP clients (persistent connections) and gRPC clients send requests in bounded loops; a long
batching delay keeps requests queued when the signal arrives. Every response a client receives is
a success with the right outputs; a client learns of the shutdown only as a refused or closed
connection, or from gRPC as UNAVAILABLE or CANCELLED for an RPC that reached a closing server
(the server's counts show it never accepted those), never as a failed request; and the server's own count of
accepted inference requests equals its count of answered ones, and the clients' successes.
"""

from __future__ import annotations

import http.client
import json
import re
import signal
import threading
import time

import numpy as np
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

A = np.arange(4, dtype=np.float32).reshape(1, 4)
BODY = json.dumps({"inputs": [
    {"name": "a", "shape": [1, 4], "datatype": "FP32", "data": A.ravel().tolist()},
    {"name": "b", "shape": [1, 4], "datatype": "FP32", "data": [1, 1, 1, 1]},
]}).encode()
MAX_REQUESTS = 3000  # per client: the loops are bounded even if the server never stopped
DEADLINE_S = 60.0


def test_sigterm_under_load_answers_every_accepted_request(models, start_server):
    server = start_server([str(models["addsub"]), "--max-queue-delay-us", "20000", "--max-batch-size", "64"])
    ok = [0] * 12
    bad: list[str] = []
    started = threading.Barrier(13)
    deadline = time.monotonic() + DEADLINE_S

    def http_client(slot: int) -> None:
        connection = http.client.HTTPConnection("127.0.0.1", server.http_port, timeout=30)
        started.wait()
        try:
            for _ in range(MAX_REQUESTS):
                if time.monotonic() > deadline:
                    break
                connection.request("POST", "/v2/models/addsub/infer", body=BODY)
                response = connection.getresponse()
                body = response.read()
                if response.status != 200:
                    bad.append(f"HTTP {response.status}: {body[:200]!r}")
                    break
                if json.loads(body)["outputs"][0]["data"] != (A + 1).ravel().tolist():
                    bad.append(f"wrong outputs: {body[:200]!r}")
                    break
                ok[slot] += 1
        except (ConnectionError, http.client.HTTPException, OSError):
            pass  # the connection was closed or refused: that request was not accepted
        finally:
            connection.close()

    def grpc_client(slot: int) -> None:
        client = grpcclient.InferenceServerClient(url=server.grpc_url)
        inputs = []
        for name, value in (("a", A), ("b", np.ones((1, 4), np.float32))):
            tensor = grpcclient.InferInput(name, [1, 4], "FP32")
            tensor.set_data_from_numpy(value)
            inputs.append(tensor)
        started.wait()
        try:
            for _ in range(MAX_REQUESTS):
                if time.monotonic() > deadline:
                    break
                try:
                    result = client.infer("addsub", inputs, client_timeout=30)
                except InferenceServerException as exc:
                    if exc.status() not in ("StatusCode.UNAVAILABLE", "StatusCode.CANCELLED"):
                        bad.append(f"gRPC {exc.status()}: {exc.message()}")
                    break
                if not np.array_equal(result.as_numpy("sum"), A + 1):
                    bad.append("wrong gRPC outputs")
                    break
                ok[slot] += 1
        finally:
            client.close()

    threads = [threading.Thread(target=http_client, args=(i,)) for i in range(8)]
    threads += [threading.Thread(target=grpc_client, args=(i,)) for i in range(8, 12)]
    for thread in threads:
        thread.start()
    started.wait()
    while sum(ok) < 100 and time.monotonic() < deadline:
        time.sleep(0.02)
    server.process.send_signal(signal.SIGTERM)
    for thread in threads:
        thread.join(DEADLINE_S + 30)
    rc = server.stop()
    log = server.log()
    assert rc == 0, log
    assert not bad, (bad, log)
    match = re.search(r"inference requests accepted (\d+), answered (\d+)", log)
    assert match, log
    accepted, answered = int(match[1]), int(match[2])
    assert accepted == answered == sum(ok), (accepted, answered, ok, log)
    assert sum(ok) >= 100
