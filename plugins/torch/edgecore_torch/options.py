"""The torch backend's settings: :class:`TorchOptions`, read from ``CompileOptions`` (the engine's
``device`` and ``precision``, and ``custom_options``), and the device a request resolves to.

Device names: the engine's ``auto`` / ``cpu`` / ``gpu``, or torch's own (``cuda``, ``cuda:1``,
``mps``) given directly or as ``custom_options={"torch_device": "cuda:1"}``. ``auto`` takes the
first CUDA (or ROCm, which torch also calls ``cuda``) device, else MPS, else the CPU.
"""

from __future__ import annotations

from typing import Any, Mapping

import attrs

from edgecore.backend import CompileOptions, check_options
from edgecore.errors import BackendUnavailableError, ConfigurationError

__all__ = ["TorchOptions", "DeviceFacts", "resolve_device", "parse_precision", "KNOWN_OPTIONS"]

PRECISIONS = {
    None: "fp32",
    "fp32": "fp32",
    "float32": "fp32",
    "fp16": "fp16",
    "float16": "fp16",
    "half": "fp16",
    "bf16": "bf16",
    "bfloat16": "bf16",
}

#: custom_options keys and what each takes.
KNOWN_OPTIONS = {
    "precision": "fp32 | fp16 | bf16 (float32 tensors run in this type; inputs and outputs stay float32)",
    "torch_device": "a torch device: cpu, cuda, cuda:N, mps",
    "cuda_graphs": "bool: capture one CUDA graph per input signature (default: on for CUDA)",
    "channels_last": "bool: NHWC layout for 2-D convolutions (default: on for CUDA)",
    "output_device": "host (numpy outputs) | device (torch tensors on the model's device, DLPack)",
    "pinned_staging": "bool: copy host inputs and outputs through pinned memory (default: on for CUDA)",
    "max_signatures": "int >= 1: input signatures whose plans (and CUDA graphs) are kept, LRU (default 16)",
    "warmup_runs": "int >= 0: eager replays of a signature before its CUDA graph is captured, after the recording run (default 1)",
    "fold_batchnorm": "bool: fold BatchNormalization into the preceding Conv (default on)",
    "fuse": "bool: fuse MatMul+bias, erf-GELU and attention patterns into single torch calls (default on)",
    "cudnn_benchmark": "bool: set torch.backends.cudnn.benchmark (process-wide; default: leave it)",
}


@attrs.frozen(kw_only=True)
class DeviceFacts:
    """What torch reports about accelerators here (passed in, so that resolution is testable)."""

    cuda_count: int = 0
    mps: bool = False
    torch_version: str = ""
    hip: bool = False


def parse_precision(value: Any, source: str) -> str:
    key = value.lower() if isinstance(value, str) else value
    if key not in PRECISIONS:
        raise ConfigurationError(
            f"torch backend: {source} must be one of fp32, fp16, bf16 (or float32/float16/bfloat16), got {value!r}"
        )
    return PRECISIONS[key]


