"""Fixtures of the openvino plugin's tests: a private blob cache, zoo graphs and feeds."""

from __future__ import annotations

import os

import numpy as np
import pytest

pytest.importorskip("openvino", reason="openvino is not installed")

from edgecore.selection import load_graph
from edgecore.graph import Graph  # noqa: E402


@pytest.fixture(autouse=True, scope="session")
def _private_cache(tmp_path_factory: pytest.TempPathFactory):
    """Compiled blobs go to a temporary folder, not the user's cache."""
    old = os.environ.get("EDGECORE_OPENVINO_CACHE_DIR")
    os.environ["EDGECORE_OPENVINO_CACHE_DIR"] = str(tmp_path_factory.mktemp("ov-cache"))
    yield
    if old is None:
        os.environ.pop("EDGECORE_OPENVINO_CACHE_DIR", None)
    else:
        os.environ["EDGECORE_OPENVINO_CACHE_DIR"] = old


@pytest.fixture(scope="session")
def zoo_graph():
    cache: dict[str, Graph] = {}

    def load(name: str) -> Graph:
        if name not in cache:
            cache[name] = load_graph(f"zoo:{name}")
        return cache[name]

    return load


def _bert_feeds(batch: int, sequence: int, seed: int = 0) -> dict[str, np.ndarray]:
    """BERT-tiny inputs with ragged attention masks (some rows shorter than ``sequence``)."""
    rng = np.random.default_rng(seed)
    ids = rng.integers(1, 1000, (batch, sequence)).astype(np.int64)
    mask = np.ones((batch, sequence), np.int64)
    for row in range(1, batch, 2):
        mask[row, max(1, sequence // 2) :] = 0
    types = np.zeros((batch, sequence), np.int64)
    types[:, sequence // 2 :] = 1
    return {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}


def _image_feeds(graph: Graph, batch: int, seed: int = 0) -> dict[str, np.ndarray]:
    spec = graph.inputs[0]
    shape = [batch] + [int(d) for d in spec.shape[1:]]
    return {spec.name: np.random.default_rng(seed).standard_normal(shape).astype(np.float32)}


@pytest.fixture(scope="session")
def bert_feeds():
    """``bert_feeds(batch, sequence, seed=0)``: BERT-tiny feeds."""
    return _bert_feeds


@pytest.fixture(scope="session")
def image_feeds():
    """``image_feeds(graph, batch, seed=0)``: standard-normal images for the graph's first input."""
    return _image_feeds
