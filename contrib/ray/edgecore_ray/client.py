"""A client that retries idempotent inference where Ray Serve does not.

Ray Serve does not retry a request that was running on a replica that died. Inference is
idempotent (same feeds, same outputs, no state), so :class:`Client` sends it again, with exponential
backoff, when -- and only when -- the failure says the *server side* failed:

=========================================================  =========  ===============================
failure                                                    retried    example
=========================================================  =========  ===============================
replica died / unreachable (``RayActorError``)              yes        ``ray.kill`` on the replica
Ray Serve could not take it (``BackPressureError``,         yes        queues full, app redeploying
``DeploymentUnavailableError``, ``ReplicaUnavailableError``)
no answer within ``timeout_s`` (504)                         yes        wedged replica
5xx: 500, 502, 503, 504 (edgecore: ``BackendExecutionError``,  yes        runtime failed, queue full,
``QueueFullError``, ``EngineClosedError``, ``RequestTimeoutError``)       replica shutting down
connection refused / reset, proxy gone                      yes        HTTP proxy restarting
4xx: bad input, unknown model or input, body too large      **never**  wrong shape or datatype
501 (a protocol part the server does not implement)         never      shared-memory extension
=========================================================  =========  ===============================

After ``retries`` retries the last failure is raised: over a handle, the replica's own exception
(an :mod:`edgecore.errors` type where it was one); over HTTP, an :mod:`edgecore.errors` type
carrying the server's message (4xx: :class:`InvalidInputError`, or :class:`ConfigurationError` for
404; 504: :class:`RequestTimeoutError`; other 5xx and connection errors:
:class:`BackendExecutionError` / :class:`BackendUnavailableError`).

Concurrency: a Client holds no mutable state after construction; share it between threads.
"""

from __future__ import annotations

import http.client
import json
import logging
import random
import time
import urllib.error
import urllib.parse
import urllib.request
from typing import Any, Mapping

import numpy as np

from edgecore.errors import (
    BackendExecutionError,
    BackendUnavailableError,
    ConfigurationError,
    InvalidInputError,
    RequestTimeoutError,
)

__all__ = ["Client", "retryable"]

logger = logging.getLogger(__name__)

_RETRY_STATUS = frozenset({500, 502, 503, 504})


def _ray_retryable(exc: BaseException) -> bool | None:
    """True/False for Ray's own failures, None for anything else."""
    try:
        from ray import exceptions as rx
        from ray.serve import exceptions as sx
    except ImportError:  # pragma: no cover - Ray is a dependency
        return None
    if isinstance(exc, sx.RequestCancelledError):
        return False  # the caller cancelled it
    if isinstance(exc, (rx.RayActorError, rx.GetTimeoutError, sx.BackPressureError,
                        sx.DeploymentUnavailableError, sx.ReplicaUnavailableError)):
        return True
    return None


def retryable(exc: BaseException) -> bool:
    """Whether a failure of an inference sent through a ``DeploymentHandle`` is the server side's
    (retried) rather than the request's (never retried). See the module's table."""
    from edgecore_serve.protocol.errors import status_of

    verdict = _ray_retryable(exc)
    if verdict is not None:
        return verdict
    cause = getattr(exc, "cause", None) or exc  # RayTaskError carries the replica's exception
    if isinstance(cause, TimeoutError):
        return True
    return status_of(cause)[0] in _RETRY_STATUS


