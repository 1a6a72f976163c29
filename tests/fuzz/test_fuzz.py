"""Hostile models end in an edgecore error or a successful run: never a crash, a hang, another
exception, or memory far beyond the file's size (a seeded, bounded set; tools/fuzz_models.py runs
the long one)."""

from __future__ import annotations

import pytest

pytest.importorskip("edgecore_cpu_simd", reason="edgecore-cpu-simd is not installed")

from edgecore.testing.fuzz import memory_allowance, run_cases  # noqa: E402
from edgecore.testing.fuzz_cases import MUTATIONS, SEEDS, make_case  # noqa: E402

_SEEDS = sorted(SEEDS)
_ONCE = {"none", "garbage", "huge_runtime_allocation", "nested_if_100"}  # the seed model barely matters


def _plan() -> list[tuple[str, str, int]]:
    """Each mutation on two seed models (one for those in _ONCE), rotating through the seeds."""
    plan, turn = [], 0
    for mutation in MUTATIONS:
        for seed in range(1 if mutation in _ONCE else 2):
            plan.append((_SEEDS[turn % len(_SEEDS)], mutation, seed))
            turn += 1
    return plan


PLAN = _plan()


@pytest.fixture(scope="module")
def results():
    cases = [make_case(seed_model, mutation, seed) for seed_model, mutation, seed in PLAN]
    return {r.name: r for r in run_cases(cases, workers=2, timeout=60)}


@pytest.mark.parametrize("seed_model, mutation, seed", PLAN, ids=[f"{m}[{s}#{n}]" for s, m, n in PLAN])
def test_case_ends_in_edgecore_error_or_a_run(results, seed_model, mutation, seed):
    result = results[f"{mutation}[{seed_model}#{seed}]"]
    assert result.within_contract, (
        f"{result.name}: {result.outcome} {result.error}\n{result.message}\n"
        f"rebuild with edgecore.testing.fuzz_cases.make_case({seed_model!r}, {mutation!r}, {seed})"
    )
    assert result.peak_rss_growth <= memory_allowance(result.file_bytes)


def test_the_set_exercises_both_ends(results):
    outcomes = {r.outcome for r in results.values()}
    assert {"ok", "edgecore_error"} <= outcomes, outcomes
    assert len(results) == len(PLAN) >= 30
