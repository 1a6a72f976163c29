"""The compiled-artifact cache: keys, integrity, atomic writes, LRU cap, killed writers."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest

from edgecore.cache import MANIFEST, ArtifactCache, CacheKey
from edgecore.errors import ConfigurationError


def _key(**changes) -> CacheKey:
    values = dict(model="abc", backend="cpu_simd", runtime="onnxruntime 1.0", options={"level": "all"})
    values.update(changes)
    return CacheKey(**values)


def _writer(payload: bytes, calls: list):
    def build(folder: Path):
        calls.append(folder)
        (folder / "model.onnx").write_bytes(payload)
        (folder / "weights").mkdir()
        (folder / "weights" / "w.bin").write_bytes(payload * 3)
        return {"inputs": [{"name": "x"}]}

    return build


def test_every_field_of_the_key_changes_the_digest():
    base = _key()
    variants = [
        _key(model="abd"), _key(backend="openvino"), _key(runtime="onnxruntime 1.1"), _key(device="gpu"),
        _key(precision="int8"), _key(options={"level": "basic"}), _key(cpu_features=("avx2",)),
    ]
    digests = {base.digest(), *(v.digest() for v in variants)}
    assert len(digests) == len(variants) + 1
    assert _key(options={"b": 1, "a": 2}).digest() == _key(options={"a": 2, "b": 1}).digest()


def test_build_once_then_hit(tmp_path):
    cache, calls = ArtifactCache(tmp_path), []
    first = cache.get_or_build(_key(), _writer(b"model", calls))
    second = cache.get_or_build(_key(), _writer(b"model", calls))
    assert first.built and not second.built and len(calls) == 1
    assert second.file("weights/w.bin").read_bytes() == b"model" * 3
    assert second.metadata == {"inputs": [{"name": "x"}]}
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no staging left


@pytest.mark.parametrize("damage", ["truncate", "flip", "delete", "manifest"])
def test_a_damaged_entry_is_rebuilt_never_trusted(tmp_path, damage):
    calls = []
    entry = ArtifactCache(tmp_path).get_or_build(_key(), _writer(b"model-bytes", calls))
    target = entry.file("weights/w.bin")
    if damage == "truncate":
        target.write_bytes(b"model")
    elif damage == "flip":
        data = bytearray(target.read_bytes())
        data[0] ^= 0xFF
        target.write_bytes(bytes(data))
    elif damage == "delete":
        target.unlink()
    else:
        (entry.path / MANIFEST).write_text("{broken")
    fresh = ArtifactCache(tmp_path)  # a new process: checksums are verified on first use
    assert fresh.get(_key()) is None
    rebuilt = fresh.get_or_build(_key(), _writer(b"model-bytes", calls))
    assert rebuilt.built and rebuilt.file("weights/w.bin").read_bytes() == b"model-bytes" * 3


def test_a_failed_build_leaves_nothing(tmp_path):
    def build(folder):
        (folder / "half").write_bytes(b"x")
        raise RuntimeError("compiler crashed")

    with pytest.raises(RuntimeError):
        ArtifactCache(tmp_path).get_or_build(_key(), build)
    assert list(tmp_path.iterdir()) == []


def test_least_recently_used_entries_go_past_the_cap(tmp_path):
    cache = ArtifactCache(tmp_path, max_bytes=3 * 4 * 1000)  # room for about two entries of 4 kB
    calls = []
    keys = [_key(model=f"m{i}") for i in range(3)]
    for i, key in enumerate(keys[:2]):
        cache.get_or_build(key, _writer(b"x" * 1000, calls))
        os.utime(cache.root / key.digest() / MANIFEST, (1000 + i, 1000 + i))
    cache.get(keys[0])  # touch: keys[1] is now the least recently used
    cache.get_or_build(keys[2], _writer(b"x" * 1000, calls))
    assert cache.get(keys[1]) is None
    assert cache.get(keys[0]) is not None and cache.get(keys[2]) is not None
    with pytest.raises(ConfigurationError):
        ArtifactCache(tmp_path, max_bytes=-1)


def test_entries_in_use_are_not_trimmed_until_released(tmp_path):
    """A live CacheEntry (a Graph or compiled model mapping its files) pins it: building past the cap
    leaves it alone; once released, the next trim removes it."""
    cache = ArtifactCache(tmp_path, max_bytes=5000)  # room for one entry of 4 kB
    held = cache.get_or_build(_key(model="held"), _writer(b"x" * 1000, []))
    cache.get_or_build(_key(model="other"), _writer(b"y" * 1000, []))
    assert held.file("model.onnx").read_bytes() == b"x" * 1000  # still there, above the cap
    assert cache.get(_key(model="held")) is not None
    held = None  # released
    cache.get_or_build(_key(model="third"), _writer(b"z" * 1000, []))
    assert cache.get(_key(model="held")) is None


def test_an_entry_in_use_by_another_process_is_not_trimmed(tmp_path):
    key = _key(model="shared")
    ArtifactCache(tmp_path).get_or_build(key, _writer(b"s" * 1000, []))
    holder = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(f"""
            import sys, time
            from edgecore.cache import ArtifactCache, CacheKey
            key = CacheKey(model="shared", backend="cpu_simd", runtime="onnxruntime 1.0", options={{"level": "all"}})
            entry = ArtifactCache({str(tmp_path)!r}).get(key)
            print("held" if entry is not None else "missing", flush=True)
            sys.stdin.readline()
        """)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        ArtifactCache(tmp_path, max_bytes=1).trim()  # everything is over a 1-byte cap
        assert (tmp_path / key.digest() / MANIFEST).is_file()
    finally:
        holder.communicate("\n", timeout=30)
    ArtifactCache(tmp_path, max_bytes=1).trim()
    assert not (tmp_path / key.digest()).exists()


def test_concurrent_builders_of_one_key_agree(tmp_path):
    cache, calls, results = ArtifactCache(tmp_path), [], []
    threads = [
        threading.Thread(target=lambda: results.append(cache.get_or_build(_key(), _writer(b"same", calls))))
        for _ in range(8)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(calls) == 1 and len({r.path for r in results}) == 1


def test_the_cache_survives_a_killed_writer(tmp_path):
    """A writer killed mid-build (SIGKILL) leaves only a staging folder; the next process builds the
    entry, and stale staging folders are cleaned."""
    script = textwrap.dedent(
        f"""
        import sys, time
        from edgecore.cache import ArtifactCache, CacheKey
        def build(folder):
            (folder / "model.onnx").write_bytes(b"partial")
            print("writing", flush=True)
            time.sleep(60)
        ArtifactCache({str(tmp_path)!r}).get_or_build(
            CacheKey(model="abc", backend="cpu_simd", runtime="onnxruntime 1.0", options={{"level": "all"}}), build)
        """
    )
    child = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "writing"
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(30)
    staging = [p for p in tmp_path.iterdir() if p.name.startswith(".")]
    assert staging and not (tmp_path / _key().digest()).exists()
    for path in staging:
        os.utime(path, (0, 0))  # an hour and more ago
    cache, calls = ArtifactCache(tmp_path), []
    assert cache.get(_key()) is None
    entry = cache.get_or_build(_key(), _writer(b"model", calls))
    assert entry.built and json.loads((entry.path / MANIFEST).read_text())["metadata"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def _child_get(root: Path, *, hashing: bool) -> str:
    """In a fresh process: "hit" or "miss" for ``_key()``; with ``hashing=False`` any checksum
    computation fails the child."""
    script = textwrap.dedent(
        f"""
        import edgecore.cache as cache
        if not {hashing!r}:
            def refuse(path):
                raise AssertionError("hashed " + str(path))
            cache._sha256 = refuse
        key = cache.CacheKey(model="abc", backend="cpu_simd", runtime="onnxruntime 1.0", options={{"level": "all"}})
        print("hit" if cache.ArtifactCache({str(root)!r}).get(key) is not None else "miss")
        """
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_a_later_process_trusts_the_recorded_verification_until_a_file_changes(tmp_path):
    """Checksums verified once are recorded with the files' identity: a second start does not hash
    the weights again, but a same-size rewrite with its mtime put back (ctime moves) is hashed and
    refused."""
    entry = ArtifactCache(tmp_path).get_or_build(_key(), _writer(b"model-bytes", []))
    assert _child_get(tmp_path, hashing=False) == "hit"
    target = entry.file("weights/w.bin")
    before = target.stat()
    data = bytearray(target.read_bytes())
    data[3] ^= 0xFF
    target.write_bytes(bytes(data))
    os.utime(target, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert _child_get(tmp_path, hashing=True) == "miss"
    assert not entry.path.exists()
