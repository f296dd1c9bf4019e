"""The manifest's ``tasks`` section (DESIGN §11): optional, names checked, task files verified by sha256."""

from __future__ import annotations

import json

import pytest

from gmiseg_edge.core.errors import ManifestError
from gmiseg_edge.core.manifest import MANIFEST, TASKS_DIR, Manifest, check_task_name, file_entry
from tests.core.test_manifest import _write_folder


def _add_task(manifest: Manifest, task: str = "liver") -> None:
    folder = manifest.folder / TASKS_DIR
    folder.mkdir(exist_ok=True)
    (folder / f"{task}.onnx").write_bytes(b"a decoder")
    (folder / f"{task}.safetensors").write_bytes(b"an adapter")
    manifest.record_task(task, {"files": {
        "decoder": file_entry(folder / f"{task}.onnx", file=f"{task}.onnx"),
        "adapter": file_entry(folder / f"{task}.safetensors", file=f"{task}.safetensors")}})
    manifest.save()


def test_a_folder_without_tasks_loads_and_has_none(tmp_path):
    manifest = _write_folder(tmp_path / "m")
    assert "tasks" not in json.loads((tmp_path / "m" / MANIFEST).read_text())
    assert Manifest.load(tmp_path / "m").tasks() == {}
    with pytest.raises(ManifestError, match=r"no task 'liver' \(tasks present: none\)"):
        manifest.task_entry("liver")


def test_task_files_are_listed_and_verified(tmp_path):
    _add_task(_write_folder(tmp_path / "m"))
    manifest = Manifest.load(tmp_path / "m")
    path, sha = manifest.verify_task_file("liver", "decoder")
    assert path == tmp_path / "m" / "decoders" / "liver.onnx" and len(sha) == 64
    with pytest.raises(ManifestError, match="already exists"):
        manifest.record_task("liver", manifest.task_entry("liver"))
    path.write_bytes(b"a decoder, altered")
    with pytest.raises(ManifestError, match=r"decoders/liver.onnx: sha256 differs"):
        manifest.verify_task_file("liver", "decoder")


@pytest.mark.parametrize("name", ["", "Liver", "../x", "a/b", "-x", "x" * 65, 3])
def test_bad_task_names_are_refused(name):
    with pytest.raises(ManifestError, match="task name"):
        check_task_name(name)


@pytest.mark.parametrize("name", ["con", "prn", "aux", "nul", "com1", "com0", "lpt9"])
def test_task_names_that_windows_reserves_are_refused(name):
    """Issue 26: the task name 'con' was accepted (its decoders/con.onnx cannot be made on Windows)."""
    with pytest.raises(ManifestError, match=rf"task name '{name}' is a device name on Windows"):
        check_task_name(name)


@pytest.mark.parametrize("name", ["console", "com10", "nuls", "lpt", "aux-liver"])
def test_task_names_near_the_reserved_ones_are_kept(name):
    assert check_task_name(name) == name


@pytest.mark.parametrize(("task", "field", "value"), [
    ("liver", "file", "../encoder.onnx"), ("liver", "file", "/etc/passwd"), ("../up", "file", "x.onnx")])
def test_a_manifest_whose_tasks_point_outside_is_refused(tmp_path, task, field, value):
    _add_task(_write_folder(tmp_path / "m"))
    data = json.loads((tmp_path / "m" / MANIFEST).read_text())
    entry = data["tasks"].pop("liver")
    entry["files"]["decoder"][field] = value
    data["tasks"][task] = entry
    (tmp_path / "m" / MANIFEST).write_text(json.dumps(data))
    with pytest.raises(ManifestError, match=r"task name|plain file name"):
        Manifest.load(tmp_path / "m")
