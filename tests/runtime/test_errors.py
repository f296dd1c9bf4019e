"""Bad inputs and bad model folders: each gives a clear error naming what is wrong, never a wrong mask."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from gmiseg_edge.core.manifest import Manifest, ManifestError
from gmiseg_edge.data import load_sample_cases
from gmiseg_edge.runtime import BackendError, InputError, load
from gmiseg_edge.runtime.backends.trt.device import CudaDevice, TensorRTStatus
from gmiseg_edge.runtime.backends.trt.runner import engine_problem
from gmiseg_edge.runtime.cache import EmbeddingCache


@pytest.fixture(scope="module")
def predictor(model_dir):
    return load(model_dir, backend="ort")


@pytest.fixture(scope="module")
def image():
    return load_sample_cases(["lung1"])[0].image  # uint8 (512, 512)


def clone(folder: Path, dest: Path, real: tuple[str, ...] = ()) -> Path:
    """A model folder whose files link to ``folder``'s, except the manifest and ``real`` (copied, so they may
    be altered without touching the original)."""
    dest.mkdir()
    for path in folder.iterdir():
        if path.name == "manifest.json" or path.name in real:
            shutil.copy2(path, dest / path.name)
        else:
            (dest / path.name).symlink_to(path)
    return dest


def edit_manifest(folder: Path, change) -> None:
    path = folder / "manifest.json"
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        (np.zeros((2, 64, 64, 3), np.uint8), "4 dimensions"),
        (np.zeros(64, np.uint8), "1 dimensions"),
        (np.zeros((64, 64, 4), np.uint8), "RGBA"),
        (np.zeros((64, 64, 2), np.uint8), "1 or 3 channels"),
        (np.zeros((0, 64), np.uint8), "empty image"),
        (np.full((64, 64), np.nan, np.float32), "NaN"),
        (np.zeros((64, 64), np.uint16), "window='percentile'"),
        (np.zeros((64, 64), np.float32), "not uint8"),
        (np.zeros((64, 64), bool), "dtype bool"),
    ],
)
def test_bad_images_are_refused(predictor, bad, message):
    with pytest.raises(InputError, match=re.escape(message)):
        predictor.predict(bad, box=[0, 0, 10, 10])


def test_sixteen_bit_images_are_accepted_with_a_normalisation(predictor, image):
    ct_like = image.astype(np.int16) * 8 - 1000  # HU-like int16
    prediction = predictor.predict(ct_like, box=[200, 330, 240, 380], window="percentile")
    assert prediction.mask.shape == image.shape


@pytest.mark.parametrize(
    ("prompt", "message"),
    [
        ({"points": [[600, 10]], "labels": [1]}, "point 0 (x=600, y=10): x=600 is outside the image (0 <= x < 512)"),
        ({"points": [[5, 5], [10, -1]], "labels": [1, 1]}, "point 1 (x=10, y=-1): y=-1 is outside"),
        ({"box": [10, 10, 20, 900]}, "y1=900 is outside the image (0 <= y <= 512)"),
        ({"box": [50, 10, 20, 30]}, "x1=20 < x0=50"),
        ({"box": [10, 40, 20, 30]}, "y1=30 < y0=40"),
        ({}, "empty prompt"),
        ({"mask_input": np.zeros((256, 256), np.float32)}, "mask_input alone is not a prompt"),
        ({"points": [[5, 5]]}, "without labels"),
        ({"points": [[5, 5]], "labels": [1, 0]}, "1 point(s) but 2 label(s)"),
        ({"points": [[5, 5]], "labels": [2]}, "must be 1 (foreground) or 0"),
        ({"points": [[np.nan, 5]], "labels": [1]}, "NaN"),
        ({"box": [1, 2, 3]}, "four numbers"),
        ({"box": [1, 2, 30, 40], "mask_input": np.zeros((64, 64), np.float32)}, "(256, 256) low-res logits"),
    ],
)
def test_bad_prompts_are_refused_naming_the_fault(predictor, image, prompt, message):
    runs = predictor.stats.encoder_runs
    with pytest.raises(InputError, match=re.escape(message)):
        predictor.predict(image, **prompt)
    assert predictor.stats.encoder_runs == runs  # checked before any encoding


def test_an_altered_file_is_refused_naming_it(model_dir, tmp_path):
    folder = clone(model_dir, tmp_path / "altered", real=("encoder.onnx", "decoder.fp16.onnx"))
    for name in ("encoder.onnx", "decoder.fp16.onnx"):
        data = bytearray((folder / name).read_bytes())
        data[len(data) // 2] ^= 0xFF  # one flipped byte, same size
        (folder / name).write_bytes(bytes(data))
    with pytest.raises(ManifestError, match=r"encoder\.onnx: sha256 differs"):
        load(folder, backend="ort")
    with pytest.raises(ManifestError, match=r"decoder\.fp16\.onnx: sha256 differs"):
        load(folder, backend="ort", precision="fp16")


def test_a_precision_that_failed_validation_is_refused_with_the_reason(model_dir, tmp_path):
    folder = clone(model_dir, tmp_path / "failed")

    def fail(data):
        data["validation"]["fp16"].update(passed=False, failures=["mask Dice 0.91 on lung2/lesion < 0.99"])

    edit_manifest(folder, fail)
    with pytest.raises(ManifestError, match=r"fp16 graphs failed validation.*mask Dice 0\.91 on lung2"):
        load(folder, precision="fp16")
    with pytest.raises(ManifestError, match="no int8 graphs; present: fp32, fp16"):
        load(folder, precision="int8")
    assert load(folder, backend="ort").backend.precision == "fp32"  # fp32 still validated


def test_an_engine_built_for_another_gpu_is_refused_by_trt_and_skipped_by_auto(model_dir, tmp_path):
    folder = clone(model_dir, tmp_path / "engines")
    entry = {"precision": "fp32", "sha256": "0" * 64, "bytes": 10, "tensorrt": "10.3.0",
             "gpu": "Orin (nvgpu)", "compute_capability": "8.7", "strongly_typed": True}

    def add_engines(data):
        data["engines"] = {f"{g}.fp32.engine": entry | {"graph": g} for g in ("encoder", "decoder")}

    edit_manifest(folder, add_engines)
    for graph in ("encoder", "decoder"):
        (folder / f"{graph}.fp32.engine").write_bytes(b"not-an-engine")
    with pytest.raises(BackendError, match=r"built for Orin \(nvgpu\) / TensorRT 10\.3\.0.*gmiseg-edge build"):
        load(folder, backend="trt")
    # on a GPU machine the same entries are refused for the mismatch itself
    here = TensorRTStatus(True, "ok", "10.7.0", CudaDevice("NVIDIA H100 80GB HBM3", "9.0"))
    problem = engine_problem(Manifest.load(folder), "fp32", here)
    assert "built for Orin (nvgpu) (compute capability 8.7) with TensorRT 10.3.0" in problem
    assert "this machine has NVIDIA H100 80GB HBM3" in problem and "gmiseg-edge build" in problem
    auto = load(folder)  # documented fallback: ONNX Runtime, with the reason kept
    assert auto.backend.name == "ort" and "Orin" in auto.backend_note


def test_backend_and_precision_choices_are_checked(model_dir):
    with pytest.raises(ValueError, match="backend must be one of auto, trt, ort, torch"):
        load(model_dir, backend="tensorrt")
    with pytest.raises(BackendError, match=r"torch backend .* runs fp32 only, not fp16"):
        load(model_dir, backend="torch", precision="fp16")
    with pytest.raises(ManifestError, match="not a gmiseg-edge model folder"):
        load(model_dir.parent)


BOX = [200, 330, 240, 380]


def _negated_encoder(source: Path, dest: Path) -> Path:
    """A valid encoder graph that differs from ``source``: the same graph with its output negated."""
    onnx = pytest.importorskip("onnx")
    model = onnx.load(str(source))
    output = model.graph.output[0].name
    for node in model.graph.node:
        node.output[:] = [f"{o}_genuine" if o == output else o for o in node.output]
    model.graph.node.append(onnx.helper.make_node("Neg", [f"{output}_genuine"], [output]))
    dest.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(dest))
    return dest


def _mask(folder: Path, image, cache) -> np.ndarray:
    return load(folder, backend="ort", cache=cache).predict(image, box=BOX).mask


def test_a_manifest_redirecting_a_graph_is_refused_and_never_poisons_a_shared_cache(model_dir, image, tmp_path):
    """The files were verified by name while the graph was loaded from ``folder / manifest path``, and the cache
    key was the manifest's sha256 of the named file: a folder whose manifest pointed the encoder at another graph
    (sub-folder, absolute path, ``..``) loaded it unverified and wrote its embeddings into a shared disk cache
    under the genuine encoder's key, changing the genuine folder's masks. Now such a manifest is refused."""
    reference = _mask(model_dir, image, EmbeddingCache(max_bytes=0))
    shared = tmp_path / "shared-cache"
    tampered = clone(model_dir, tmp_path / "tampered")
    evil = _negated_encoder(model_dir / "encoder.onnx", tampered / "sub" / "encoder.onnx")
    outside = _negated_encoder(model_dir / "encoder.onnx", tmp_path / "evil" / "encoder.onnx")
    refused = []
    for value in ("sub/encoder.onnx", str(evil), str(outside), "../evil/encoder.onnx"):
        edit_manifest(tampered, lambda data, v=value: data["graphs"]["fp32"].update(encoder=v))
        try:
            _mask(tampered, image, str(shared))
        except ManifestError as exc:
            refused.append(str(exc))
    assert np.array_equal(_mask(model_dir, image, str(shared)), reference)  # the shared cache was not poisoned
    assert len(refused) == 4 and all("graphs.fp32.encoder" in r and "plain file name" in r for r in refused)


def test_a_self_consistent_tampered_folder_gets_its_own_cache_key(model_dir, image, tmp_path):
    """A folder whose encoder is another graph and whose manifest records that graph's true sha256 passes
    verification (the manifest is no proof of anything): its cache key is the sha256 of the bytes it loads, so
    it can never share the genuine folder's entries."""
    from gmiseg_edge.core.files import sha256_of
    from gmiseg_edge.core.manifest import file_entry

    shared = tmp_path / "shared-cache"
    genuine = load(model_dir, backend="ort", cache=str(shared))
    assert genuine.backend.encoder_id == sha256_of(model_dir / "encoder.onnx")
    reference = genuine.predict(image, box=BOX).mask
    tampered = clone(model_dir, tmp_path / "tampered")
    (tampered / "encoder.onnx").unlink()
    _negated_encoder(model_dir / "encoder.onnx", tampered / "encoder.onnx")
    edit_manifest(tampered, lambda data: data["files"].update(
        {"encoder.onnx": file_entry(tampered / "encoder.onnx", graph="encoder", precision="fp32")}))
    other = load(tampered, backend="ort", cache=str(shared))
    assert other.backend.encoder_id == sha256_of(tampered / "encoder.onnx") != genuine.backend.encoder_id
    assert not np.array_equal(other.predict(image, box=BOX).mask, reference)  # a different graph indeed
    fp16 = load(model_dir, backend="ort", precision="fp16", cache=str(shared)).backend.encoder_id
    assert len({genuine.backend.encoder_id, other.backend.encoder_id, fp16}) == 3
    assert np.array_equal(_mask(model_dir, image, str(shared)), reference)


