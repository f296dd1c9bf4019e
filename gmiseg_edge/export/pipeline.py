"""``gmiseg-edge export``: merge, export, convert, validate, and write the model folder atomically.

Everything is written into a temporary folder beside the target and renamed into place only when every
graph has been exported and has met its tolerance: a failed export never leaves a folder that looks complete.
An export that was killed leaves that hidden ``.<name>.partial-*`` folder behind; the next export to the same
target deletes those untouched for an hour (a running export touches its own at every step, so a concurrent
one's survives).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import platform
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import onnx
import onnxruntime
import torch

import gmiseg_edge
from gmiseg_edge.adapters import adapted_layers, apply_adapter, merge_adapters, parameter_counts
from gmiseg_edge.calibration.dataset import SAMPLE_CALIBRATION_CASES, SAMPLES
from gmiseg_edge.calibration.quantize import quantize_graphs
from gmiseg_edge.core.errors import ExportError
from gmiseg_edge.core.files import remove_stale_partials, sha256_of
from gmiseg_edge.core.manifest import Manifest, file_entry, graph_filename
from gmiseg_edge.data.samples import load_sample_cases
from gmiseg_edge.export.fp16 import convert_to_fp16
from gmiseg_edge.export.onnx_export import DEFAULT_OPSET, export_decoder, export_encoder
from gmiseg_edge.export.validate import ValidationReport, torch_references, validate_graphs
from gmiseg_edge.models.build import build_model, checkpoint_sha256
from gmiseg_edge.models.zoo import get_spec

Log = Callable[[str], None]


@dataclass
class ExportOptions:
    """What ``gmiseg-edge export`` was asked for."""

    model: str = "lite_medsam"
    out: Path = Path("models/lite_medsam")
    checkpoint: Path | None = None
    adapter: Path | None = None
    fp16: bool = False
    int8: bool = False
    calib: Path | None = None
    opset: int = DEFAULT_OPSET
    force: bool = False
    validation_cases: list[str] | None = None  # sample case names; None: all of them
    calib_limit: int = 16  # int8: at most this many calibration slices (the static Q/DQ ranges come from them)


@dataclass
class ExportResult:
    folder: Path
    reports: dict[str, ValidationReport] = field(default_factory=dict)
    manifest: dict[str, Any] = field(default_factory=dict)


def export_model(options: ExportOptions, log: Log | None = None) -> ExportResult:
    """Run the whole export; raises :class:`ExportError` (nothing written) when anything fails."""
    say = log or (lambda message: None)
    spec = get_spec(options.model)
    target = Path(options.out)
    _check_target(target, options.force)
    for path in remove_stale_partials(target):
        say(f"removed {path} (left by an export that was killed)")
    if options.int8 and options.calib is None:
        raise ExportError("--int8 needs calibration data: --calib DIR (a dataset folder of real images)")

    say(f"building {spec.name} ...")
    model = build_model(spec.name, checkpoint=options.checkpoint)
    base_sha = checkpoint_sha256(spec.name, options.checkpoint)
    adapter_info = None
    if options.adapter is not None:
        adapter_info = _merge_adapter(model, options.adapter, spec.name, base_sha, say)

    cases = validation_cases(options.validation_cases)
    say(f"running the FP32 PyTorch reference on {len(cases)} sample cases ...")
    references = torch_references(model, spec.preprocess, cases)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.partial-", dir=target.parent))
    staging.chmod(0o755)
    say = _touching(staging, say)
    try:
        files: dict[str, dict[str, Any]] = {}
        reports: dict[str, ValidationReport] = {}
        say(f"exporting encoder.onnx and decoder.onnx (opset {options.opset}) ...")
        export_encoder(model, staging / "encoder.onnx", spec.input_size, options.opset)
        export_decoder(model, staging / "decoder.onnx", options.opset)
        reports["fp32"] = _validate(references, spec, staging, "fp32", say)
        if adapter_info is not None:  # provenance, and what the torch reference backend rebuilds the model from
            shutil.copyfile(options.adapter, staging / adapter_info["file"])
        for graph in ("encoder", "decoder"):
            files[graph_filename(graph, "fp32")] = _file_entry(staging, graph_filename(graph, "fp32"), "fp32")

        if options.fp16:

            for graph in ("encoder", "decoder"):
                say(f"converting {graph} to fp16 (LayerNorm, Softmax and reductions kept in fp32) ...")
                convert_to_fp16(staging / graph_filename(graph, "fp32"), staging / graph_filename(graph, "fp16"))
            reports["fp16"] = _validate(references, spec, staging, "fp16", say)
            for graph in ("encoder", "decoder"):
                files[graph_filename(graph, "fp16")] = _file_entry(staging, graph_filename(graph, "fp16"), "fp16")

        graphs = {p: {g: graph_filename(g, p) for g in ("encoder", "decoder")} for p in reports}
        if options.int8:

            assert options.calib is not None
            calibrated_on = set(SAMPLE_CALIBRATION_CASES) if str(options.calib) == SAMPLES else set()
            held_out = [r for r in references if r.name.split("/")[0] not in calibrated_on]
            graphs["int8"] = {"encoder": "encoder.int8.onnx", "decoder": graph_filename("decoder", "fp32")}

            def accept(_path: Path) -> tuple[bool, str]:  # the CPU int8 graph just written, on held-out cases
                reports["int8"] = _validate(held_out, spec, staging, "int8", say, graphs["int8"])
                return reports["int8"].passed, "; ".join(reports["int8"].failures())

            quant = quantize_graphs(staging, spec.preprocess, options.calib, options.calib_limit, log=say,
                                    accept=accept)
            if "rejected" in quant["encoder.int8.onnx"]:  # the static fallback was written: validate it too
                accept(staging / "encoder.int8.onnx")
            for name, info in quant.items():
                files[name] = _file_entry(staging, name, "int8") | {"quantization": info}

        failed = {p: r.failures() for p, r in reports.items() if not r.passed}
        if failed:
            lines = "; ".join(f"{p}: {', '.join(f)}" for p, f in failed.items())
            raise ExportError(f"exported graphs miss their tolerance against PyTorch ({lines}); nothing was written")

        manifest = _manifest(staging, spec, options, base_sha, adapter_info, graphs, files, reports)
        manifest.save()
        _publish(staging, target, options.force)
        say(f"wrote {target}")
        return ExportResult(folder=target, reports=reports, manifest=manifest.to_dict())
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def validation_cases(names: list[str] | None = None, instances_per_image: int = 5) -> list:
    """Sample cases for validation: one slice per case and label; for instance maps (nuclei), a few
    instances spread over the image, each with its own box (a box around every nucleus at once is no
    meaningful prompt)."""
    cases = load_sample_cases(names, instances=True)
    plain = [c for c in cases if not c.label.startswith("instance")]
    instances = [c for c in cases if c.label.startswith("instance")]
    step = max(1, len(instances) // instances_per_image)
    return plain + instances[::step][:instances_per_image]


def _check_target(target: Path, force: bool) -> None:
    parent = target.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ExportError(f"{parent}: cannot create the output folder ({exc.strerror})") from exc
    if not parent.is_dir() or not _writable(parent):
        raise ExportError(f"{parent}: the output folder is not writable")
    if target.exists() and not force:
        raise ExportError(f"{target}: already exists; choose another --out or pass --force to replace it")


def _touching(staging: Path, say: Log) -> Log:
    """``say`` that also marks ``staging`` as in use (its mtime), so no other export takes it for stale."""

    def log(message: str) -> None:
        with contextlib.suppress(OSError):
            os.utime(staging)
        say(message)

    return log


def _writable(folder: Path) -> bool:
    try:
        with tempfile.TemporaryFile(dir=folder):
            return True
    except OSError:
        return False


def _publish(staging: Path, target: Path, force: bool) -> None:
    """Rename the finished folder into place (the old one, with --force, only goes once the new one is in)."""
    old = None
    if target.exists():
        if not force:
            raise ExportError(f"{target}: appeared during the export; nothing was replaced")
        old = target.with_name(f".{target.name}.old-{dt.datetime.now().strftime('%Y%m%d%H%M%S%f')}")
        target.rename(old)
    staging.rename(target)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _merge_adapter(model, path: Path, name: str, base_sha: str, say: Log) -> dict[str, Any]:

    say(f"applying and merging adapter {path} ...")
    config = apply_adapter(model, path, name, base_sha)
    counts = parameter_counts(model)
    merge_adapters(model)
    _strip_adapters(model)
    return {"file": Path(path).name, "sha256": sha256_of(path), "config": config.to_dict(),
            "adapter_parameters": counts.adapter, "merged": True}


def _strip_adapters(model) -> None:
    """Replace every merged AdaptedLinear by a plain Linear holding W + ΔW: zero adapter overhead."""

    for name, layer in list(adapted_layers(model)):
        parent_name, _, attr = name.rpartition(".")
        setattr(model.get_submodule(parent_name), attr, layer.to_linear())


def _validate(references, spec, folder: Path, precision: str, say: Log, pair=None) -> ValidationReport:
    say(f"validating {precision} graphs in ONNX Runtime against PyTorch on {len(references)} sample cases ...")
    pair = pair or {g: graph_filename(g, precision) for g in ("encoder", "decoder")}
    report = validate_graphs(
        references, spec.input_size, folder / pair["encoder"], folder / pair["decoder"], precision,
    )
    verdict = "passed" if report.passed else "FAILED: " + "; ".join(report.failures())
    say(f"{precision}: embedding max abs {report.embedding_max_abs:.2e}, min mask Dice {report.mask_dice_min:.4f} "
        f"-> {verdict}")
    return report


def _file_entry(folder: Path, filename: str, precision: str) -> dict[str, Any]:
    path = folder / filename
    model = onnx.load(str(path), load_external_data=False)
    entry = file_entry(
        path,
        graph="encoder" if filename.startswith("encoder") else "decoder",
        precision=precision,
        opset=next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None),
        nodes=len(model.graph.node),
    )
    data = path.with_name(path.name + ".data")
    if data.exists():
        entry["external_data"] = file_entry(data, file=data.name)
    return entry


def _manifest(folder: Path, spec, options: ExportOptions, base_sha: str, adapter, graphs, files,
              reports) -> Manifest:
    return Manifest.create(
        folder,
        model_name=spec.name,
        preprocess=spec.preprocess,
        base_checkpoint={
            "file": options.checkpoint.name if options.checkpoint else spec.weights.filename,
            "sha256": base_sha,
        },
        adapter=adapter,
        graphs=graphs,
        files=files,
        validation={precision: report.to_dict() for precision, report in reports.items()},
        versions={
            "gmiseg_edge": gmiseg_edge.__version__,
            "torch": torch.__version__,
            "onnx": onnx.__version__,
            "onnxruntime": onnxruntime.__version__,
            "opset": options.opset,
            "python": platform.python_version(),
        },
    )
