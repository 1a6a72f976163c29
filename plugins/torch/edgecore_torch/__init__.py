"""edgecore backend on PyTorch: edgecore's own ONNX -> torch lowering (see :mod:`edgecore_torch.backend`)."""

__version__ = "0.1.0"
