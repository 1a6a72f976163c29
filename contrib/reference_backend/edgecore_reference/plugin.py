"""Entry point module: registers the ``reference`` backend (lowest priority: never picked by "auto"
while a fast backend can run the model). Registering imports neither numpy nor onnx."""

from __future__ import annotations

from edgecore.hookspecs import hookimpl
from edgecore.specs import BackendSpec


def _factory():
    from edgecore_reference.backend import ReferenceBackend

    return ReferenceBackend()


@hookimpl
def edgecore_backends():
    return [BackendSpec(name="reference", factory=_factory, priority=-100, devices=("cpu",),
                        description="onnx.reference: exact, slow, pure Python")]
