#!/usr/bin/env bash
# Run one test file N times in a row (default 200), stopping at the first failure; prints how many
# runs passed. For flakiness checks of the concurrency tests, e.g.
#   tools/loop_tests.sh tests/test_scheduler_faults.py 200
set -u
file=${1:?usage: tools/loop_tests.sh TEST_FILE [RUNS]}
runs=${2:-200}
cd "$(dirname "$0")/.." || exit 2
python=${PYTHON:-.venv/bin/python}
passed=0
for _ in $(seq "$runs"); do
    if ! "$python" -m pytest -q -x -p no:cacheprovider "$file" >/tmp/loop_tests.$$.log 2>&1; then
        cat /tmp/loop_tests.$$.log
        echo "FAILED after $passed passing runs of $file"
        rm -f /tmp/loop_tests.$$.log
        exit 1
    fi
    passed=$((passed + 1))
done
rm -f /tmp/loop_tests.$$.log
echo "$passed/$runs runs of $file passed"