def test_external_weights_are_verified_by_the_name_the_graph_loads_them_from(model_dir, image, tmp_path):
    """A graph over 2 GB loads its weights from ``<graph>.data`` beside it, whatever the manifest says. A folder
    keeping the genuine graph, with altered weights in ``encoder.onnx.data`` and the manifest's external data
    pointing at a genuine copy (or not listed at all), passed verification under the genuine key and poisoned a
    shared cache. Now it is refused, and the key covers the weights too."""
    from gmiseg_edge.core.files import sha256_of
    from gmiseg_edge.core.manifest import file_entry
    from gmiseg_edge.export.onnx_export import externalise_if_large

    pytest.importorskip("onnx")
    big = clone(model_dir, tmp_path / "big", real=("encoder.onnx",))
    assert externalise_if_large(big / "encoder.onnx", limit=1024)
    entry = file_entry(big / "encoder.onnx", graph="encoder", precision="fp32")
    entry["external_data"] = file_entry(big / "encoder.onnx.data", file="encoder.onnx.data")
    edit_manifest(big, lambda data: data["files"].update({"encoder.onnx": entry}))
    shared = tmp_path / "shared-cache"
    genuine = load(big, backend="ort", cache=EmbeddingCache(max_bytes=0))
    reference = genuine.predict(image, box=BOX).mask

    attack = clone(big, tmp_path / "attack")
    (attack / "encoder.onnx.data").unlink()
    shutil.copy(big / "encoder.onnx.data", attack / "decoy.data")
    (attack / "encoder.onnx.data").write_bytes(bytes((big / "encoder.onnx.data").stat().st_size))  # zeroed weights
    decoy = dict(entry, external_data=file_entry(attack / "decoy.data", file="decoy.data"))
    unlisted = {k: v for k, v in entry.items() if k != "external_data"}
    refused = []
    for forged in (decoy, unlisted):
        edit_manifest(attack, lambda data, e=forged: data["files"].update({"encoder.onnx": e}))
        try:
            _mask(attack, image, str(shared))
        except ManifestError as exc:
            refused.append(str(exc))
    assert np.array_equal(_mask(big, image, str(shared)), reference)  # the shared cache was not poisoned
    assert genuine.backend.encoder_id not in (entry["sha256"], sha256_of(model_dir / "encoder.onnx"))
    assert len(refused) == 2 and "must be 'encoder.onnx.data'" in refused[0] and "not listed" in refused[1]
