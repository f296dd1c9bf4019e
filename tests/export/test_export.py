"""Export: ONNX graphs validated against PyTorch, FP16, merged adapters, manifest, bad input, atomicity."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import VALIDATION_SCANS, killed_runs_staging, require_weights

torch = pytest.importorskip("torch")
pytest.importorskip("onnxruntime")

from gmiseg_edge.core.errors import ManifestError  # noqa: E402
from gmiseg_edge.core.manifest import Manifest  # noqa: E402
from gmiseg_edge.export.pipeline import ExportError, ExportOptions, export_model  # noqa: E402


def _random_adapter(name: str, path: Path, seed: int = 0) -> Path:
    """A Loose LoRA adapter with non-zero B (a zero-initialised one would make the merge trivial)."""
    from gmiseg_edge.adapters import AdapterConfig, inject_adapters, save_adapter
    from gmiseg_edge.models.build import build_model, checkpoint_sha256

    model = build_model(name)
    inject_adapters(model, AdapterConfig(kind="loose_lora", rank=4))
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for key, param in model.named_parameters():
            if key.endswith(".B"):
                param.copy_(torch.randn(param.shape, generator=generator) * 0.02)
    return save_adapter(path, model, base_model_name=name, base_sha256=checkpoint_sha256(name))


ADAPTED = "lite_medsam"  # the merge is the same maths on every model: one model's merged export is checked (CI time)


@pytest.fixture(scope="module", params=["lite_medsam", pytest.param("mobile_sam", marks=pytest.mark.extended)])
def exported(request, exported_models):
    """Each model's shared base export (fp32 + fp16); mobile_sam's (its export alone ~2 min in CI) is the same
    path on a second model: ``extended``."""
    name = request.param
    return name, exported_models(name)


@pytest.fixture(scope="module")
def merged(tmp_path_factory, exported_models):
    """``ADAPTED``'s base export and its export with a merged Loose LoRA adapter (fp32)."""
    base = exported_models(ADAPTED)
    root = tmp_path_factory.mktemp(f"export-{ADAPTED}")
    adapter = _random_adapter(ADAPTED, root / "loose.safetensors")
    return base, export_model(ExportOptions(model=ADAPTED, out=root / "merged", adapter=adapter,
                                            validation_cases=MERGED_SCANS))


MERGED_SCANS = ["brain1", "breast1", "lung2", "dsb_nuclei"]  # one scan per modality (the base export: every case)


def _fp32_agrees(name: str, result, scans: list[str] | None = None) -> None:
    report = result.reports["fp32"]
    print(f"{name} {result.folder.name}: embedding max abs {report.embedding_max_abs:.2e}, "
          f"min mask Dice {report.mask_dice_min:.4f} over {len(report.cases)} cases")
    assert report.embedding_max_abs <= 1e-3
    assert all(c.mask_dice >= 0.999 for c in report.cases)
    scans = scans or VALIDATION_SCANS.get(name)
    if scans is None:
        assert len(report.cases) >= 10
    else:
        assert {c.case.split("/")[0] for c in report.cases} == set(scans)


def test_fp32_graphs_agree_with_pytorch_on_every_sample_case(exported):
    name, base = exported
    _fp32_agrees(name, base)


def test_fp16_graphs_agree_and_stay_finite(exported):
    name, base = exported
    report = base.reports["fp16"]
    print(f"{name} fp16: min mask Dice vs fp32 PyTorch {report.mask_dice_min:.4f}")
    assert all(c.finite for c in report.cases)
    assert report.mask_dice_min >= 0.99


def test_merged_graph_agrees_and_has_the_base_graphs_nodes_and_size(merged):
    base, merged = merged
    _fp32_agrees(ADAPTED, merged, MERGED_SCANS)
    for graph in ("encoder.onnx", "decoder.onnx"):
        b, m = base.manifest["files"][graph], merged.manifest["files"][graph]
        assert m["nodes"] == b["nodes"]
        assert m["bytes"] == b["bytes"]
        assert m["sha256"] != b["sha256"] or graph == "decoder.onnx"  # the encoder weights really changed
    assert merged.manifest["adapter"]["merged"] is True
    assert merged.manifest["adapter"]["config"]["kind"] == "loose_lora"


