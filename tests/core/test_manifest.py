"""The manifest's one reader and writer: schema errors name the field, files are verified, engines recorded."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import pytest

from gmiseg_edge.core.errors import ManifestError
from gmiseg_edge.core.manifest import MANIFEST, Manifest, file_entry, graph_filename
from gmiseg_edge.core.transforms import PreprocessConfig


def _write_folder(folder: Path) -> Manifest:
    folder.mkdir(parents=True, exist_ok=True)
    files = {}
    for graph in ("encoder", "decoder"):
        name = graph_filename(graph, "fp32")
        (folder / name).write_bytes(f"not a real {graph} graph".encode())
        files[name] = file_entry(folder / name, graph=graph, precision="fp32")
    manifest = Manifest.create(
        folder, model_name="lite_medsam", preprocess=PreprocessConfig(256, "minmax"),
        base_checkpoint={"file": "lite_medsam.pth", "sha256": "0" * 64}, adapter=None,
        graphs={"fp32": {"encoder": "encoder.onnx", "decoder": "decoder.onnx"}}, files=files,
        validation={"fp32": {"passed": True, "failures": []}}, versions={"gmiseg_edge": "test"},
    )
    manifest.save()
    return manifest


def test_created_manifest_round_trips(tmp_path):
    _write_folder(tmp_path / "m")
    manifest = Manifest.load(tmp_path / "m")
    assert manifest.model_name == "lite_medsam"
    assert manifest.preprocess == PreprocessConfig(256, "minmax")
    assert manifest.precisions() == ["fp32"]
    assert manifest.graph_path("decoder") == tmp_path / "m" / "decoder.onnx"
    assert manifest.adapter is None and manifest.base_checkpoint["file"] == "lite_medsam.pth"
    manifest.verify_files()
    assert manifest.file_sha256("encoder.onnx") == manifest.file_entry("encoder.onnx")["sha256"]


def test_file_sizes_names_and_a_copy_of_the_data_come_from_accessors(tmp_path):
    manifest = _write_folder(tmp_path / "m")
    assert manifest.file_names() == ["encoder.onnx", "decoder.onnx"]
    assert manifest.file_bytes("encoder.onnx") == len(b"not a real encoder graph")
    assert manifest.file_bytes("adapter.safetensors") is None  # not listed
    (tmp_path / "m" / "encoder.onnx.data").write_bytes(b"12345")  # weights of a graph over 2 GB
    manifest.file_entry("encoder.onnx")["external_data"] = file_entry(tmp_path / "m" / "encoder.onnx.data",
                                                                      file="encoder.onnx.data")
    assert manifest.file_bytes("encoder.onnx") == len(b"not a real encoder graph") + 5
    copy = manifest.to_dict()
    copy["files"].clear()
    assert manifest.file_names() == ["encoder.onnx", "decoder.onnx"]


def test_a_folder_written_by_version_one_exports_still_loads(tmp_path):
    """The JSON exactly as exports before the re-layering wrote it (format version 1)."""
    folder = tmp_path / "old"
    folder.mkdir()
    old = {
        "format": "gmiseg-edge-model", "format_version": 1, "created": "2026-11-24T10:00:00+00:00",
        "model": {"name": "mobile_sam", "input_size": 1024,
                  "preprocess": {"input_size": 1024, "normalization": "sam", "pixel_mean": [123.675, 116.28, 103.53],
                                 "pixel_std": [58.395, 57.12, 57.375]},
                  "embedding_shape": [256, 64, 64], "low_res_mask_shape": [256, 256]},
        "base_checkpoint": {"file": "mobile_sam.pt", "sha256": "1" * 64}, "adapter": None,
        "graphs": {"fp32": {"encoder": "encoder.onnx", "decoder": "decoder.onnx"}},
        "files": {}, "validation": {"fp32": {"passed": True}}, "engines": {}, "versions": {},
    }
    (folder / MANIFEST).write_text(json.dumps(old))
    manifest = Manifest.load(folder)
    assert manifest.model_name == "mobile_sam" and manifest.preprocess.input_size == 1024
    assert manifest.engines() == {}


@pytest.mark.parametrize(("mutate", "message"), [
    (lambda d: d.update(format_version=99), "format version 99 is not supported"),
    (lambda d: d.update(format="other"), "not a gmiseg-edge manifest"),
    (lambda d: d.pop("graphs"), "no 'graphs' section"),
    (lambda d: d.update(graphs=None), "section 'graphs' is NoneType"),
    (lambda d: d["model"].pop("preprocess"), "'model.preprocess' is malformed"),
    (lambda d: d["model"].update(name=3), "'model.name'"),
])
def test_malformed_manifests_are_one_clear_error_naming_the_field(tmp_path, mutate, message):
    _write_folder(tmp_path / "m")
    path = tmp_path / "m" / MANIFEST
    data = json.loads(path.read_text())
    mutate(data)
    path.write_text(json.dumps(data))
    with pytest.raises(ManifestError, match=message):
        Manifest.load(tmp_path / "m")


def test_a_manifest_that_is_a_list_is_refused(tmp_path):
    (tmp_path / MANIFEST).write_text("[1, 2]")
    with pytest.raises(ManifestError, match="not a gmiseg-edge manifest"):
        Manifest.load(tmp_path)


def test_verify_names_the_altered_and_the_unlisted_file(tmp_path):
    manifest = _write_folder(tmp_path / "m")
    (tmp_path / "m" / "decoder.onnx").write_bytes(b"tampered")
    with pytest.raises(ManifestError, match=r"decoder\.onnx: sha256 differs"):
        manifest.verify_files()
    with pytest.raises(ManifestError, match="not listed"):
        manifest.verify_files(["other.onnx"])


def test_engines_are_recorded_through_the_manifest(tmp_path):
    manifest = _write_folder(tmp_path / "m")
    engine = tmp_path / "m" / "encoder.fp16.engine"
    engine.write_bytes(b"engine bytes")
    manifest.record_engine(engine.name, file_entry(engine, graph="encoder", precision="fp16", gpu="Orin"))
    manifest.save()
    again = Manifest.load(tmp_path / "m")
    assert again.engines()["encoder.fp16.engine"]["gpu"] == "Orin"
    assert again.engines()["encoder.fp16.engine"]["bytes"] == len(b"engine bytes")


REDIRECTS = ["sub/encoder.onnx", "/tmp/encoder.onnx", "../x.onnx", "..", ".", "", "sub\\encoder.onnx", "C:x.onnx"]


@pytest.mark.parametrize("value", REDIRECTS)
@pytest.mark.parametrize(("field", "mutate"), [
    ("graphs.fp32.encoder", lambda d, v: d["graphs"]["fp32"].update(encoder=v)),
    ("files[", lambda d, v: d["files"].update({v: d["files"]["encoder.onnx"]})),
    ("external_data.file", lambda d, v: d["files"]["encoder.onnx"].update(
        external_data={"file": v, "sha256": "0" * 64, "bytes": 1})),
    ("engines[", lambda d, v: d["engines"].update({v: {"graph": "encoder", "sha256": "0" * 64}})),
    ("adapter.file", lambda d, v: d.update(adapter={"file": v, "sha256": "0" * 64, "config": {}})),
    ("base_checkpoint.file", lambda d, v: d["base_checkpoint"].update(file=v)),
])
def test_every_path_in_the_manifest_must_be_a_plain_name_in_the_folder(tmp_path, field, mutate, value):
    """A manifest naming a file outside the folder, or in a sub-folder, would load a file nothing verified (the
    files are verified by name): it is refused naming the field."""
    _write_folder(tmp_path / "m")
    path = tmp_path / "m" / MANIFEST
    data = json.loads(path.read_text())
    mutate(data, value)
    path.write_text(json.dumps(data))
    with pytest.raises(ManifestError, match=re.escape(field)):
        Manifest.load(tmp_path / "m")


def test_external_data_must_be_the_file_the_graph_loads(tmp_path):
    """ONNX Runtime loads a graph's external weights from ``<graph>.data`` whatever the manifest says: another
    listed name (verified in place of it), or an unlisted one beside the graph, is refused."""
    manifest = _write_folder(tmp_path / "m")
    folder = tmp_path / "m"
    (folder / "decoy.data").write_bytes(b"genuine weights")
    data = json.loads((folder / MANIFEST).read_text())
    data["files"]["encoder.onnx"]["external_data"] = file_entry(folder / "decoy.data", file="decoy.data")
    (folder / MANIFEST).write_text(json.dumps(data))
    with pytest.raises(ManifestError, match=r"external_data\.file.*must be 'encoder\.onnx\.data'"):
        Manifest.load(folder)
    (folder / "encoder.onnx.data").write_bytes(b"weights nothing verified")
    with pytest.raises(ManifestError, match=r"encoder\.onnx\.data: external data of encoder\.onnx not listed"):
        manifest.verify_files()


def test_identity_is_the_sha256_of_the_file_at_the_path_loaded(tmp_path):
    manifest = _write_folder(tmp_path / "m")
    path = manifest.graph_path("encoder")
    assert manifest.verify_path(path) == hashlib.sha256(path.read_bytes()).hexdigest()
    assert manifest.verify_files() == {n: manifest.verify_path(tmp_path / "m" / n) for n in manifest.file_names()}
    elsewhere = tmp_path / "other" / "encoder.onnx"  # a listed name, but not the folder's file
    elsewhere.parent.mkdir()
    elsewhere.write_bytes(path.read_bytes())
    with pytest.raises(ManifestError, match="not a file of the model folder"):
        manifest.verify_path(elsewhere)
    with pytest.raises(ManifestError, match="must be a plain file name"):
        manifest.file_path("sub/encoder.onnx")


@pytest.mark.parametrize(("edit", "words"), [
    (lambda d: d["validation"].update(fp32="passed"),
     r"field 'validation.fp32' is str \('passed'\), not an object"),
    (lambda d: d["validation"].update(fp32={"passed": False, "failures": 5}),
     r"field 'validation.fp32.failures' must be a list of strings, got 5"),
    (lambda d: d["validation"].update(fp32={"passed": "yes", "failures": []}),
     r"field 'validation.fp32.passed' must be true or false, got 'yes'"),
    (lambda d: d["model"]["preprocess"].update(input_size=1e9),
     r"field 'model.preprocess.input_size' must be a whole number of pixels from 16 to 4096, got 1000000000.0"),
    (lambda d: d["model"]["preprocess"].update(input_size=100000),
     r"field 'model.preprocess.input_size' .* got 100000"),
])
def test_manifest_fields_of_the_wrong_type_are_refused_naming_the_field(tmp_path, edit, words):
    """Issue 26: these gave AttributeError, TypeError and OpenCV's "Failed to allocate 4e18 bytes"."""
    _write_folder(tmp_path / "m")
    path = tmp_path / "m" / MANIFEST
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data))
    with pytest.raises(ManifestError, match=rf"{re.escape(str(path))}: manifest {words}"):
        Manifest.load(tmp_path / "m")
