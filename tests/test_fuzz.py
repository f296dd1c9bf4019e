"""Fuzzing the trust boundaries (bounded): readers of every supported format and the manifest parser give a
valid result or one clear error (a GmisegError), never another exception or a traceback."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import numpy as np
import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from gmiseg_edge.core.errors import GmisegError  # noqa: E402
from gmiseg_edge.core.manifest import MANIFEST, Manifest  # noqa: E402
from gmiseg_edge.data import read_image, sample_data_dir  # noqa: E402

FUZZ = settings(max_examples=60, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
SUFFIXES = (".png", ".jpg", ".tif", ".nii", ".nii.gz", ".nrrd")
SEEDS = {  # real files whose bytes are mutated: the fuzzer starts from valid headers
    ".png": None, ".tif": sample_data_dir() / "stardist" / "img2d.tif",
    ".nrrd": sample_data_dir() / "pyradiomics" / "breast1_image.nrrd",
    ".nii.gz": sample_data_dir() / "totalsegmentator" / "example_seg.nii.gz",
}


def _read(data: bytes, suffix: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"fuzz{suffix}"
        path.write_bytes(data)
        try:
            image = read_image(path)
        except GmisegError as exc:
            assert str(path) in str(exc), f"the error does not name the file: {exc}"
            return
        assert isinstance(image.array, np.ndarray) and image.array.size > 0


@FUZZ
@given(data=st.binary(max_size=2048), suffix=st.sampled_from(SUFFIXES))
def test_random_bytes_are_read_or_refused_clearly(data, suffix):
    _read(data, suffix)


@FUZZ
@given(suffix=st.sampled_from([s for s, p in SEEDS.items() if p is not None]), cut=st.integers(0, 4000),
       flips=st.lists(st.tuples(st.integers(0, 3999), st.integers(0, 255)), max_size=8))
def test_mutated_real_files_are_read_or_refused_clearly(suffix, cut, flips):
    data = bytearray(SEEDS[suffix].read_bytes()[: max(cut, 1) * 64])
    for position, value in flips:
        if position < len(data):
            data[position] = value
    _read(bytes(data), suffix)


JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=12),
                    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner,
                                                                                 max_size=4), max_leaves=20)
VALID = {
    "format": "gmiseg-edge-model", "format_version": 1,
    "model": {"name": "lite_medsam", "input_size": 256,
              "preprocess": {"input_size": 256, "normalization": "minmax", "pixel_mean": [0, 0, 0],
                             "pixel_std": [1, 1, 1]}},
    "graphs": {"fp32": {"encoder": "encoder.onnx", "decoder": "decoder.onnx"}}, "files": {},
    "validation": {"fp32": {"passed": True}}, "base_checkpoint": {}, "adapter": None, "engines": {}, "versions": {},
}


@FUZZ
@given(key=st.sampled_from(sorted(VALID)), value=JSON, extra=st.dictionaries(st.text(max_size=8), JSON, max_size=2))
def test_manifests_with_any_field_replaced_load_or_name_the_problem(tmp_path, key, value, extra):
    data = json.loads(json.dumps(VALID)) | {key: value} | extra
    (tmp_path / MANIFEST).write_text(json.dumps(data))
    try:
        manifest = Manifest.load(tmp_path)
    except GmisegError:
        return
    for precision in manifest.precisions():  # what the runtime asks next must also be clear
        try:
            manifest.graph_path("encoder", precision)
            manifest.validation(precision)
        except GmisegError:
            pass


@FUZZ
@given(text=st.text(max_size=200))
def test_any_manifest_text_loads_or_names_the_problem(tmp_path, text):
    (tmp_path / MANIFEST).write_text(text)
    try:
        Manifest.load(tmp_path)
    except GmisegError as exc:
        assert str(tmp_path) in str(exc)