def test_torch_backend_rebuilds_the_merged_adapter_and_matches_the_onnx_graphs(merged):
    """The exported folder carries the adapter; the torch backend re-applies it and agrees with ONNX Runtime."""
    from gmiseg_edge.core.prompts import box_from_mask
    from gmiseg_edge.data import load_sample_cases
    from gmiseg_edge.metrics import dice
    from gmiseg_edge.runtime import load

    name = ADAPTED
    base, merged = merged
    assert (merged.folder / merged.manifest["adapter"]["file"]).is_file()
    manifest = Manifest.load(merged.folder)
    manifest.verify_files()
    adapted_torch, adapted_ort = load(merged.folder, backend="torch"), load(merged.folder, backend="ort")
    base_torch = load(base.folder, backend="torch")
    for case in load_sample_cases(["lung2"]):  # one case: the same maths on every image (CI time)
        box = box_from_mask(case.mask)
        encoded = [p.encode(case.image).embedding for p in (adapted_torch, adapted_ort, base_torch)]
        agree, change = (float(np.abs(encoded[0] - e).max()) for e in encoded[1:])
        # torch rebuild == merged ONNX graph (float32 noise ~3e-6), and the adapter did change the encoder
        # (the random adapter moves embeddings by more than 1e-3: ~3e-3 on mobile_sam, more on lite_medsam)
        assert agree <= 1e-4 and change >= 1e-3, (name, case.name, agree, change)
        masks = [p.predict(case.image, box=box).mask for p in (adapted_torch, adapted_ort)]
        assert dice(masks[0], masks[1]) >= 0.999, (name, case.name)


def test_manifest_records_what_the_design_asks(exported):
    name, base = exported
    manifest = Manifest.load(base.folder)
    data = json.loads((base.folder / "manifest.json").read_text())
    assert data["model"]["name"] == name and data["model"]["embedding_shape"] == [256, 64, 64]
    assert manifest.precisions() == ["fp32", "fp16"]
    assert set(data["files"]) == {"encoder.onnx", "decoder.onnx", "encoder.fp16.onnx", "decoder.fp16.onnx"}
    assert data["validation"]["fp32"]["passed"] and data["validation"]["fp16"]["passed"]
    for key in ("gmiseg_edge", "torch", "onnx", "onnxruntime", "opset"):
        assert data["versions"][key]
    manifest.verify_files()
    assert not list(base.folder.parent.glob(f".{base.folder.name}.partial-*"))


def test_graphs_have_the_contracted_io_and_dynamic_axes(exported):
    import onnxruntime as ort

    _, base = exported
    enc = ort.InferenceSession(str(base.folder / "encoder.onnx"), providers=["CPUExecutionProvider"])
    dec = ort.InferenceSession(str(base.folder / "decoder.onnx"), providers=["CPUExecutionProvider"])
    assert [i.name for i in enc.get_inputs()] == ["image"]
    assert [o.name for o in enc.get_outputs()] == ["image_embeddings"]
    assert [i.name for i in dec.get_inputs()] == [
        "image_embeddings", "point_coords", "point_labels", "mask_input", "has_mask_input"
    ]
    assert [o.name for o in dec.get_outputs()] == ["low_res_masks", "iou_predictions"]
    size = enc.get_inputs()[0].shape[2]
    (emb,) = enc.run(None, {"image": np.zeros((2, 3, size, size), np.float32)})
    assert emb.shape == (2, 256, 64, 64)
    for k, n in ((1, 1), (1, 2), (1, 5), (1, 16), (3, 2), (4, 3)):  # K objects of N points, one embedding
        masks, iou = dec.run(None, {
            "image_embeddings": emb[:1], "point_coords": np.full((k, n, 2), 30, np.float32),
            "point_labels": np.ones((k, n), np.float32), "mask_input": np.zeros((k, 1, 256, 256), np.float32),
            "has_mask_input": np.zeros(k, np.float32),
        })
        assert masks.shape == (k, 4, 256, 256) and iou.shape == (k, 4)


