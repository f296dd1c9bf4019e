"""Files: atomic writes (readers never see half a file; a failed write leaves the old file in place), sha256,
and the user cache folder."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

FILE_MODE = 0o644
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
