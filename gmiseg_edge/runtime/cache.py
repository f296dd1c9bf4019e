"""Embedding cache: an image is encoded once, then every prompt on it costs only the decoder.

Key (:func:`image_key`): sha256 over the encoder's identity (the sha256 of the encoder file that computes
embeddings), the preprocessing and the image's pixels, so another model, precision or preprocessing never
hits, and a hit needs no preprocessing.

Two levels, both thread-safe:

- memory: an LRU bounded in bytes (``max_bytes``; 0 disables it);
- disk (optional ``folder``): one file per key, ``<folder>/<key[:2]>/<key>.emb`` = magic, sha256 of the
  payload, payload (``.npy`` bytes). Writes go to a temporary file in the same folder and are renamed into
  place (``os.replace``), so readers in any process see a whole entry or none; several processes may share
  a folder. Every read checks the checksum, then the payload: float32, the embedding's shape (``shape``,
  default (1, 256, 64, 64)) and finite values; a corrupted, truncated or wrong entry is removed and recomputed.
  The folder is bounded by ``max_disk_bytes``: when a write takes it over, the least recently used entries
  (a hit refreshes an entry's modification time) are deleted down to 90% of the bound. The scans that
  size the folder also delete temporary files older than an hour (a writer killed mid-write leaves one;
  a live write is seconds old).
- an entry or subfolder this process may not read or write (another user's, in a shared folder): a warning
  (logged once per subfolder and kind), and that entry goes on in memory only; the run does not fail.

Counters (:class:`CacheStats`): memory and disk hits, misses, encoder runs, corrupted entries dropped, stale
temporary files removed, disk entries skipped for permission errors.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import logging
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from gmiseg_edge.core.files import write_bytes_atomic

log = logging.getLogger(__name__)

MAGIC = b"GMISEG-EMB1\n"
DIGEST = 32
DEFAULT_MAX_BYTES = 256 << 20  # 64 lite_medsam / SAM embeddings of 4 MiB
DEFAULT_MAX_DISK_BYTES = 4 << 30  # ~1000 embeddings
EMBEDDING_SHAPE = (1, 256, 64, 64)  # what an entry holds: one image's embedding
STALE_TMP_SECONDS = 3600  # a temporary file this old belongs to a writer that died
_STRIPES = 64


@dataclass(frozen=True)
class CacheStats:
    """Counters since the cache was made (or :meth:`EmbeddingCache.reset_stats`)."""

    memory_hits: int = 0
    disk_hits: int = 0
    misses: int = 0
    encoder_runs: int = 0
    corrupt_dropped: int = 0
    disk_evicted: int = 0
    stale_tmp_removed: int = 0
    disk_denied: int = 0  # disk reads or writes skipped: the entry or its subfolder is not this user's to use
    entries: int = 0
    bytes: int = 0

    @property
    def hits(self) -> int:
        return self.memory_hits + self.disk_hits


def image_key(pixels: np.ndarray, preprocessing: str, encoder_id: str) -> str:
    """Hex sha256 of the encoder identity, a description of the preprocessing (its settings and the versions
    of the libraries that resize) and the image's pixels (shape, dtype, bytes). Keyed on the pixels rather
    than the model input, a hit skips preprocessing too (17 ms of a 1024-input model's cached prompt)."""
    pixels = np.ascontiguousarray(pixels)
    digest = hashlib.sha256()
    digest.update(f"pixels|{encoder_id}|{preprocessing}|{pixels.dtype.str}|{pixels.shape}|".encode())
    digest.update(memoryview(pixels).cast("B"))
    return digest.hexdigest()


class EmbeddingCache:
    """Embeddings by key: in memory (LRU, ``max_bytes``) and optionally in a disk ``folder`` (LRU,
    ``max_disk_bytes``). A disk entry is used only if it holds a finite float32 array of ``shape`` (None: any
    shape)."""

    def __init__(self, max_bytes: int = DEFAULT_MAX_BYTES, folder: str | Path | None = None,
                 max_disk_bytes: int = DEFAULT_MAX_DISK_BYTES,
                 shape: tuple[int, ...] | None = EMBEDDING_SHAPE) -> None:
        if max_bytes < 0 or max_disk_bytes < 0:
            raise ValueError(f"cache bounds must be >= 0, got max_bytes={max_bytes}, max_disk_bytes={max_disk_bytes}")
        self.max_bytes = int(max_bytes)
        self.max_disk_bytes = int(max_disk_bytes)
        self.shape = tuple(shape) if shape is not None else None
        self._disk_bytes: int | None = None  # this process's running estimate; rescanned before evicting
        self.folder = Path(folder) if folder is not None else None
        if self.folder is not None:
            self.folder.mkdir(parents=True, exist_ok=True)
        self._memory: OrderedDict[str, np.ndarray] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        self._stripes = [threading.Lock() for _ in range(_STRIPES)]  # one computation per key at a time
        self._counts = dict.fromkeys(
            ("memory_hits", "disk_hits", "misses", "encoder_runs", "corrupt_dropped", "disk_evicted",
             "stale_tmp_removed", "disk_denied"), 0)
        self._warned: set[tuple[str, Path]] = set()  # (read/write, subfolder) already warned about

    # ------------------------------------------------------------------ public

    def get_or_compute(self, key: str, compute: Callable[[], np.ndarray]) -> np.ndarray:
        """The embedding of ``key``: from memory, else disk, else ``compute()`` (then stored in both).

        Concurrent calls for one key compute it once; the others wait and get the stored result. The
        returned array is read-only (it is shared).
        """
        value = self._memory_get(key)
        if value is not None:
            return value
        with self._stripes[int(key[:8], 16) % _STRIPES]:
            value = self._memory_get(key)
            if value is not None:
                return value
            value = self._disk_get(key)
            if value is None:
                self._count("misses")
                value = np.array(compute(), dtype=np.float32, copy=True)
                self._count("encoder_runs")
                self._disk_put(key, value)
            value.flags.writeable = False
            self._memory_put(key, value)
            return value

    def __contains__(self, key: str) -> bool:
        with self._lock:
            if key in self._memory:
                return True
        path = self._disk_path(key)
        try:
            return path is not None and path.is_file()
        except PermissionError:  # a subfolder this user may not search: the entry cannot be used
            return False

    @property
    def stats(self) -> CacheStats:
        with self._lock:
            return CacheStats(**self._counts, entries=len(self._memory), bytes=self._bytes)

    def reset_stats(self) -> None:
        with self._lock:
            self._counts = dict.fromkeys(self._counts, 0)

    def clear_memory(self) -> None:
        """Drop every in-memory entry (the disk level is kept)."""
        with self._lock:
            self._memory.clear()
            self._bytes = 0

    # ------------------------------------------------------------------ memory

    def _count(self, name: str) -> None:
        with self._lock:
            self._counts[name] += 1

    def _memory_get(self, key: str) -> np.ndarray | None:
        with self._lock:
            value = self._memory.get(key)
            if value is not None:
                self._memory.move_to_end(key)
                self._counts["memory_hits"] += 1
            return value

    def _memory_put(self, key: str, value: np.ndarray) -> None:
        if value.nbytes > self.max_bytes:
            return
        with self._lock:
            if key in self._memory:
                return
            self._memory[key] = value
            self._bytes += value.nbytes
            while self._bytes > self.max_bytes:
                _, old = self._memory.popitem(last=False)
                self._bytes -= old.nbytes

    # ------------------------------------------------------------------ disk

    def _disk_path(self, key: str) -> Path | None:
        return None if self.folder is None else self.folder / key[:2] / f"{key}.emb"

    def _disk_get(self, key: str) -> np.ndarray | None:
        path = self._disk_path(key)
        if path is None:
            return None
        try:
            with open(path, "rb") as handle:
                data = handle.read()
                inode = os.fstat(handle.fileno()).st_ino
        except FileNotFoundError:
            return None
        except PermissionError as exc:
            self._denied("read", path, exc)
            return None
        value = _decode_entry(data)
        if value is None or not self._usable(value):
            self._count("corrupt_dropped")
            try:  # remove it unless another process has already replaced it with a good entry
                if path.stat().st_ino == inode:
                    path.unlink()
            except FileNotFoundError:
                pass
            except PermissionError as exc:
                self._denied("remove", path, exc)
            return None
        self._count("disk_hits")
        with contextlib.suppress(OSError):  # recently used: evicted last
            os.utime(path)
        return value

    def _usable(self, value: np.ndarray) -> bool:
        """Whether a checksummed payload is an embedding: float32, the expected shape, finite."""
        return (value.dtype == np.float32 and (self.shape is None or value.shape == self.shape)
                and bool(np.isfinite(value).all()))

    def _disk_put(self, key: str, value: np.ndarray) -> None:
        path = self._disk_path(key)
        if path is None:
            return
        entry = _encode_entry(value)
        try:
            write_bytes_atomic(path, entry)
        except PermissionError as exc:
            self._denied("write", path, exc)
            return
        with self._lock:
            if self._disk_bytes is None:
                self._disk_bytes = self._scan_disk_bytes()
            else:
                self._disk_bytes += len(entry)
            if self._disk_bytes > self.max_disk_bytes:
                self._evict_disk(keep=path)

    def _denied(self, action: str, path: Path, exc: PermissionError) -> None:
        """Count a disk entry this process may not use, and warn once per subfolder and action."""
        with self._lock:
            self._counts["disk_denied"] += 1
            first = (action, path.parent) not in self._warned
            self._warned.add((action, path.parent))
        if first:
            log.warning("embedding cache: cannot %s %s (%s); going on without the disk cache for such entries "
                        "(fix the folder's owner or permissions, or use a cache folder of your own)", action, path,
                        exc.strerror or exc)

    def _disk_entries(self) -> list[tuple[float, int, Path]]:
        """Every entry (mtime, size, path); deletes temporary files older than ``STALE_TMP_SECONDS`` on the way
        (call with ``_lock`` held)."""
        assert self.folder is not None
        entries = []
        stale_before = time.time() - STALE_TMP_SECONDS
        for path in self.folder.glob("??/*"):
            is_tmp = path.name.startswith(".") and ".tmp" in path.name  # core.files.atomic_path's names
            if not is_tmp and path.suffix != ".emb":
                continue
            try:
                info = path.stat()
            except FileNotFoundError:  # removed by another process meanwhile
                continue
            if not is_tmp:
                entries.append((info.st_mtime, info.st_size, path))
            elif info.st_mtime < stale_before:  # left by a writer killed mid-write: nothing else deletes it
                with contextlib.suppress(FileNotFoundError, PermissionError):  # another user's: theirs to delete
                    path.unlink()
                    self._counts["stale_tmp_removed"] += 1
        return entries

    def _scan_disk_bytes(self) -> int:
        return sum(size for _, size, _ in self._disk_entries())

    def _evict_disk(self, keep: Path) -> None:
        """Delete least recently used entries (other than ``keep``) down to 90% of ``max_disk_bytes``."""
        entries = sorted(self._disk_entries())
        total = sum(size for _, size, _ in entries)
        target = int(self.max_disk_bytes * 0.9)
        for _, size, path in entries:
            if total <= target:
                break
            if path == keep:
                continue
            with contextlib.suppress(FileNotFoundError, PermissionError):  # another user's: left in place
                path.unlink()
                self._counts["disk_evicted"] += 1
            total -= size
        self._disk_bytes = total


def _encode_entry(value: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, value, allow_pickle=False)
    payload = buffer.getvalue()
    return MAGIC + hashlib.sha256(payload).digest() + payload


def _decode_entry(data: bytes) -> np.ndarray | None:
    """The array of a disk entry, or None when it is not a whole, unaltered entry."""
    if not data.startswith(MAGIC) or len(data) < len(MAGIC) + DIGEST:
        return None
    digest, payload = data[len(MAGIC):len(MAGIC) + DIGEST], data[len(MAGIC) + DIGEST:]
    if hashlib.sha256(payload).digest() != digest:
        return None
    try:
        return np.load(io.BytesIO(payload), allow_pickle=False)
    except ValueError:
        return None