def test_polygraphy_reads_every_exported_graph(exported):
    _, base = exported
    polygraphy = shutil.which("polygraphy") or str(Path(sys.executable).with_name("polygraphy"))
    for path in sorted(base.folder.glob("*.onnx")):
        out = subprocess.run([polygraphy, "inspect", "model", str(path)], capture_output=True, text=True, timeout=300)
        assert out.returncode == 0, out.stderr
        assert "image_embeddings" in out.stdout and "ONNX Opset: 17" in out.stdout


# ---- bad input: a clear error and nothing written -------------------------------------------------------


def _nothing_written(folder: Path) -> None:
    assert not folder.exists()
    assert not list(folder.parent.glob(f".{folder.name}.partial-*"))


def test_unknown_model_and_missing_checkpoint(tmp_path):
    with pytest.raises(ValueError, match="unknown model 'sam_xl'"):
        export_model(ExportOptions(model="sam_xl", out=tmp_path / "m"))
    from gmiseg_edge.core.errors import WeightsError

    with pytest.raises(WeightsError, match="--checkpoint"):
        export_model(ExportOptions(model="vit_b", out=tmp_path / "m"))
    with pytest.raises(WeightsError, match=r"nope\.pth: checkpoint not found"):
        export_model(ExportOptions(model="vit_b", out=tmp_path / "m", checkpoint=tmp_path / "nope.pth"))
    _nothing_written(tmp_path / "m")


def test_mismatched_checkpoint_and_adapter_for_another_base(tmp_path):
    from gmiseg_edge.adapters import AdapterError
    from gmiseg_edge.core.errors import WeightsError
    from gmiseg_edge.models.weights import weights_path
    from gmiseg_edge.models.zoo import get_spec

    require_weights("lite_medsam")
    require_weights("mobile_sam")
    with pytest.raises(WeightsError, match="not a lite_medsam checkpoint"):
        export_model(ExportOptions(model="lite_medsam", out=tmp_path / "m",
                                   checkpoint=weights_path(get_spec("mobile_sam").weights)))
    adapter = _random_adapter("mobile_sam", tmp_path / "mobile.safetensors")
    with pytest.raises(AdapterError, match=r"mobile\.safetensors.*mobile_sam"):
        export_model(ExportOptions(model="lite_medsam", out=tmp_path / "m", adapter=adapter))
    _nothing_written(tmp_path / "m")


