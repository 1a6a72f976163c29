"""Prometheus exposition of engines, with Triton-like metric names (a layer-8 tool).

Each engine describes itself with one frozen record, :class:`~edgecore.resources.MetricsSample`,
built on demand (at scrape time) by ``engine.metrics_sample()`` -- or by any zero-argument callable.
The collector reads nothing else from the engine. Its fields, and the metric each becomes (labels
``model`` and ``backend`` on every series):

==================================  ===========================================  ==========
MetricsSample field                 Prometheus metric                            type
==================================  ===========================================  ==========
``inference_count``                 ``edgecore_inference_count`` (``_total``)    counter
``inference_exec_count``            ``edgecore_inference_exec_count``            counter
``request_success``                 ``edgecore_inference_request_success``       counter
``request_failure``                 ``edgecore_inference_request_failure``       counter
``request_duration_us``             ``edgecore_request_duration_us``             histogram
``queue_duration_us``               ``edgecore_queue_duration_us``               histogram
``compute_duration_us``             ``edgecore_compute_duration_us``             histogram
``batch_size`` (optional)           ``edgecore_batch_size``                      histogram
``memory_usage_bytes``              ``edgecore_memory_usage_bytes``              gauge
``peak_memory_bytes``               ``edgecore_peak_memory_bytes``               gauge
``cpu_utilization_percent``         ``edgecore_cpu_utilization_percent``         gauge
``queue_depth``                     ``edgecore_queue_depth``                     gauge
``pool_in_use_bytes`` (optional)    ``edgecore_pool_in_use_bytes``               gauge
``pool_reserved_bytes`` (optional)  ``edgecore_pool_reserved_bytes``             gauge
==================================  ===========================================  ==========

As in Triton, ``inference_count`` counts inferences (a batch of 8 counts 8) and
``inference_exec_count`` counts model executions (that batch counts 1). Counters are exposed the
OpenMetrics way: family ``edgecore_inference_count``, sample ``edgecore_inference_count_total``.
Optional fields left as None are not exposed.

Where things live: the value records and the process sampler are :mod:`edgecore.resources`
(layer 4, re-exported here); the collector, the registry of live engines (filled through the
``edgecore_engine_started``/``_closed`` hooks by :mod:`edgecore.metrics.plugin`) and the HTTP server
are :mod:`edgecore.metrics.exposition`. prometheus-client is optional (``edgecore[metrics]``).
"""

from typing import TYPE_CHECKING

from edgecore._lazy import lazy_exports

if TYPE_CHECKING:
    from edgecore.metrics.exposition import (
        EngineCollector,
        default_collector,
        generate_latest,
        make_registry,
        start_http_server,
        track,
        untrack,
    )
    from edgecore.resources import (
        DEFAULT_BATCH_BUCKETS,
        DEFAULT_LATENCY_BUCKETS_US,
        EngineMetrics,
        HistogramSample,
        MetricsSample,
        ProcessSampler,
    )

#: Names this package exports, imported on first use (registering the metrics plugin stays cheap).
_LAZY = {
    **dict.fromkeys(
        ("EngineCollector", "default_collector", "generate_latest", "make_registry", "start_http_server",
         "track", "untrack"),
        "edgecore.metrics.exposition",
    ),
    **dict.fromkeys(
        ("DEFAULT_BATCH_BUCKETS", "DEFAULT_LATENCY_BUCKETS_US", "EngineMetrics", "HistogramSample",
         "MetricsSample", "ProcessSampler"),
        "edgecore.resources",
    ),
}


__getattr__, __dir__ = lazy_exports(__name__, _LAZY, globals())

__all__ = [
    "DEFAULT_BATCH_BUCKETS",
    "DEFAULT_LATENCY_BUCKETS_US",
    "EngineCollector",
    "EngineMetrics",
    "HistogramSample",
    "MetricsSample",
    "ProcessSampler",
    "default_collector",
    "generate_latest",
    "make_registry",
    "start_http_server",
    "track",
    "untrack",
]
