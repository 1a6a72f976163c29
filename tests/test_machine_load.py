"""Load and steal around a benchmark (edgecore.bench.machine): /proc/stat parsing, windows between
readings, the quiet verdict against thresholds, waiting for quiet, the monitor's record, and the
benchmark scripts' shared helper. Readings are made up where a verdict is checked; nothing asserts
how long anything takes."""

from __future__ import annotations

import atexit
import importlib.util
import json
from pathlib import Path

import pytest

from edgecore.bench.machine import (
    CpuTimes,
    LoadMonitor,
    LoadReading,
    LoadThresholds,
    load_window,
    parse_proc_stat,
    read_load,
    wait_for_quiet,
)
from edgecore.bench import machine as machine_module

PROC_STAT = """\
cpu  1000 10 200 5000 40 5 15 30 7 0
cpu0 500 5 100 2500 20 2 7 15 3 0
cpu1 500 5 100 2500 20 3 8 15 4 0
intr 1520831 0 0
ctxt 3781379
procs_running 3
"""


def test_parse_proc_stat_reads_the_cpu_line():
    times = parse_proc_stat(PROC_STAT)
    assert times == CpuTimes(total=1000 + 10 + 200 + 5000 + 40 + 5 + 15 + 30, busy=1000 + 10 + 200 + 5 + 15,
                             steal=30, cpus=2)


def test_parse_proc_stat_without_steal_column_or_cpu_line():
    old = parse_proc_stat("cpu  100 0 50 800 0 0 0\ncpu0 100 0 50 800 0 0 0\n")
    assert old is not None and old.steal == 0 and old.total == 950 and old.cpus == 1
    assert parse_proc_stat("intr 1 2 3\n") is None
    assert parse_proc_stat("cpu  a b c\n") is None


def _reading(at: float, *, total: int, busy: int, steal: int, own_s: float = 0.0, load1: float = 0.1) -> LoadReading:
    return LoadReading(at=at, load_average=(load1, load1, load1), cpu=CpuTimes(total=total, busy=busy, steal=steal, cpus=2),
                       own_cpu_s=own_s)


def test_window_shares_subtract_this_process(monkeypatch):
    monkeypatch.setattr(machine_module, "_TICKS", 100)
    first = _reading(0.0, total=10_000, busy=2_000, steal=100)
    # 1000 ticks pass: 600 busy, of which 1.5 s (150 ticks) are this process's, 50 stolen
    last = _reading(5.0, total=11_000, busy=2_600, steal=150, own_s=1.5, load1=1.7)
    window = load_window(first, last)
    assert window.seconds == 5.0 and window.load1 == 1.7
    assert window.steal == pytest.approx(0.05)
    assert window.other_cpu == pytest.approx(0.45)
    # this process more busy than the counters say (rounding): never negative
    assert load_window(first, _reading(1.0, total=10_100, busy=2_010, steal=100, own_s=1.0)).other_cpu == 0.0


def test_window_without_proc_stat_is_unknown():
    first = LoadReading(at=0.0, load_average=None, cpu=None, own_cpu_s=0.0)
    window = load_window(first, LoadReading(at=1.0, load_average=(0.2, 0.2, 0.2), cpu=None, own_cpu_s=0.1))
    assert window.steal is None and window.other_cpu is None and window.load1 == 0.2
    assert LoadThresholds().reasons(window, 2, judge_load=True) == []


def test_the_verdict_follows_the_thresholds():
    window = load_window(_reading(0, total=1000, busy=0, steal=0), _reading(1, total=2000, busy=300, steal=20, load1=0.9))
    # other 30%, steal 2%, load 0.9 on 2 cores = 0.45 per core
    assert LoadThresholds().reasons(window, 2, judge_load=True) == [
        "other_cpu: other processes use 30% of the CPU (> 20%)"
    ]
    assert LoadThresholds(other_cpu=0.5).reasons(window, 2, judge_load=True) == []
    strict = LoadThresholds(load_per_core=0.4, other_cpu=0.5, steal=0.01)
    kinds = [r.split(":")[0] for r in strict.reasons(window, 2, judge_load=True)]
    assert kinds == ["load_average", "steal"]
    assert [r.split(":")[0] for r in strict.reasons(window, 2, judge_load=False)] == ["steal"]


class _Script:
    """A reader that plays back readings; each window is 1000 ticks with ``busy`` of them busy."""

    def __init__(self, busy: list[int], *, load1: float = 0.1, step_s: float = 2.0) -> None:
        self.busy, self.load1, self.step_s = list(busy), load1, step_s
        self.at, self.total, self.busy_total = 0.0, 0, 0

    def __call__(self) -> LoadReading:
        reading = _reading(self.at, total=self.total, busy=self.busy_total, steal=0, load1=self.load1)
        busy = self.busy.pop(0) if self.busy else 0
        self.at += self.step_s
        self.total += 1000
        self.busy_total += busy
        return reading


