"""edgecore-serve: serve edgecore engines over KServe v2 / Open Inference Protocol (HTTP and gRPC),
so that tritonclient, KServe's SDK, perf_analyzer and curl work unchanged.

``edgecore serve MODEL`` starts a server; :mod:`edgecore_serve.protocol` is the framework-free
protocol layer other front ends reuse.
"""

__version__ = "0.1.0"