def resolve_device(requested: str, override: str | None, facts: DeviceFacts) -> str:
    """The torch device string for the engine's ``requested`` device and an optional torch name."""
    if override is not None:
        if not isinstance(override, str):
            raise ConfigurationError(f"torch backend: torch_device must be a string such as 'cuda:1', got {override!r}")
        kind = override.split(":", 1)[0]
        expected = {"cpu": ("cpu",), "gpu": ("cuda", "mps")}.get(requested)
        if expected is not None and kind not in expected:
            raise ConfigurationError(
                f"torch backend: torch_device {override!r} contradicts device {requested!r} (use one of {expected})"
            )
        requested = override
    if requested == "npu":
        raise ConfigurationError("torch backend serves devices cpu and gpu (cuda, mps), not 'npu'")
    if requested in ("auto", "gpu"):
        if facts.cuda_count:
            return "cuda:0"
        if facts.mps:
            return "mps"
        if requested == "gpu":
            raise BackendUnavailableError(
                f"torch {facts.torch_version or '(unknown version)'} sees no GPU here (torch.cuda.is_available() "
                "is False and there is no MPS); install a CUDA or ROCm build of torch on a machine with a GPU"
            )
        return "cpu"
    if requested == "cpu":
        return "cpu"
    kind, _, index = requested.partition(":")
    if kind == "cuda":
        number = int(index) if index.isdigit() else 0 if not index else -1
        if number < 0:
            raise ConfigurationError(f"torch backend: bad device {requested!r}; expected cuda or cuda:N")
        if number >= facts.cuda_count:
            raise BackendUnavailableError(
                f"torch backend: device {requested!r} is not here; torch sees {facts.cuda_count} CUDA device(s)"
            )
        return f"cuda:{number}"
    if kind == "mps":
        if not facts.mps:
            raise BackendUnavailableError("torch backend: device 'mps' is not available here")
        return "mps"
    raise ConfigurationError(
        f"torch backend: unknown device {requested!r}; expected auto, cpu, gpu, cuda, cuda:N or mps"
    )


def _bool(options: Mapping[str, Any], key: str, default: bool) -> bool:
    value = options.get(key, default)
    if not isinstance(value, bool):
        raise ConfigurationError(f"torch backend option {key!r} must be true or false, got {value!r}")
    return value


def _int(options: Mapping[str, Any], key: str, default: int, minimum: int) -> int:
    value = options.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigurationError(f"torch backend option {key!r} must be an integer >= {minimum}, got {value!r}")
    return value


@attrs.frozen(kw_only=True)
class TorchOptions:
    """Resolved settings of one compile."""

    device: str = "cpu"
    precision: str = "fp32"
    cuda_graphs: bool = False
    channels_last: bool = False
    output_device: str = "host"
    pinned_staging: bool = False
    max_signatures: int = 16
    warmup_runs: int = 1
    fold_batchnorm: bool = True
    fuse: bool = True
    cudnn_benchmark: bool | None = None
    num_threads: int = 0

    @property
    def is_cuda(self) -> bool:
        return self.device.startswith("cuda")

    @classmethod
    def from_compile_options(cls, options: CompileOptions, facts: DeviceFacts) -> TorchOptions:
        custom = dict(options.options)
        check_options("torch backend", custom, KNOWN_OPTIONS)
        device = resolve_device(options.device, custom.get("torch_device"), facts)
        precision = parse_precision(options.precision, "precision")
        if "precision" in custom:
            other = parse_precision(custom["precision"], "custom option 'precision'")
            if options.precision is not None and other != precision:
                raise ConfigurationError(
                    f"torch backend: precision {options.precision!r} and custom option precision "
                    f"{custom['precision']!r} disagree; give one"
                )
            precision = other
        cuda = device.startswith("cuda")
        output_device = custom.get("output_device", "host")
        if output_device not in ("host", "device"):
            raise ConfigurationError(f"torch backend option 'output_device' must be 'host' or 'device', got {output_device!r}")
        graphs = _bool(custom, "cuda_graphs", cuda)
        if graphs and not cuda:
            raise ConfigurationError(f"torch backend: cuda_graphs needs a CUDA device, not {device!r}")
        benchmark = custom.get("cudnn_benchmark")
        if benchmark is not None and not isinstance(benchmark, bool):
            raise ConfigurationError(f"torch backend option 'cudnn_benchmark' must be true or false, got {benchmark!r}")
        return cls(
            device=device,
            precision=precision,
            cuda_graphs=graphs,
            channels_last=_bool(custom, "channels_last", cuda),
            output_device=output_device,
            pinned_staging=_bool(custom, "pinned_staging", cuda) and cuda,
            max_signatures=_int(custom, "max_signatures", 16, 1),
            warmup_runs=_int(custom, "warmup_runs", 1, 0),
            fold_batchnorm=_bool(custom, "fold_batchnorm", True),
            fuse=_bool(custom, "fuse", True),
            cudnn_benchmark=benchmark,
            num_threads=options.num_threads,
        )
