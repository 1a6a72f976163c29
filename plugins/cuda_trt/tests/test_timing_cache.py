"""The per-SM timing cache file: merged under an exclusive lock, written atomically, so that
concurrent builders (threads and processes) never lose each other's timings. The merge function is
TensorRT's ``ITimingCache.combine`` in the backend; here a plain union of lines stands in for it."""

from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path

from edgecore_cuda_trt.cache import GpuFacts, TimingCacheFile

GPU = GpuFacts(name="NVIDIA H200", compute_capability="9.0", cuda_runtime="12.8", driver="13.0")


def union(on_disk: bytes, learned: bytes) -> bytes:
    return b"".join(sorted(set(on_disk.splitlines(keepends=True)) | set(learned.splitlines(keepends=True))))


def test_one_file_per_sm_and_major(tmp_path):
    cache = TimingCacheFile.for_gpu(tmp_path, GPU, 10)
    assert cache.path == tmp_path / "timing-sm90-trt10.cache"
    assert cache.read() == b""
    other = GpuFacts(name="Orin", compute_capability="8.7", cuda_runtime="12.6", driver="12.6")
    assert TimingCacheFile.for_gpu(tmp_path, other, 10).path != cache.path


def test_first_merge_stores_what_was_learned_and_later_ones_combine(tmp_path):
    cache = TimingCacheFile.for_gpu(tmp_path, GPU, 11)
    calls = []

    def combine(on_disk, learned):
        calls.append((on_disk, learned))
        return union(on_disk, learned)

    cache.merge(b"conv-a\n", combine)
    assert calls == [] and cache.read() == b"conv-a\n"
    cache.merge(b"conv-b\n", combine)
    assert calls == [(b"conv-a\n", b"conv-b\n")]
    assert cache.read() == b"conv-a\nconv-b\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == [cache.path.name, cache.lock_path.name]  # no temp files left


def test_concurrent_threads_lose_nothing(tmp_path):
    cache = TimingCacheFile.for_gpu(tmp_path, GPU, 10)

    def slow_union(on_disk, learned):
        threading.Event().wait(0.001)  # widen the read-combine-write window
        return union(on_disk, learned)

    threads = [threading.Thread(target=cache.merge, args=(f"tactic-{i}\n".encode(), slow_union)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert set(cache.read().splitlines()) == {f"tactic-{i}".encode() for i in range(16)}


def test_concurrent_processes_lose_nothing(tmp_path):
    code = (
        "import sys, time; from pathlib import Path; from edgecore_cuda_trt.cache import TimingCacheFile\n"
        "def union(a, b):\n"
        "    time.sleep(0.002)\n"
        "    return b''.join(sorted(set(a.splitlines(keepends=True)) | set(b.splitlines(keepends=True))))\n"
        "cache = TimingCacheFile(Path(sys.argv[1]))\n"
        "for j in range(5):\n"
        "    cache.merge(f'{sys.argv[2]}-{j}\\n'.encode(), union)\n"
    )
    path = tmp_path / "timing-sm90-trt10.cache"
    workers = [subprocess.Popen([sys.executable, "-c", code, str(path), f"p{i}"]) for i in range(4)]
    assert all(w.wait(timeout=120) == 0 for w in workers)
    assert set(Path(path).read_bytes().splitlines()) == {f"p{i}-{j}".encode() for i in range(4) for j in range(5)}
