#!/usr/bin/env bash
# Every benchmark the README quotes, one after the other, on a machine left alone (MEASURING.md):
# nothing else running, no test suite, no helper. Each script waits for a quiet machine and records
# its load in its JSON; this one only orders them and logs start times. About 70 minutes on the
# project's 2-core VM. `tools/readme_benchmarks.sh tune` (or any step names) runs those steps only.
#   steps: startup overhead profiler serving ray memory optimization tune
set -euo pipefail
cd "$(dirname "$0")/.."
py=${PYTHON:-.venv/bin/python}
tuned=${TUNED_DIR:-/tmp/edgecore-tuned}   # chosen model files stay out of the repository (size)
steps=${*:-startup overhead profiler serving ray memory optimization tune}

step() { echo "== $(date -u +%H:%M:%S) $*" >&2; }

tune() {  # tune NAME ARGS...: the search, then its reports (not the model) into benchmarks/results/tune/
    local name=$1; shift
    step "tune $name"
    rm -rf "$tuned/$name"
    "$py" -m edgecore tune "$@" -o "$tuned/$name" || echo "tune $name exited with $?" >&2
    mkdir -p "benchmarks/results/tune/$name"
    for f in report.md report.json compare.json edgecore.toml bench; do   # bench/: both reports, with their load
        [ -e "$tuned/$name/$f" ] && cp -r "$tuned/$name/$f" "benchmarks/results/tune/$name/"
    done
}

for s in $steps; do
    case $s in
    startup) step startup; "$py" benchmarks/startup.py ;;
    overhead) step engine_overhead; "$py" benchmarks/engine_overhead.py ;;
    profiler) step profiler_overhead; "$py" benchmarks/profiler_overhead.py 1000 ;;
    serving) step serving_load; "$py" benchmarks/serving_load.py ;;
    ray) step ray_scaling; "$py" benchmarks/ray_scaling.py ;;
    memory) step memory_phases; "$py" benchmarks/memory_phases.py --baseline-tree "${BEFORE_TREE:-/tmp/edgecore-before}" ;;
    optimization) step optimization_system; "$py" benchmarks/optimization_system.py --models resnet50,digits_cnn --int8-sweep '' ;;
    tune)
        "$py" -c "import numpy as np; from edgecore.zoo._digits import digits_test_split as s; x, y = s(); np.savez('$tuned-digits.npz', input=x, labels=y)"
        tune digits_cnn zoo:digits_cnn --calib "$tuned-digits.npz" --time-limit 2m
        tune mobilenet_v2 zoo:mobilenet_v2 --time-limit 4m
        tune resnet50 zoo:resnet50 --time-limit 5m
        tune bert_base zoo:bert_base --time-limit 5m
        tune resnet50_tight zoo:resnet50 --budget 1e-6 --memory-budget 50MB --time-limit 2m ;;
    *) echo "unknown step $s" >&2; exit 2 ;;
    esac
done
step done
