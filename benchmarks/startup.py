"""Start-up: how long a fresh process takes to import edgecore and to answer the CLI's light commands.

Each command runs ``--rounds`` times in a fresh interpreter, the commands interleaved round by round
(so that a burst of load hits all of them alike); figures are the median and quartiles of the wall
time from process start to exit. Floors in the same run: ``python -c pass`` (the interpreter) and
``import numpy``. Also recorded: the ten slowest imports of ``import edgecore`` by cumulative time
(``python -X importtime``), and which heavy modules each command imported.

    python benchmarks/startup.py [--rounds 15]

Writes benchmarks/results/startup.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from _common import machine

RESULTS = Path(__file__).resolve().parent / "results"
HEAVY = ("onnx", "onnx_ir", "onnxruntime", "openvino", "torch", "sympy", "ml_dtypes")
EDGECORE = [sys.executable, "-m", "edgecore"]
PROBE = "import sys, runpy\nsys.argv = {argv!r}\n{body}\nprint('HEAVY', sorted(m for m in {heavy!r} if m in sys.modules), file=sys.stderr)"

COMMANDS = {
    "python -c pass (floor)": [sys.executable, "-c", "pass"],
    "import numpy (floor)": [sys.executable, "-c", "import numpy"],
    "import edgecore": [sys.executable, "-c", "import edgecore"],
    "edgecore --help": [*EDGECORE, "--help"],
    "edgecore zoo list": [*EDGECORE, "zoo", "list"],
    "edgecore backends": [*EDGECORE, "backends"],
}


def _heavy_modules(command: list[str]) -> list[str]:
    """The heavy modules ``command`` imports (run once more with a probe at exit)."""
    code = command[2] if command[1] == "-c" else None
    if code is not None:
        body, argv = code, ["-c"]
    else:
        body, argv = "runpy.run_module('edgecore', run_name='__main__')", ["edgecore", *command[3:]]
    probe = PROBE.format(argv=argv, body=f"try:\n    {body}\nexcept SystemExit:\n    pass", heavy=HEAVY)
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=False)
    line = [ln for ln in done.stderr.splitlines() if ln.startswith("HEAVY ")]
    if not line:
        raise RuntimeError(f"the import probe of {command} failed: {done.stderr[-500:]}")
    return json.loads(line[-1][6:].replace("'", '"'))


def _slowest_imports(count: int = 10, depth: int = 2) -> list[dict]:
    """The ``count`` slowest imports of ``import edgecore`` by cumulative time, nested at most ``depth``
    levels below it (``-X importtime`` lines: ``import time: self | cumulative | name``)."""
    done = subprocess.run([sys.executable, "-X", "importtime", "-c", "import edgecore"],
                          capture_output=True, text=True, check=True)
    rows = []
    for line in done.stderr.splitlines():
        if not line.startswith("import time:") or "cumulative" in line:
            continue
        own, cumulative, name = line[len("import time:"):].split("|")
        level = (len(name) - len(name.lstrip()) - 1) // 2
        if level <= depth:
            rows.append({"module": name.strip(), "level": level,
                         "cumulative_ms": int(cumulative) / 1e3, "self_ms": int(own) / 1e3})
    return sorted(rows, key=lambda r: -r["cumulative_ms"])[:count]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--out", type=Path, default=RESULTS / "startup.json")
    args = parser.parse_args(argv)
    info = machine()  # waits for a quiet machine and records its load
    env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1")
    for command in COMMANDS.values():  # compiled bytecode and the OS page cache warm for every command
        subprocess.run(command, capture_output=True, check=False, env=env)
    times: dict[str, list[float]] = {name: [] for name in COMMANDS}
    for round_ in range(args.rounds):
        names = list(COMMANDS) if round_ % 2 == 0 else list(reversed(COMMANDS))
        for name in names:
            started = time.perf_counter()
            subprocess.run(COMMANDS[name], capture_output=True, check=True, env=env)
            times[name].append(time.perf_counter() - started)
    results = {}
    for name, values in times.items():
        q1, median, q3 = statistics.quantiles(values, n=4)
        results[name] = {"median_s": round(median, 4), "q1_s": round(q1, 4), "q3_s": round(q3, 4),
                         "runs": len(values), "heavy_modules": _heavy_modules(COMMANDS[name])}
        print(f"{name:28s} {median:7.3f} s  (IQR {q1:.3f}-{q3:.3f})  imports {results[name]['heavy_modules']}")
    report = {
        "benchmark": "startup",
        "method": __doc__,
        "results": results,
        "import_edgecore_slowest": _slowest_imports(),
        "machine": info,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1, default=str) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
