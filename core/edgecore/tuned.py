"""Reading back what ``edgecore tune`` wrote: a folder with the chosen model and ``edgecore.toml``.

Layer 7 (beside the engine, which builds itself from it in :meth:`Engine.from_tuned`); the search
that writes the folder is :mod:`edgecore.tune` (layer 8).
"""

from __future__ import annotations

import tomllib
from pathlib import Path

import attrs

from edgecore.config import EngineConfig
from edgecore.errors import ConfigurationError

__all__ = ["TOML", "MODEL", "load_tuned"]

TOML = "edgecore.toml"
MODEL = "model.onnx"


def load_tuned(path: str | Path) -> tuple[Path, EngineConfig]:
    """``(model path, EngineConfig)`` of a folder ``edgecore tune`` wrote (or its ``edgecore.toml``)."""
    path = Path(path)
    toml = path / TOML if path.is_dir() else path
    try:
        document = tomllib.loads(toml.read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigurationError(f"{path} is not a folder written by edgecore tune (cannot read {toml}: {exc})") \
            from exc
    model = toml.parent / str(document.get("model", MODEL))
    if not model.exists():
        raise ConfigurationError(f"{toml} names the model {model.name}, which is not in {toml.parent}")
    engine = dict(document.get("engine") or {})
    known = {f.name for f in attrs.fields(EngineConfig)}
    unknown = sorted(set(engine) - known)
    if unknown:
        raise ConfigurationError(f"{toml}: [engine] has fields EngineConfig does not know: {unknown}; known: "
                                 f"{sorted(known)}")
    return model, EngineConfig(**engine)
