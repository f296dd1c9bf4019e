"""The embedding cache on its own: LRU bound, disk entries verified on read, one computation per key."""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from gmiseg_edge.runtime.cache import EmbeddingCache, _encode_entry, image_key


def embedding(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((1, 256, 64, 64)).astype(np.float32)


def test_key_depends_on_pixels_preprocessing_and_encoder():
    pixels = np.zeros((8, 8, 3), np.uint8)
    other = pixels.copy()
    other[0, 0, 0] = 1
    assert image_key(pixels, "p", "a") == image_key(pixels.copy(), "p", "a")
    assert image_key(pixels, "p", "a") != image_key(pixels, "p", "b")
    assert image_key(pixels, "p", "a") != image_key(pixels, "q", "a")
    assert image_key(pixels, "p", "a") != image_key(other, "p", "a")
    assert image_key(pixels, "p", "a") != image_key(pixels.reshape(4, 16, 3), "p", "a")


def test_memory_lru_is_bounded_in_bytes():
    one = embedding(0).nbytes
    cache = EmbeddingCache(max_bytes=2 * one)
    for i in range(3):
        cache.get_or_compute(f"{i:064x}", lambda i=i: embedding(i))
    stats = cache.stats
    assert stats.entries == 2 and stats.bytes == 2 * one and stats.encoder_runs == 3
    cache.get_or_compute(f"{2:064x}", lambda: embedding(99))  # still cached: no computation
    cache.get_or_compute(f"{0:064x}", lambda: embedding(0))  # evicted first: computed again
    assert cache.stats.encoder_runs == 4 and cache.stats.memory_hits == 1


def test_disk_entries_survive_the_process_and_corrupted_ones_are_recomputed(tmp_path):
    key = "ab" * 32
    value = embedding(1)
    EmbeddingCache(folder=tmp_path).get_or_compute(key, lambda: value)
    path = tmp_path / key[:2] / f"{key}.emb"
    assert path.is_file() and not list(tmp_path.rglob("*.tmp"))

    fresh = EmbeddingCache(folder=tmp_path)
    assert np.array_equal(fresh.get_or_compute(key, lambda: embedding(2)), value)
    assert fresh.stats.disk_hits == 1 and fresh.stats.encoder_runs == 0

    data = bytearray(path.read_bytes())
    data[-100] ^= 0x01  # one flipped bit in the payload
    path.write_bytes(bytes(data))
    recomputed = EmbeddingCache(folder=tmp_path)
    assert np.array_equal(recomputed.get_or_compute(key, lambda: value), value)
    assert recomputed.stats.corrupt_dropped == 1 and recomputed.stats.encoder_runs == 1

    path.write_bytes(path.read_bytes()[:1000])  # truncated
    again = EmbeddingCache(folder=tmp_path)
    again.get_or_compute(key, lambda: value)
    assert again.stats.corrupt_dropped == 1 and again.stats.encoder_runs == 1
    assert EmbeddingCache(folder=tmp_path).get_or_compute(key, lambda: embedding(3)).tobytes() == value.tobytes()


def test_concurrent_requests_for_one_key_compute_it_once(tmp_path):
    cache = EmbeddingCache(folder=tmp_path)
    calls = []

    def slow():
        calls.append(1)
        time.sleep(0.2)
        return embedding(4)

    results = []
    threads = [threading.Thread(target=lambda: results.append(cache.get_or_compute("cd" * 32, slow)))
               for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(calls) == 1 and cache.stats.encoder_runs == 1 and cache.stats.memory_hits == 7
    assert all(np.array_equal(r, results[0]) for r in results) and not results[0].flags.writeable


def test_disk_level_is_bounded_and_evicts_least_recently_used(tmp_path):
    small = np.arange(1000, dtype=np.float32)  # ~4 KB entries
    entry_bytes = None
    keys = [f"{i:02x}" * 32 for i in range(1, 6)]
    writer = EmbeddingCache(max_bytes=0, folder=tmp_path, max_disk_bytes=10**9, shape=None)
    for i, key in enumerate(keys[:3]):
        writer.get_or_compute(key, lambda i=i: small + i)
        os.utime(tmp_path / key[:2] / f"{key}.emb", (1000 + i, 1000 + i))  # keys[0] oldest
    entry_bytes = (tmp_path / keys[0][:2] / f"{keys[0]}.emb").stat().st_size

    bounded = EmbeddingCache(max_bytes=0, folder=tmp_path, max_disk_bytes=int(3.5 * entry_bytes), shape=None)
    assert bounded.get_or_compute(keys[0], lambda: small * 0).tobytes() == small.tobytes()  # a hit refreshes it
    bounded.get_or_compute(keys[3], lambda: small + 3)  # 4 entries > 3.5: LRU ones go, down to 90% (3.15)
    on_disk = {p.stem for p in tmp_path.rglob("*.emb")}
    assert on_disk == {keys[0], keys[2], keys[3]}, on_disk  # keys[1] was the least recently used
    assert bounded.stats.disk_evicted == 1
    assert sum(p.stat().st_size for p in tmp_path.rglob("*.emb")) <= 3.5 * entry_bytes
    bounded.get_or_compute(keys[4], lambda: small + 4)
    assert len(list(tmp_path.rglob("*.emb"))) == 3 and (tmp_path / keys[4][:2] / f"{keys[4]}.emb").is_file()


def _nan_embedding() -> np.ndarray:
    value = embedding(5)
    value[0, 7, 3, 3] = np.nan
    return value


@pytest.mark.parametrize("bad", [
    lambda: embedding(5)[:, :, :32, :32].copy(),  # another model's shape
    lambda: embedding(5)[0],  # no batch axis
    lambda: embedding(5).astype(np.float64),
    lambda: embedding(5).astype(np.float16),
    _nan_embedding,
    lambda: np.full((1, 256, 64, 64), np.inf, np.float32),
])
def test_a_checksummed_entry_that_is_not_an_embedding_is_dropped_and_recomputed(tmp_path, bad):
    """The checksum only proves the entry is whole: a payload of the wrong shape or dtype, or with NaN or inf,
    (a bug, another version, a hand-made file) is never used as an embedding."""
    key = "ef" * 32
    path = tmp_path / key[:2] / f"{key}.emb"
    path.parent.mkdir()
    path.write_bytes(_encode_entry(bad()))
    good = embedding(6)
    cache = EmbeddingCache(folder=tmp_path)
    result = cache.get_or_compute(key, lambda: good)
    assert result.dtype == np.float32 and np.array_equal(result, good)
    assert cache.stats.corrupt_dropped == 1 and cache.stats.encoder_runs == 1 and cache.stats.disk_hits == 0
    again = EmbeddingCache(folder=tmp_path)  # the bad entry was replaced by the good one
    assert np.array_equal(again.get_or_compute(key, lambda: embedding(7)), good) and again.stats.disk_hits == 1


def test_the_expected_shape_is_the_caches_own():
    small = np.arange(12, dtype=np.float32).reshape(3, 4)
    assert EmbeddingCache(shape=(3, 4))._usable(small) and not EmbeddingCache()._usable(small)


def test_temporary_files_of_killed_writers_are_deleted_by_the_size_sweep(tmp_path):
    """A writer killed mid-write leaves ``.<key>.emb.*.tmp``: the bound never counted it and nothing deleted it.
    The sweep deletes those over an hour old and keeps a live writer's fresh one."""
    key = "12" * 32
    folder = tmp_path / key[:2]
    folder.mkdir()
    stale = folder / f".{key}.emb.abc123.tmp"
    fresh = folder / f".{'34' * 32}.emb.def456.tmp"
    for path in (stale, fresh):
        path.write_bytes(b"x" * 4096)
    hours_ago = time.time() - 2 * 3600
    os.utime(stale, (hours_ago, hours_ago))
    cache = EmbeddingCache(folder=tmp_path)
    cache.get_or_compute(key, lambda: embedding(8))  # the first write sizes the folder
    assert not stale.exists() and fresh.exists()
    assert cache.stats.stale_tmp_removed == 1 and (folder / f"{key}.emb").is_file()

    os.utime(fresh, (hours_ago, hours_ago))  # its writer died too: the next sweep (another process) takes it
    entry = (folder / f"{key}.emb").stat().st_size
    bounded = EmbeddingCache(max_bytes=0, folder=tmp_path, max_disk_bytes=int(1.5 * entry))
    bounded.get_or_compute("56" * 32, lambda: embedding(9))
    bounded.get_or_compute("78" * 32, lambda: embedding(10))  # over the bound: the eviction sweep
    assert not fresh.exists() and bounded.stats.stale_tmp_removed == 1 and bounded.stats.disk_evicted >= 1
    assert not list(tmp_path.rglob("*.tmp"))


def _as_another_user(check):
    """``check()``'s JSON-able result, run as a user that owns none of the files: the user ``nobody`` in a forked
    child that dropped root's privileges (root reads and writes anything), else this user."""
    if os.geteuid() != 0:
        return check()
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        try:
            os.close(read)
            os.setgroups([])
            os.setgid(65534)
            os.setuid(65534)
            payload = json.dumps(check()).encode()
        except BaseException as exc:  # reported to the parent, which fails the test with it
            payload = json.dumps({"error": repr(exc)}).encode()
        with os.fdopen(write, "wb") as pipe:
            pipe.write(payload)
        os._exit(0)
    os.close(write)
    with os.fdopen(read, "rb") as pipe:
        data = pipe.read()
    os.waitpid(pid, 0)
    return json.loads(data)


def test_entries_another_user_owns_give_a_warning_and_the_run_goes_on():
    """Issue 26: one hash subfolder of a shared cache that this user cannot write (another user's, umask 022) made
    the image fail with PermissionError."""
    shared = Path(tempfile.mkdtemp(prefix="gmiseg-shared-cache-"))
    unwritable, unreadable, other = "cd" * 32, "ef" * 32, "ab" * 32
    try:
        shared.chmod(0o777)  # a folder every user of the machine writes into
        EmbeddingCache(folder=shared).get_or_compute(unreadable, lambda: embedding(7))  # the other user's entry
        (shared / "cd").mkdir()
        for path, mode in ((shared / "ef" / f"{unreadable}.emb", 0o000), (shared / "ef", 0o555),
                           (shared / "cd", 0o555)):
            path.chmod(mode)

        def check() -> dict:
            records: list[str] = []
            handler = logging.Handler()
            handler.emit = lambda record: records.append(record.getMessage())
            logging.getLogger("gmiseg_edge.runtime.cache").addHandler(handler)
            cache = EmbeddingCache(folder=shared)
            values = {"unwritable": cache.get_or_compute(unwritable, lambda: embedding(1)),
                      "unwritable again": cache.get_or_compute("cd" + "0" * 62, lambda: embedding(2)),
                      "unreadable": cache.get_or_compute(unreadable, lambda: embedding(3)),
                      "other": cache.get_or_compute(other, lambda: embedding(4))}
            seeds = {"unwritable": 1, "unwritable again": 2, "unreadable": 3, "other": 4}
            memory_hit = cache.get_or_compute(unwritable, lambda: embedding(9))
            return {"right": all(np.array_equal(values[k], embedding(s)) for k, s in seeds.items()),
                    "memory hit": bool(np.array_equal(memory_hit, embedding(1))),
                    "denied": cache.stats.disk_denied, "runs": cache.stats.encoder_runs, "warnings": records,
                    "other on disk": (shared / "ab" / f"{other}.emb").is_file()}

        result = _as_another_user(check)
        assert "error" not in result, result["error"]
        assert result["right"] and result["memory hit"] and result["other on disk"], result
        assert result["runs"] == 4 and result["denied"] == 4, result  # write cd x2, read ef, write ef
        assert len(result["warnings"]) == 3, result["warnings"]  # once per subfolder and action
        for action, subfolder in (("write", "cd"), ("read", "ef"), ("write", "ef")):
            assert any(message.startswith(f"embedding cache: cannot {action} {shared / subfolder}")
                       and "going on without the disk cache" in message for message in result["warnings"]), action
    finally:
        for path in (shared / "cd", shared / "ef", shared / "ef" / f"{unreadable}.emb"):
            if path.exists():
                path.chmod(0o755)
        shutil.rmtree(shared)
