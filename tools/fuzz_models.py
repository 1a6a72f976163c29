"""The long fuzzing run: many hostile models, each loaded and run in a watched child process.

    python tools/fuzz_models.py                       # 600 cases -> benchmarks/results/fuzz.json
    python tools/fuzz_models.py --cases 3000 --seed 7 --workers 2 --timeout 60

Each case is a seed model (zoo tiny models, edgecore.testing graphs) broken by one mutation
(edgecore.testing.fuzz_cases.MUTATIONS), drawn with ``--seed``. The JSON holds counts per outcome
(ok, not_run, edgecore_error: within the contract; other_exception, crash, hang, memory: not),
per mutation, the largest resident-set growth against its file size, every case outside the
contract with how to rebuild it, and the machine it ran on. Exit status 1 if any case is outside.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

from edgecore.bench.machine import machine_info
from edgecore.testing.fuzz import memory_allowance, run_cases, summarize
from edgecore.testing.fuzz_cases import MUTATIONS, SEEDS, make_case


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", type=int, default=600)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds before a case counts as a hang")
    parser.add_argument("--memory-limit", type=int, default=1 << 30, help="address space a case may add (bytes)")
    parser.add_argument("--backend", default="cpu_simd")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/fuzz.json"))
    args = parser.parse_args(argv)

    rng = random.Random(args.seed)
    seeds, mutations = sorted(SEEDS), sorted(MUTATIONS)
    plan = [(rng.choice(seeds), rng.choice(mutations), n) for n in range(args.cases)]
    cases = [make_case(seed_model, mutation, n) for seed_model, mutation, n in plan]
    started = time.monotonic()
    results = run_cases(cases, backend=args.backend, workers=args.workers, timeout=args.timeout,
                        memory_limit=args.memory_limit)
    summary = summarize(results)
    for failure in summary["failures"]:
        case = next(c for c in cases if c.name == failure["name"])
        failure["rebuild"] = f"edgecore.testing.fuzz_cases.make_case({case.seed_model!r}, {case.mutation!r}, {case.seed})"
    document = {
        "tool": "tools/fuzz_models.py",
        "arguments": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "seconds": round(time.monotonic() - started, 1),
        "memory_allowance": "max(256 MiB, 100 x file size) of resident-set growth per case",
        "memory_allowance_example_bytes_for_1MB": memory_allowance(1 << 20),
        **summary,
        "machine": machine_info(),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(document, indent=1) + "\n")
    print(json.dumps({k: document[k] for k in ("cases", "counts", "within_contract", "seconds")}))
    return 0 if summary["within_contract"] == summary["cases"] else 1


if __name__ == "__main__":
    sys.exit(main())
