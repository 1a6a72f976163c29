#!/usr/bin/env bash
# The GPU check for a lent GPU machine (H100/H200 with PyTorch, CuPy, cuda-python, onnx and
# onnxruntime; nothing installable): edgecore runs from this checkout, without pip.
#
#   bash benchmarks/gpu_check.sh                      # pytest's gpu tests, then the benchmark
#   bash benchmarks/gpu_check.sh --device cpu --quick # the CPU-side smoke run (no GPU needed)
#   NO_TESTS=1 bash benchmarks/gpu_check.sh           # the benchmark only
#
# 1. puts core/ and the plugins on PYTHONPATH and writes minimal .dist-info folders beside them, so
#    that importlib.metadata finds edgecore's entry points (group "edgecore") as if pip-installed;
# 2. runs the torch plugin's gpu-marked tests (CUDA conformance, CUDA graphs, fp16, device tensors,
#    batching) and the tensorrt plugin's (skipped there: no TensorRT);
# 3. runs benchmarks/gpu_check.py: zoo models built on the spot (ONNX files are too large to carry),
#    checked against ONNX Runtime on the CPU, timed against hand-written PyTorch eager and with CUDA
#    graphs, plus the scheduler's batching throughput; writes benchmarks/results/gpu_<card>.json and
#    prints the table last.
# Extra arguments go to gpu_check.py. Exit status: non-zero if the tests or the checks failed.
#
# On the device tool (whose $OUT folder comes back): one call, about 3-5 minutes on an H200:
#   bash benchmarks/gpu_check.sh --out "$OUT" 2>&1 | tee "$OUT/gpu_check.log"
# then copy gpu_<card>.json from the returned files into benchmarks/results/.
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
PY=${PYTHON:-python3}
SITE=$(mktemp -d)
trap 'rm -rf "$SITE"' EXIT

dist() {  # dist NAME VERSION [ENTRY_POINT]: a .dist-info that importlib.metadata reads
    local dir="$SITE/${1//-/_}-$2.dist-info"
    mkdir -p "$dir"
    printf 'Metadata-Version: 2.1\nName: %s\nVersion: %s\n' "$1" "$2" >"$dir/METADATA"
    if [ -n "${3:-}" ]; then printf '[edgecore]\n%s\n' "$3" >"$dir/entry_points.txt"; fi
}
dist edgecore 0.1.0
dist edgecore-cpu-simd 0.1.0 "cpu_simd = edgecore_cpu_simd.plugin"
dist edgecore-torch 0.1.0 "torch = edgecore_torch.plugin"
dist edgecore-cuda-trt 0.1.0 "tensorrt = edgecore_cuda_trt.plugin"
export PYTHONPATH="$SITE:$ROOT/core:$ROOT/plugins/cpu_simd:$ROOT/plugins/torch:$ROOT/plugins/cuda_trt${PYTHONPATH:+:$PYTHONPATH}"
export EDGECORE_CACHE_DIR="${EDGECORE_CACHE_DIR:-$SITE/cache}"  # zoo builds and plans: this run only
export PYTHONUNBUFFERED=1

echo "== environment"
"$PY" - <<'EOF'
import importlib.metadata as md, torch
print("python", __import__("platform").python_version(), "| torch", torch.__version__, "| cuda", torch.version.cuda,
      "| gpu", torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none")
for name in ("onnx", "onnx-ir", "onnxruntime", "cupy-cuda13x", "cuda-bindings", "torchvision", "transformers", "pluggy", "attrs"):
    try:
        print(f"  {name} {md.version(name)}")
    except md.PackageNotFoundError:
        print(f"  {name} missing")
import edgecore.plugins as p
print("backends:", {k: v.priority for k, v in p.get_plugin_manager().backends().items()})
EOF

LOG_DIR=${OUT:-$ROOT/benchmarks/results}
mkdir -p "$LOG_DIR"
status=0
if [ -z "${NO_TESTS:-}" ] && [[ " $* " != *" --quick "* ]]; then
    echo "== pytest (gpu tests)"
    "$PY" -m pytest -q -p no:cacheprovider -o addopts="--import-mode=importlib -ra" \
        plugins/torch/tests/test_gpu.py plugins/cuda_trt/tests/test_gpu.py 2>&1 | tee "$LOG_DIR/gpu_pytest.log"
    status=${PIPESTATUS[0]}
fi

echo "== benchmark"
"$PY" benchmarks/gpu_check.py --pytest-log "$LOG_DIR/gpu_pytest.log" "$@"
bench=$?
[ "$status" -eq 0 ] && status=$bench
exit "$status"
