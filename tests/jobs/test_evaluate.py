"""gmiseg-edge eval on the shipped samples with a real exported folder: metrics, seeds, files, reference."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from gmiseg_edge.cli import app
from gmiseg_edge.core.manifest import ManifestError
from gmiseg_edge.data import DataError
from gmiseg_edge.jobs.evaluate import EvalConfig, evaluate, folder_eval_cases, sample_eval_cases, support_cases

runner = CliRunner()
SCANS = ("brain1", "brain2", "breast1", "lung1", "lung2", "totalseg_abdomen")  # 9 cases on 6 images: quick


@pytest.fixture(scope="module")
def model_dir(exported_models) -> Path:
    return exported_models("lite_medsam").folder


def test_a_dataset_folder_is_read_by_the_support_set_reader(tmp_path):
    """Every case may support the others, so a folder is read as a support set (data.support_sets): every non-zero
    value counts unless dataset.json names one; a case without the structure is refused, naming its mask."""
    import cv2
    import numpy as np

    root = tmp_path / "set"
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    labels = np.zeros((40, 50), np.uint8)
    labels[5:15, 5:20], labels[25:35, 30:45] = 1, 4
    for stem in ("a", "b"):
        cv2.imwrite(str(root / "images" / f"{stem}.png"), np.full((40, 50), 90, np.uint8))
        cv2.imwrite(str(root / "masks" / f"{stem}.png"), labels)
    cases = folder_eval_cases(root)
    assert [(c.name, c.scan, c.group) for c in cases] == [("a", "a", "set"), ("b", "b", "set")]
    np.testing.assert_array_equal(cases[0].mask, labels != 0)
    (root / "dataset.json").write_text(json.dumps([{"image": "images/a.png", "mask": "masks/a.png", "label": 4}]))
    (only,) = folder_eval_cases(root)
    np.testing.assert_array_equal(only.mask, labels == 4)
    (root / "dataset.json").unlink()
    cv2.imwrite(str(root / "masks" / "b.png"), np.zeros((40, 50), np.uint8))
    with pytest.raises(DataError, match="mask is empty") as info:
        folder_eval_cases(root)
    assert str(root / "masks" / "b.png") in str(info.value)


def test_sample_cases_one_per_nucleus():
    cases = sample_eval_cases()
    nuclei = [c for c in cases if c.scan == "dsb_nuclei"]
    assert len(nuclei) > 20 and all(c.instance and c.group.endswith("/instances") for c in nuclei)
    assert all(c.mask.any() and c.image.dtype.name == "uint8" for c in cases)


def test_eval_box_rows_and_seed(model_dir):
    from gmiseg_edge.runtime import EmbeddingCache

    scans = ("lung2", "totalseg_abdomen")  # 5 cases on 3 images (the organs' largest slices differ)
    cache = EmbeddingCache()  # shared by the three evaluations: each image is encoded once
    first = evaluate(EvalConfig(model_dir, prompt="box", seed=0, cases=scans), cache=cache)
    encoded = cache.stats.encoder_runs
    assert 1 <= encoded <= 5
    cases = first.cases
    assert len(cases) == 5
    assert all(0.0 <= c.scores.dice <= 1.0 and 0.0 <= c.scores.jaccard <= 1.0 for c in cases)
    assert set(first.summary) == {"all", "totalsegmentator CT", "pyradiomics-bhklab CT"}
    assert first.summary["all"]["n"] == 5 and first.summary["all"]["dice"]["mean"] > 0.7
    again = evaluate(EvalConfig(model_dir, prompt="box", seed=0, cases=scans), cache=cache)
    assert [c.row() for c in again.cases] == [c.row() for c in cases]
    other = evaluate(EvalConfig(model_dir, prompt="box", seed=1, cases=scans), cache=cache)
    assert cache.stats.encoder_runs == encoded  # the repeats decoded on cached embeddings
    assert sum(a.prompt_detail != b.prompt_detail for a, b in zip(cases, other.cases, strict=True)) > len(cases) // 2
    assert [c.row()["dice"] for c in other.cases] != [c.row()["dice"] for c in cases]


def test_eval_command_writes_csv_and_json(model_dir, tmp_path, sample_embedding_cache):
    csv_path, json_path = tmp_path / "e.csv", tmp_path / "e.json"
    result = runner.invoke(app, ["eval", "--model-dir", str(model_dir), "--data", "samples", "--prompt", "points",
                                 "--seed", "3", "--cases", ",".join(SCANS), "--csv", str(csv_path),
                                 "--json", str(json_path), "--cache-dir", str(sample_embedding_cache)])
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(csv_path.open()))
    data = json.loads(json_path.read_text())
    assert len(rows) == len(data["cases"]) == 9
    assert {"case", "dataset", "dice", "jaccard", "asd", "hd95"} <= set(rows[0])
    assert data["config"]["prompt"] == "points" and rows[0]["prompt_detail"].startswith("points=")
    assert "lung2/lesion" in result.output and "mean ± std" in result.output
    assert data["config"]["cache_dir"] == str(sample_embedding_cache)
    assert any(sample_embedding_cache.rglob("*.emb"))  # the images went into the shared disk cache


def test_eval_support_leave_one_case_out(model_dir, sample_embedding_cache):
    cases = sample_eval_cases()
    config = EvalConfig(model_dir, prompt="support", cases=SCANS, cache_dir=sample_embedding_cache)
    for index, case in enumerate(cases):
        assert all(s.name != case.name and (s.instance or s.scan != case.scan) for s in support_cases(cases, index,
                                                                                                       config))
    result = evaluate(config)
    scored = [c for c in result.cases if c.scores is not None]
    assert scored and all(0.0 <= c.scores.dice <= 1.0 for c in scored)
    assert any(c.note.startswith("no support") for c in result.cases)  # the abdomen organs stand alone


@pytest.mark.extended  # torch vs ONNX agreement is tested once (tests/runtime/test_predictor.py): a repeat
def test_eval_reference_torch_agreement(model_dir):
    pytest.importorskip("torch")
    result = evaluate(EvalConfig(model_dir, prompt="box", seed=0, reference="torch", cases=("lung2", "brain1")))
    assert max(c.agreement for c in result.cases) >= 0.999


def test_eval_refuses_failed_validation(model_dir, tmp_path):
    folder = tmp_path / "bad"
    shutil.copytree(model_dir, folder)
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["validation"]["fp16"].update(passed=False, failures=["mask Dice 0.42 < 0.99"])
    (folder / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ManifestError, match=r"failed validation.*0\.42"):
        evaluate(EvalConfig(folder, precision="fp16"))
    result = runner.invoke(app, ["eval", "--model-dir", str(folder), "--precision", "fp16"])
    assert result.exit_code == 1 and "0.42" in result.output


def test_eval_cli_prints_prompt_kinds_side_by_side(model_dir, tmp_path, sample_embedding_cache):
    out = runner.invoke(app, ["eval", "--model-dir", str(model_dir), "--prompt", "box,propagate", "--cases",
                              "lung2", "--json", str(tmp_path / "e.json"), "--csv", str(tmp_path / "e.csv"),
                              "--cache-dir", str(sample_embedding_cache)])
    assert out.exit_code == 0, out.output
    assert "box prompts" in out.output and "propagate prompts" in out.output
    data = json.loads((tmp_path / "e.json").read_text())
    assert set(data) == {"box", "propagate"}
    with open(tmp_path / "e.csv", newline="") as handle:
        assert {row["prompt"] for row in csv.DictReader(handle)} == {"box", "propagate"}
    # propagate scores the whole volume in 3D (one propagation shared with the side-by-side check: CI time)
    (case,) = data["propagate"]["cases"]
    assert case["case"] == "lung2/lesion" and case["dice"] > 0.8  # measured 0.883 (seed 0)
    assert 0.0 < case["nsd"] <= 1.0 and "down:" in case["note"]  # NSD is a column now (issue 14), not a note
    assert data["propagate"]["summary"]["all"]["n"] == 1
