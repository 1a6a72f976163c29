"""edgecore backend on onnx.reference (exact, pure Python)."""