def test_unwritable_output_and_existing_folder(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    with pytest.raises(ExportError, match="a_file"):
        export_model(ExportOptions(model="lite_medsam", out=blocker / "model"))
    existing = tmp_path / "existing"
    existing.mkdir()
    (existing / "keep.txt").write_text("mine")
    with pytest.raises(ExportError, match=r"already exists.*--force"):
        export_model(ExportOptions(model="lite_medsam", out=existing))
    assert (existing / "keep.txt").read_text() == "mine"


def test_empty_calibration_folder_and_int8_without_calib(tmp_path):
    from gmiseg_edge.core.errors import DataError

    require_weights("lite_medsam")
    with pytest.raises(ExportError, match="--calib"):
        export_model(ExportOptions(model="lite_medsam", out=tmp_path / "m", int8=True))
    empty = tmp_path / "calib"
    (empty / "images").mkdir(parents=True)
    (empty / "masks").mkdir()
    with pytest.raises(DataError, match="calib"):
        export_model(ExportOptions(model="lite_medsam", out=tmp_path / "m", int8=True, calib=empty,
                                   validation_cases=["lung2"]))
    _nothing_written(tmp_path / "m")


def test_an_export_deletes_the_stale_staging_folders_of_killed_exports_to_its_target(tmp_path):
    """A killed export leaves ``.<name>.partial-XXXXXXXX`` beside the target. The next export to that target
    deletes those untouched for over an hour, and keeps a concurrent export's fresh one and other targets'."""
    import os
    import time

    target = tmp_path / "m"
    hours_ago = time.time() - 2 * 3600
    stale = tmp_path / ".m.partial-ab12cd34"
    fresh = tmp_path / ".m.partial-zz99yy88"  # a concurrent export's
    other = tmp_path / ".m2.partial-ab12cd34"  # another target's, stale too
    lookalike = tmp_path / ".m.partial-x.partial-ab12cd34"  # target "m.partial-x"'s
    for folder in (stale, fresh, other, lookalike):
        folder.mkdir()
        (folder / "encoder.onnx").write_bytes(b"half a graph")
    for folder in (stale, other, lookalike):
        for path in (folder / "encoder.onnx", folder):
            os.utime(path, (hours_ago, hours_ago))
    recent = tmp_path / ".m.partial-recent01"  # old folder, but a file written a minute ago: still alive
    recent.mkdir()
    (recent / "decoder.onnx").write_bytes(b"being written")
    os.utime(recent, (hours_ago, hours_ago))
    with pytest.raises(ExportError, match="--calib"):  # fails at once, after the sweep
        export_model(ExportOptions(model="lite_medsam", out=target, int8=True))
    assert not stale.exists()
    assert fresh.is_dir() and recent.is_dir() and other.is_dir() and lookalike.is_dir()


def test_missed_tolerance_fails_and_writes_nothing(tmp_path, monkeypatch):
    from gmiseg_edge.export import validate

    require_weights("lite_medsam")
    monkeypatch.setitem(validate.TOLERANCES, "fp32", validate.Tolerance(embedding_max_abs=0.0, mask_dice_min=1.0))
    with pytest.raises(ExportError, match=r"embedding max abs error .* > 0 \(by .*\); nothing was written"):
        export_model(ExportOptions(model="lite_medsam", out=tmp_path / "m", validation_cases=["lung2"]))
    _nothing_written(tmp_path / "m")


def test_build_without_tensorrt_says_how_to_build_on_the_target(tmp_path):
    from typer.testing import CliRunner

    from gmiseg_edge.cli import app
    from gmiseg_edge.runtime.backends.trt.device import tensorrt_status

    if tensorrt_status().available:
        pytest.skip("TensorRT and a GPU are present: the gpu tests cover building")
    result = CliRunner().invoke(app, ["build", "--model-dir", str(tmp_path)])
    assert result.exit_code == 1
    assert "cannot build engines here" in result.output and "gmiseg-edge build --model-dir" in result.output


@pytest.mark.gpu
def test_tensorrt_engines_build_and_are_recorded(exported):
    from gmiseg_edge.runtime.backends.trt.build import build_engines
    from gmiseg_edge.runtime.backends.trt.device import tensorrt_status

    status = tensorrt_status()
    if not status.available:
        pytest.skip(f"needs TensorRT and a CUDA GPU: {status.reason}")
    _, base = exported
    built = build_engines(base.folder, "fp16")
    assert set(built) == {"encoder.fp16.engine", "decoder.fp16.engine"}
    data = json.loads((base.folder / "manifest.json").read_text())
    assert data["engines"]["encoder.fp16.engine"]["compute_capability"] == status.device.compute_capability
    again = build_engines(base.folder, "fp16")
    assert again == built  # matching engines are kept, not rebuilt


@pytest.mark.parametrize("name", ["lite_medsam", pytest.param("mobile_sam", marks=pytest.mark.extended)])
def test_int8_encoder_keeps_masks_on_held_out_cases(tmp_path, name):
    """INT8 calibrated on three sample cases, checked on two others, an MR and the RGB microscopy image (mask Dice
    >= 0.97 vs FP32; two rather than all four held-out scans: CI time)."""
    require_weights(name)
    held_out = ["breast1", "dsb_nuclei"]
    result = export_model(ExportOptions(model=name, out=tmp_path / "m", int8=True, calib="samples",
                                        validation_cases=held_out, calib_limit=8))  # 8 of the 16 slices: CI time
    report = result.reports["int8"]
    cpu = result.manifest["files"]["encoder.int8.onnx"]["quantization"]
    rejected = f" (dynamic rejected: {cpu['rejected']['reason']})" if "rejected" in cpu else ""
    print(f"{name} int8 {cpu['mode']}{rejected}: min held-out mask Dice {report.mask_dice_min:.4f} "
          f"over {len(report.cases)} cases")
    assert cpu["mode"] == "dynamic" or (cpu["mode"] == "static" and cpu["rejected"]["mode"] == "dynamic")
    assert {c.case.split("/")[0] for c in report.cases} == set(held_out)
    assert report.mask_dice_min >= 0.97
    manifest = Manifest.load(result.folder)
    assert manifest.graph_path("encoder", "int8").name == "encoder.int8.onnx"
    assert manifest.graph_path("decoder", "int8").name == "decoder.onnx"
    files = result.manifest["files"]
    assert files["encoder.int8-trt.onnx"]["quantization"]["activations"] == "int8 symmetric"
    manifest.verify_files()


def test_graph_over_the_limit_gets_external_data_that_loads_and_is_verified(tmp_path, exported_models):
    """The >2 GB path (ViT-H) on a small graph: a lower limit moves its weights to one .data file."""
    import onnxruntime as ort

    from gmiseg_edge.core.manifest import ManifestError
    from gmiseg_edge.export.onnx_export import externalise_if_large

    source = exported_models("lite_medsam").folder
    folder = tmp_path / "m"
    shutil.copytree(source, folder)
    before = ort.InferenceSession(str(folder / "decoder.onnx"), providers=["CPUExecutionProvider"])
    assert externalise_if_large(folder / "decoder.onnx", limit=1024)
    assert (folder / "decoder.onnx.data").stat().st_size > 10 * (folder / "decoder.onnx").stat().st_size
    after = ort.InferenceSession(str(folder / "decoder.onnx"), providers=["CPUExecutionProvider"])
    feed = {
        "image_embeddings": np.full((1, 256, 64, 64), 0.1, np.float32),
        "point_coords": np.full((1, 2, 2), 40, np.float32),
        "point_labels": np.array([[2, 3]], np.float32), "mask_input": np.zeros((1, 1, 256, 256), np.float32),
        "has_mask_input": np.zeros(1, np.float32),
    }
    np.testing.assert_array_equal(before.run(None, feed)[0], after.run(None, feed)[0])

    from gmiseg_edge.export.pipeline import _file_entry

    data = json.loads((folder / "manifest.json").read_text())
    data["files"]["decoder.onnx"] = _file_entry(folder, "decoder.onnx", "fp32")
    (folder / "manifest.json").write_text(json.dumps(data))
    Manifest.load(folder).verify_files()
    with open(folder / "decoder.onnx.data", "r+b") as handle:
        handle.seek(100)
        byte = handle.read(1)
        handle.seek(100)
        handle.write(bytes([byte[0] ^ 0xFF]))
    with pytest.raises(ManifestError, match=r"decoder\.onnx\.data: sha256 differs"):
        Manifest.load(folder).verify_files()


def test_add_task_and_adapt_delete_the_staging_folders_of_killed_runs(tmp_path):
    """Issue 26: a killed add-task left a 16 MB ``.decoders.partial-*`` folder in the model folder for good."""
    from gmiseg_edge.export.task_decoder import add_task_decoder
    from tests.core.test_manifest import _write_folder

    _write_folder(tmp_path / "m")
    stale, fresh = killed_runs_staging(tmp_path / "m", "decoders")
    said: list[str] = []
    with pytest.raises(ManifestError, match="task name 'Bad Name'"):  # fails at once, after the sweep
        add_task_decoder(tmp_path / "m", "Bad Name", tmp_path / "adapter.safetensors", log=said.append)
    assert not stale.exists() and fresh.is_dir()  # a live run's staging is kept
    assert said == [f"removed {stale} (left by an add-task or adapt that was killed)"]
