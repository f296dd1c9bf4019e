"""Files: atomic writes (readers never see half a file; a failed write leaves the old file in place), sha256,
the user cache folder, and the staging folders (``.<name>.partial-*``) that killed publishing runs leave."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

FILE_MODE = 0o644
STALE_PARTIAL_SECONDS = 3600  # a staging folder untouched this long belongs to a run that was killed
CHUNK = 1 << 20


@contextlib.contextmanager
def atomic_path(path: str | Path, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path beside ``path``; once the block succeeds, it is synced and renamed onto ``path``.

    On any error the temporary file is removed and ``path`` is untouched. ``suffix`` keeps an extension that a
    writer needs to recognise the format (``.nii.gz``, ``.png``).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=f".tmp{suffix}")
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.chmod(tmp, FILE_MODE)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_bytes_atomic(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def write_json_atomic(path: str | Path, data: Any) -> Path:
    """Write JSON (indented, newline-terminated) to ``path`` atomically."""
    return write_bytes_atomic(path, (json.dumps(data, indent=2) + "\n").encode())


def folder_problem(path: str | Path) -> str | None:
    """Why ``path`` cannot be used as a folder to write files in (created if missing), or None if it can:
    one line naming it."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        return f"{path}: is a file, not a folder"
    try:
        path.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=path, prefix=".write-check-")
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        return f"{path}: cannot write there ({exc.strerror or exc})"
    return None


def sha256_of(path: Path | str) -> str:
    """Hex sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def user_cache_dir() -> Path:
    """Root of the user cache (``$GMISEG_EDGE_HOME``, else ``$XDG_CACHE_HOME/gmiseg-edge`` or
    ``~/.cache/gmiseg-edge``): weights, TensorRT caches of ONNX Runtime."""
    root = os.environ.get("GMISEG_EDGE_HOME")
    if root:
        return Path(root).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "gmiseg-edge"


def remove_stale_partials(target: Path, max_age: float = STALE_PARTIAL_SECONDS) -> list[Path]:
    """Delete the staging folders (``.<name>.partial-XXXXXXXX`` beside ``target``) that killed runs left (export,
    add-task, adapt, export-triton): those whose folder and files were all last modified more than ``max_age``
    seconds ago (a live run's are younger). Every command that publishes ``target`` calls it first. Returns what
    was deleted."""
    pattern = re.compile(rf"\.{re.escape(target.name)}\.partial-[a-z0-9_]{{8}}")
    cutoff = time.time() - max_age
    removed = []
    for path in target.parent.iterdir() if target.parent.is_dir() else ():
        if not pattern.fullmatch(path.name) or path.is_symlink() or not path.is_dir():
            continue
        try:
            newest = max([path.stat().st_mtime] + [p.lstat().st_mtime for p in path.iterdir()])
        except OSError:  # removed meanwhile (its run finished)
            continue
        if newest < cutoff:
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
    return removed