def test_wait_for_quiet_tries_until_quiet():
    seen = []
    record = wait_for_quiet(60, reader=_Script([800, 700, 50]), sleep=lambda s: None,
                            on_busy=lambda reasons, waited: seen.append(reasons))
    assert record["quiet"] is True and record["tries"] == 3 and record["reasons"] == []
    assert len(seen) == 2 and all(r[0].startswith("other_cpu") for r in seen)
    assert record["other_cpu"] == pytest.approx(0.05)


def test_wait_for_quiet_gives_up_after_its_bound():
    record = wait_for_quiet(5, reader=_Script([900] * 100), sleep=lambda s: None)
    assert record["quiet"] is False and record["waited_s"] >= 5 and record["tries"] < 100
    assert record["reasons"][0].startswith("other_cpu")
    loaded = wait_for_quiet(5, reader=_Script([0] * 100, load1=3.0), sleep=lambda s: None)
    assert loaded["quiet"] is False and loaded["reasons"][0].startswith("load_average")


def test_monitor_records_samples_and_the_verdict():
    monitor = LoadMonitor(reader=_Script([10, 20, 500, 30]), thresholds=LoadThresholds(other_cpu=0.2))
    monitor.start(sampler=False)
    live = monitor.live
    keys = set(live)
    assert live["before"]["quiet"] is True and live["quiet"] is True
    first = monitor.sample()
    assert first is not None and first.other_cpu == pytest.approx(0.01)
    mark = monitor.windows
    monitor.sample()
    monitor.sample()  # 50%: busy
    summary = monitor.stop()  # one last reading: 3%
    assert monitor.live is live and set(live) == keys, "the live record keeps its keys (and identity)"
    assert summary["during"]["samples"] == 4
    assert summary["during"]["busy_windows"] == 1 and summary["during"]["reasons"] == ["other_cpu"]
    assert summary["during"]["other_cpu"] == {"min": 0.01, "max": 0.5, "mean": pytest.approx(0.14)}
    assert summary["quiet"] is False
    assert monitor.summary(since=mark + 2)["quiet"] is True  # only the last window
    lenient = LoadMonitor(reader=_Script([10, 20, 500, 30]), thresholds=LoadThresholds(other_cpu=0.6))
    lenient.start(sampler=False)
    for _ in range(3):
        lenient.sample()
    assert lenient.stop()["quiet"] is True
    json.dumps(summary)


def test_monitor_busy_before_the_start_is_not_quiet():
    monitor = LoadMonitor(reader=_Script([0, 0], load1=5.0)).start(sampler=False)
    assert monitor.live["before"]["quiet"] is False
    monitor.sample()
    assert monitor.stop()["quiet"] is False


def test_monitor_on_this_machine_samples_in_a_thread():
    with LoadMonitor(interval_s=0.01) as monitor:
        for _ in range(3):
            monitor.sample()
    count = monitor.windows
    record = json.loads(json.dumps(monitor.live))
    assert record["during"]["samples"] == count >= 4  # 3 here and the last one at stop
    assert record["before"]["load_average"] is None or len(record["before"]["load_average"]) == 3
    assert record["quiet"] in (True, False) and record["cores"] >= 1
    assert monitor.windows == count, "the sampler stopped"
    reading = read_load()
    assert reading.own_cpu_s > 0


def test_benchmark_helper_records_load(monkeypatch):
    """benchmarks/_common.py: machine()["load"] is the live record; interleaved results carry theirs."""
    monkeypatch.setenv("EDGECORE_BENCH_QUIET_WAIT_S", "0")
    path = Path(__file__).resolve().parents[1] / "benchmarks" / "_common.py"
    spec = importlib.util.spec_from_file_location("_bench_common_under_test", path)
    common = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(common)
    try:
        info = common.machine()
        assert set(info["load"]) >= {"before", "during", "steal", "quiet", "cores", "thresholds"}
        result = common.interleaved({"a": lambda: None, "b": lambda: None}, blocks=2, calls=3, drop=1)
        assert result["load"]["during"]["samples"] >= 4  # a reading before each of the 4 blocks
        assert info["load"]["during"]["samples"] >= 4, "machine()['load'] is live"
        json.dumps(info)
    finally:
        if common._monitor is not None:
            atexit.unregister(common._finish)
            common._monitor.stop()
