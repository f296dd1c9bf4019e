"""``gmiseg-edge segment`` on batches with bad inputs, and on bad paths: every good input gets its mask, every
bad one a one-line reason naming it, and never a traceback."""

from __future__ import annotations

import json

import cv2
import nrrd
import numpy as np
import pytest
from typer.testing import CliRunner

from gmiseg_edge.cli import app
from gmiseg_edge.core.prompts import box_from_mask
from gmiseg_edge.data import load_sample_cases

runner = CliRunner()


@pytest.fixture(scope="module")
def model_dir(exported_models):
    return exported_models("lite_medsam").folder


@pytest.fixture(scope="module")
def case():
    sample = load_sample_cases(["lung1"])[0]
    return sample.image, ",".join(str(int(v)) for v in box_from_mask(sample.mask))


def _segment(model_dir, *args: str):
    return runner.invoke(app, ["segment", "--model-dir", str(model_dir), "--backend", "ort", *args])


def _one_line_naming(result, path) -> None:
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output, result.output
    lines = [line for line in result.output.splitlines() if str(path) in line]
    assert lines and lines[0].startswith("error:"), result.output


def test_a_batch_writes_every_good_mask_and_reports_the_bad(model_dir, case, tmp_path):
    image, box = case
    folder = tmp_path / "in"
    folder.mkdir()
    for name in ("a.png", "b.png", "c.png", "x.png"):
        cv2.imwrite(str(folder / name), image)
    cv2.imwrite(str(folder / "x.jpg"), image)  # x.png and x.jpg would both write x_mask.png
    (folder / "empty.png").write_bytes(b"")
    (folder / "garbage.png").write_bytes(np.random.default_rng(0).integers(0, 256, 500, np.uint8).tobytes())
    (folder / "notes.png").write_text("not an image\n")
    out = tmp_path / "out"
    result = _segment(model_dir, "--input", str(folder), "--box", box, "--out", str(out))
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    written = sorted(p.name for p in out.glob("*_mask.png"))
    assert written == ["a_mask.png", "b_mask.png", "c_mask.png", "x_jpg_mask.png", "x_png_mask.png"]
    for name in written:
        assert cv2.imread(str(out / name), cv2.IMREAD_UNCHANGED).shape == image.shape
    assert "3 input(s) failed" in result.output and "5 of 8 written" in result.output
    for bad in ("empty.png", "garbage.png", "notes.png"):
        assert bad in result.output
    report = json.loads((out / "segment_report.json").read_text())
    assert (report["inputs"], report["written"], report["failed"]) == (8, 5, 3)
    status = {r["image"].rsplit("/", 1)[-1]: r for r in report["files"]}
    assert status["empty.png"]["status"] == "failed" and "empty (0 bytes)" in status["empty.png"]["error"]
    assert status["garbage.png"]["output"] is None and "garbage.png" in status["garbage.png"]["error"]
    assert status["x.jpg"]["status"] == "ok" and status["x.jpg"]["output"].endswith("x_jpg_mask.png")


def test_bad_paths_are_one_line_errors(model_dir, case, tmp_path):
    image, box = case
    good = tmp_path / "good.png"
    cv2.imwrite(str(good), image)
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    _one_line_naming(_segment(model_dir, "--image", str(empty), "--box", box, "--out", str(tmp_path / "o1")), empty)
    _one_line_naming(_segment(model_dir, "--input", str(good), "--box", box, "--out", str(tmp_path / "o2")), good)
    _one_line_naming(_segment(model_dir, "--image", str(good), "--box", box, "--out", str(good)), good)
    unwritable = good / "out"  # below a file: cannot be created, whoever runs the test (root too)
    _one_line_naming(_segment(model_dir, "--image", str(good), "--box", box, "--out", str(unwritable)), unwritable)
    volume = tmp_path / "flat_origin.nrrd"
    nrrd.write(str(volume), np.zeros((16, 16, 2), np.uint8), {"space": "left-posterior-superior",
                                                             "space directions": np.eye(3),
                                                             "space origin": np.array([1.0, 2.0, 3.0])})
    volume.write_bytes(volume.read_bytes().replace(b"space origin: (1,2,3)", b"space origin: (1,2)"))
    result = _segment(model_dir, "--image", str(volume), "--box", "1,1,8,8", "--slice", "0",
                      "--out", str(tmp_path / "o3"))
    _one_line_naming(result, volume)
    assert "space origin" in result.output


def test_an_unusable_cache_folder_is_a_warning_and_the_run_goes_on(model_dir, case, tmp_path):
    image, box = case
    good = tmp_path / "good.png"
    cv2.imwrite(str(good), image)
    cache = good / "cache"  # below a file: not usable
    result = _segment(model_dir, "--image", str(good), "--box", box, "--out", str(tmp_path / "out"),
                      "--cache-dir", str(cache))
    assert result.exit_code == 0, result.output
    assert "warning:" in result.output and str(cache) in result.output and "Traceback" not in result.output
    assert (tmp_path / "out" / "good_mask.png").is_file()
