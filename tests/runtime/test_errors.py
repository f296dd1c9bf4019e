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


@pytest.fixture(scope="module")
def model_dir(exported_models):
    return exported_models("lite_medsam").folder


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
        (np.zeros((64, 64), np.uint16), "normalise='percentile'"),
        (np.zeros((64, 64), np.float32), "not uint8"),
        (np.zeros((64, 64), bool), "dtype bool"),
    ],
)
def test_bad_images_are_refused(predictor, bad, message):
    with pytest.raises(InputError, match=re.escape(message)):
        predictor.predict(bad, box=[0, 0, 10, 10])


def test_sixteen_bit_images_are_accepted_with_a_normalisation(predictor, image):
    ct_like = image.astype(np.int16) * 8 - 1000  # HU-like int16
    prediction = predictor.predict(ct_like, box=[200, 330, 240, 380], normalise="percentile")
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
