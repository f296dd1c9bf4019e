"""gmiseg-edge bench on a real exported folder (ONNX Runtime CPU), its refusals, and its torch-free import."""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from gmiseg_edge.cli import app
from gmiseg_edge.jobs.bench import STAGES, BenchConfig, run_bench
from tests.no_torch import run_without_torch

runner = CliRunner()


@pytest.fixture(scope="module")
def model_dir(exported_models) -> Path:
    return exported_models("lite_medsam").folder


def _fail_validation(source: Path, target: Path, precision: str) -> Path:
    shutil.copytree(source, target)
    manifest = json.loads((target / "manifest.json").read_text())
    manifest["validation"][precision]["passed"] = False
    manifest["validation"][precision]["failures"] = ["mask Dice 0.42 < 0.99 (edited by the test)"]
    (target / "manifest.json").write_text(json.dumps(manifest))
    return target


def test_bench_command_writes_every_field(model_dir, tmp_path):
    out = tmp_path / "bench.json"
    result = runner.invoke(app, ["bench", "--model-dir", str(model_dir), "--runs", "2", "--warmup", "0",
                                 "--threads", "1", "--no-torch", "--json", str(out), "--plot", str(tmp_path / "b.png")])
    assert result.exit_code == 0, result.output
    data = json.loads(out.read_text())
    rows = {row["label"]: row for row in data["rows"]}
    assert set(rows) == {"auto fp32", "auto fp16", "auto int8"}
    assert rows["auto int8"]["status"] == "failed to export" and not rows["auto int8"]["stats_ms"]
    for label in ("auto fp32", "auto fp16"):
        row = rows[label]
        assert row["status"] == "passed" and row["detail"]
        assert set(row["stats_ms"]) == set(STAGES)
        for stats in row["stats_ms"].values():
            assert 0 < stats["min"] <= stats["p50"] <= stats["p90"] <= stats["p99"] <= stats["max"]
        assert row["throughput"]["images_per_s"] > 0 and row["throughput"]["prompts_per_s"] > 0
        assert row["cold_over_cached"] > 1  # the cached prompt skips the encoder
        assert row["model_bytes"] > 1e6
    assert rows["auto fp16"]["model_bytes"] < rows["auto fp32"]["model_bytes"]
    env = data["environment"]
    assert env["cpu"] and env["cores_logical"] >= 1 and env["threads"] == 1 and "onnxruntime" in env["libraries"]
    assert data["peak_rss_mib"] > 50 and "ru_maxrss" in data["peak_rss_measures"]
    ratios = {r["variant"]: r for r in data["ratios"]}
    assert set(ratios) == {"auto fp32", "auto fp16"}
    assert ratios["auto fp16"]["encoder_speedup_vs_torch_eager"] is None  # no torch column in this run
    assert ratios["auto fp32"]["encoder_speedup_vs_fp32"] == pytest.approx(1.0)
    assert "cached prompt / cold" in result.output
    assert "plot:" in result.output  # written, or "not available" without matplotlib
    if importlib.util.find_spec("matplotlib") is not None:
        import cv2

        plot = cv2.imread(str(tmp_path / "b.png"))
        assert plot is not None and plot.shape[0] > 100 and plot.shape[1] > 100


def test_bench_refuses_failed_validation(model_dir, tmp_path):
    folder = _fail_validation(model_dir, tmp_path / "bad", "fp16")
    result = run_bench(BenchConfig(folder, precisions=("fp32", "fp16"), warmup=0, runs=1, threads=1,
                                   torch_reference=False))
    fp32, fp16 = result.rows
    assert fp32.status == "passed" and fp32.timed
    assert fp16.status == "failed accuracy" and not fp16.timed and "0.42" in fp16.reason


@pytest.mark.extended  # PyTorch eager timed beside the graphs: a repeat of the bench path with torch
def test_bench_torch_reference_column(model_dir):
    pytest.importorskip("torch")
    result = run_bench(BenchConfig(model_dir, backends=("ort",), precisions=("fp32",), warmup=0, runs=1, threads=1))
    labels = {row.label: row for row in result.rows}
    assert labels["torch fp32"].timed and labels["ort fp32"].timed
    assert "torch" in labels["torch fp32"].detail
    ratios = {r["variant"]: r for r in result.ratios()}
    ort_row, torch_row = labels["ort fp32"].stats(), labels["torch fp32"].stats()
    want = torch_row["encoder"]["p50"] / ort_row["encoder"]["p50"]
    assert ratios["ort fp32"]["encoder_speedup_vs_torch_eager"] == pytest.approx(want)
    assert ratios["ort fp32"]["encoder_speedup_vs_fp32"] == pytest.approx(1.0)
    assert ratios["torch fp32"]["encoder_speedup_vs_torch_eager"] == pytest.approx(1.0)
    share = ort_row["cached_prompt"]["p50"] / ort_row["cold_prompt"]["p50"]
    assert ratios["ort fp32"]["cached_prompt_share_of_cold"] == pytest.approx(share) and 0 < share < 1


def test_bench_and_eval_import_and_run_without_torch(model_dir):
    proc = run_without_torch(f"""
        import sys
        import gmiseg_edge.jobs.bench, gmiseg_edge.jobs.bench.report, gmiseg_edge.jobs.evaluate
        from gmiseg_edge.jobs.bench import BenchConfig, run_bench
        result = run_bench(BenchConfig({str(model_dir)!r}, precisions=("fp32",), warmup=0, runs=1, threads=1))
        assert [row.label for row in result.rows] == ["auto fp32"], result.rows
        assert "torch" not in sys.modules
        print("ok")
    """)
    assert "ok" in proc.stdout


def _fp32_only(source: Path, target: Path) -> Path:
    shutil.copytree(source, target)
    manifest = json.loads((target / "manifest.json").read_text())
    del manifest["graphs"]["fp16"]
    (target / "manifest.json").write_text(json.dumps(manifest))
    return target


def test_bench_that_measures_nothing_is_an_error(model_dir, tmp_path):
    folder = _fp32_only(model_dir, tmp_path / "fp32_only")
    result = runner.invoke(app, ["bench", "--model-dir", str(folder), "--precision", "fp16", "--runs", "1",
                                 "--warmup", "0", "--threads", "1"])
    assert result.exit_code == 1, result.output
    assert "nothing measured" in result.output and "no fp16 graphs" in result.output
    assert "--fp16" in result.output and "Traceback" not in result.output
    failed = _fail_validation(model_dir, tmp_path / "bad", "fp16")  # present but failed its validation
    result = runner.invoke(app, ["bench", "--model-dir", str(failed), "--precision", "fp16", "--no-torch"])
    assert result.exit_code == 1 and "failed accuracy" in result.output and "0.42" in result.output, result.output
