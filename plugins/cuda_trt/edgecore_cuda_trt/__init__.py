"""edgecore backend on NVIDIA TensorRT 10.x/11.x with cuda-python (see :mod:`edgecore_cuda_trt.backend`)."""

__version__ = "0.1.0"
