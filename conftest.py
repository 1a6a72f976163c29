"""Every test session writes edgecore's caches (artifact cache, converted models, digests) into a
temporary folder of its own, never into ``~/.cache/edgecore``: ``EDGECORE_CACHE_DIR`` is set here,
before any test runs, and inherited by the subprocesses tests start."""

from __future__ import annotations

import os
import shutil
import tempfile

_folder = tempfile.mkdtemp(prefix="edgecore-test-cache-")


def pytest_configure(config):
    os.environ["EDGECORE_CACHE_DIR"] = _folder


def pytest_unconfigure(config):
    shutil.rmtree(_folder, ignore_errors=True)