class _HTTPFailure(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class Client:
    """Inference with retries, through a ``DeploymentHandle`` or a KServe v2 HTTP URL.

    >>> client = Client(handle, retries=3)                      # or Client("http://127.0.0.1:8000", model="digits_cnn")
    >>> outputs = client.infer({"input": x})                   # dict of numpy arrays

    ``retries``: extra attempts after the first; backoff before retry *n* is
    ``backoff_s * 2**(n-1)`` (capped at ``max_backoff_s``) with +-25 % jitter. ``timeout_s`` bounds
    each attempt. ``attempts`` counts every attempt made (for tests and metrics).
    """

    def __init__(
        self,
        target: Any,
        *,
        model: str | None = None,
        retries: int = 3,
        backoff_s: float = 0.1,
        max_backoff_s: float = 2.0,
        timeout_s: float = 30.0,
    ) -> None:
        if retries < 0 or backoff_s < 0 or max_backoff_s < 0 or timeout_s <= 0:
            raise ConfigurationError(
                f"expected retries >= 0, backoff_s >= 0, max_backoff_s >= 0, timeout_s > 0; got retries={retries}, "
                f"backoff_s={backoff_s}, max_backoff_s={max_backoff_s}, timeout_s={timeout_s}"
            )
        self.retries, self.backoff_s, self.max_backoff_s, self.timeout_s = retries, backoff_s, max_backoff_s, timeout_s
        if isinstance(target, str):
            if not model:
                raise ConfigurationError("an HTTP Client needs model=NAME (the model's name in /v2/models/NAME)")
            parsed = urllib.parse.urlsplit(target if "://" in target else f"http://{target}")
            if parsed.scheme not in ("http", "https") or not parsed.netloc:
                raise ConfigurationError(f"expected an http(s)://host:port URL, got {target!r}")
            self._url = f"{parsed.scheme}://{parsed.netloc}{parsed.path.rstrip('/')}/v2/models/{model}/infer"
            self._handle = None
        else:
            if not hasattr(target, "infer"):
                raise ConfigurationError(
                    f"expected a DeploymentHandle of edgecore_ray.deployment or an HTTP URL, got {type(target).__name__}"
                )
            self._handle, self._url = target, None
        self.model = model
        self.attempts = 0

    def infer(self, feeds: Mapping[str, Any]) -> dict[str, np.ndarray]:
        """Outputs by name; retried as the module's table says."""
        once = self._infer_handle if self._handle is not None else self._infer_http
        for attempt in range(self.retries + 1):
            self.attempts += 1
            try:
                return once(feeds)
            except Exception as exc:
                if attempt == self.retries or not self._retryable(exc):
                    raise self._final(exc) from (None if self._handle is not None else exc)
                delay = min(self.max_backoff_s, self.backoff_s * (2 ** attempt)) * random.uniform(0.75, 1.25)
                logger.info("inference attempt %d failed (%s: %s); retrying in %.2f s",
                            attempt + 1, type(exc).__name__, exc, delay)
                time.sleep(delay)
        raise AssertionError("unreachable")  # pragma: no cover

    # -- one attempt ---------------------------------------------------------------------------------

    def _infer_handle(self, feeds: Mapping[str, Any]) -> dict[str, np.ndarray]:
        response = self._handle.infer.remote(dict(feeds))
        try:
            return response.result(timeout_s=self.timeout_s)
        except TimeoutError:
            response.cancel()  # a wedged replica should not keep it (nor run it after we retried)
            raise

    def _infer_http(self, feeds: Mapping[str, Any]) -> dict[str, np.ndarray]:
        from edgecore_serve.protocol.datatypes import datatype_of
        from edgecore_serve.protocol.tensors import array_from_json, json_data

        inputs = []
        for name, value in feeds.items():
            array = np.asarray(value)
            datatype = datatype_of(array)
            inputs.append({"name": name, "shape": list(array.shape), "datatype": datatype,
                           "data": json_data(array, datatype, name)})
        body = json.dumps({"inputs": inputs}).encode()
        request = urllib.request.Request(self._url, data=body, method="POST",
                                         headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as answer:
                doc = json.loads(answer.read())
        except urllib.error.HTTPError as exc:
            try:
                message = json.loads(exc.read()).get("error", "")
            except (ValueError, AttributeError, OSError):
                message = ""
            raise _HTTPFailure(exc.code, message or str(exc)) from None
        return {
            out["name"]: array_from_json(out["data"], out["datatype"], tuple(out["shape"]), out["name"])
            for out in doc["outputs"]
        }

    # -- classification ----------------------------------------------------------------------------

    def _retryable(self, exc: BaseException) -> bool:
        if self._handle is not None:
            return retryable(exc)
        if isinstance(exc, _HTTPFailure):
            return exc.status in _RETRY_STATUS
        return isinstance(exc, (urllib.error.URLError, http.client.HTTPException, ConnectionError, TimeoutError))

    def _final(self, exc: BaseException) -> BaseException:
        if self._handle is not None:
            cause = getattr(exc, "cause", None)
            return cause if isinstance(cause, Exception) else exc
        if isinstance(exc, _HTTPFailure):
            text = f"{self._url}: HTTP {exc.status}: {exc}"
            if exc.status == 404:
                return ConfigurationError(text)
            if exc.status < 500:
                return InvalidInputError(text)
            if exc.status == 504:
                return RequestTimeoutError(text)
            return BackendExecutionError(f"{text} (after {self.retries} retries)", backend="ray")
        return BackendUnavailableError(f"{self._url}: {type(exc).__name__}: {exc} (after {self.retries} retries)")
