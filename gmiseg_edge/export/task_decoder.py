"""Add a task decoder to a model folder (DESIGN §11): merge a task adapter into the mask decoder, export it as
``decoders/<task>.onnx``, validate it against PyTorch, and record it in the manifest.

The folder is never half-written: the graph and a copy of the adapter are written and validated in a hidden
staging folder inside the model folder, then moved into ``decoders/`` and the manifest is replaced
atomically (under a lock on the folder, so two tasks added at once both end up listed). A failure at any step
removes what was staged and leaves the folder as it was. The encoder graph, its engines and every other file
are untouched: the new decoder reads the same embeddings.

The decoder graph computes its dense positional encoding instead of storing it (:mod:`.positional`), which
keeps a task decoder at 16.4 MB for the zoo's models instead of 20.6 MB. Validation compares the exported graph
with the adapted PyTorch decoder (:class:`DecoderGraph` with the adapter's bypasses, not merged) on the same
embeddings, with a box from each validation case's mask, and holds it to the fp32 tolerance of
:mod:`gmiseg_edge.export.validate`.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from segment_anything.modeling import Sam

from gmiseg_edge.adapters import AdapterConfig, apply_adapter, load_adapter, merge, parameter_counts
from gmiseg_edge.core.errors import AdapterError, ExportError, ManifestError
from gmiseg_edge.core.files import remove_stale_partials, sha256_of
from gmiseg_edge.core.graph_io import DECODER_OUTPUTS, ENCODER_INPUT
from gmiseg_edge.core.manifest import TASKS_DIR, Manifest, check_task_name, file_entry, graph_filename
from gmiseg_edge.core.prompts import box_from_mask, make_prompt
from gmiseg_edge.core.transforms import ImageGeometry, PreprocessConfig, postprocess_logits, preprocess
from gmiseg_edge.export.onnx_export import DEFAULT_OPSET, export_decoder
from gmiseg_edge.export.positional import compute_dense_pe_in_graph
from gmiseg_edge.export.validate import TOLERANCES, CaseAgreement, ValidationReport
from gmiseg_edge.metrics import dice
from gmiseg_edge.models.build import build_model, folder_checkpoint
from gmiseg_edge.models.reference import TorchReference
from gmiseg_edge.runtime.backends.onnxrt.session import cpu_session

Log = Callable[[str], None]
ENCODER_KEY = "task_encoder_sha256"  # adapter metadata: the encoder graph whose embeddings it was trained on
FOLDER_ADAPTER_KEY = "task_folder_adapter_sha256"  # and the encoder-side adapter merged in that folder ("" none)
TASK_KEY = "task"


@dataclass(frozen=True, eq=False)
class EncodedCase:
    """A validation case: an image's geometry and embedding (from the folder's encoder) and a mask."""

    name: str
    geometry: ImageGeometry
    embedding: np.ndarray  # float32 (1, 256, 64, 64)
    mask: np.ndarray  # bool (H, W)


@dataclass
class TaskDecoderResult:
    task: str
    decoder: Path
    adapter: Path
    bytes: int
    report: ValidationReport
    entry: dict[str, Any]


def encoder_identity(manifest: Manifest) -> dict[str, str]:
    """What a task adapter must have been trained against: the folder's fp32 encoder graph (sha256) and the
    encoder-side adapter merged into the folder ("" for none). Stored in the adapter's metadata."""
    adapter = manifest.adapter
    return {ENCODER_KEY: manifest.file_sha256(graph_filename("encoder", "fp32")),
            FOLDER_ADAPTER_KEY: str(adapter["sha256"]) if adapter else ""}


def folder_model(manifest: Manifest) -> tuple[Sam, str]:
    """The folder's model in PyTorch, as it was exported (base checkpoint verified against the manifest, its
    encoder-side adapter merged): a plain SAM without adapter modules. Returns it and the base sha256."""
    checkpoint, sha = folder_checkpoint(manifest)
    model = build_model(manifest.model_name, checkpoint=checkpoint)
    if manifest.adapter:
        path = manifest.file_path(manifest.adapter["file"], "adapter.file")
        if not path.is_file() or sha256_of(path) != manifest.adapter["sha256"]:
            raise ManifestError(f"{path}: the encoder-side adapter merged into this folder is missing or altered")
        apply_adapter(model, path, manifest.model_name, sha)
        model = merge(model).eval()
    return model, sha


def check_task_adapter(manifest: Manifest, path: Path) -> tuple[AdapterConfig, dict[str, str]]:
    """Refuse (AdapterError naming ``path``) an adapter that is not a task adapter for this folder's base model
    and encoder; returns its config and metadata."""
    config, _, metadata = load_adapter(path)
    if not config.decoder_only:
        raise AdapterError(f"{path}: an encoder-side adapter changes the embeddings, so it cannot share this folder's "
                           "encoder; export a new model folder with `gmiseg-edge export --adapter`")
    base = (manifest.model_name, manifest.base_checkpoint.get("sha256"))
    if (metadata["base_model"], metadata["base_sha256"]) != base:
        raise AdapterError(f"{path}: made for base model {metadata['base_model']!r} (checkpoint sha256 "
                           f"{metadata['base_sha256']}), but {manifest.folder} holds {base[0]!r} (sha256 {base[1]})")
    for key, value in encoder_identity(manifest).items():
        if metadata.get(key) != value:
            raise AdapterError(f"{path}: trained on the embeddings of another encoder (metadata {key} "
                               f"{metadata.get(key)!r}, this folder's {value!r}); adapt it again on {manifest.folder}")
    return config, metadata


def encode_sample_cases(manifest: Manifest, names: Sequence[str] | None = None) -> list[EncodedCase]:
    """The shipped sample cases (as export validates on) encoded by the folder's fp32 encoder graph."""
    from gmiseg_edge.export.pipeline import validation_cases  # the same cases as the folder's own validation

    path = manifest.graph_path("encoder", "fp32")
    manifest.verify_path(path)
    session, config = cpu_session(path), manifest.preprocess
    out = []
    for case in validation_cases(list(names) if names is not None else None):
        prepared = preprocess(case.image, config)
        (embedding,) = session.run(None, {ENCODER_INPUT: prepared.tensor})
        out.append(EncodedCase(case.name, prepared, np.asarray(embedding, np.float32), case.mask))
    return out


def validate_task_decoder(model: Sam, graph: Path, cases: Sequence[EncodedCase],
                          preprocess_config: PreprocessConfig) -> ValidationReport:
    """ONNX Runtime (``graph``) against the adapted PyTorch decoder on the same embeddings, a box per case."""
    reference, session = TorchReference(model, preprocess_config, threads=1), cpu_session(graph, threads=1)
    input_size = preprocess_config.input_size
    report = ValidationReport("fp32", TOLERANCES["fp32"])
    for case in cases:
        prompt = make_prompt(box=box_from_mask(case.mask), image_size=case.geometry.original_size)
        inputs = prompt.decoder_inputs(case.embedding, case.geometry.original_size, input_size)
        ref_logits, ref_iou = reference.decode(inputs)
        logits, iou = session.run(list(DECODER_OUTPUTS), inputs.feed())
        masks = [postprocess_logits(x[0, :1], case.geometry, input_size)[0] > 0 for x in (logits, ref_logits)]
        report.cases.append(CaseAgreement(
            case=case.name, embedding_max_abs=0.0,  # the same embedding goes to both decoders
            logits_max_abs=float(np.abs(logits - ref_logits).max()), iou_max_abs=float(np.abs(iou - ref_iou).max()),
            mask_dice=dice(*masks), finite=bool(np.isfinite(logits).all() and np.isfinite(iou).all()),
        ))
    if not report.cases:
        raise ExportError("no validation case for the task decoder")
    return report


@contextlib.contextmanager
def folder_lock(folder: Path) -> Iterator[None]:
    """An exclusive lock on the model folder itself (nothing is written to take it)."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def add_task_decoder(
    model_dir: str | Path,
    task: str,
    adapter: str | Path,
    validation: Sequence[EncodedCase] | None = None,
    opset: int = DEFAULT_OPSET,
    log: Log | None = None,
) -> TaskDecoderResult:
    """Export ``adapter`` (a task adapter trained on this folder's embeddings) as the decoder of ``task`` into
    ``model_dir``. ``validation``: encoded cases to validate on (default: the shipped sample cases, encoded by
    the folder's encoder). Raises (GmisegError naming the file or task) with the folder unchanged."""
    say = log or (lambda message: None)
    folder, adapter = Path(model_dir), Path(adapter)
    manifest = Manifest.load(folder)
    for path in remove_stale_partials(folder / TASKS_DIR):
        say(f"removed {path} (left by an add-task or adapt that was killed)")
    check_task_name(task, folder)
    if task in manifest.tasks():
        raise ManifestError(f"{folder}: task {task!r} already exists; choose another name")
    config, _ = check_task_adapter(manifest, adapter)
    model, base_sha = folder_model(manifest)
    apply_adapter(model, adapter, manifest.model_name, base_sha)  # bypasses kept: the validation reference
    n_params = parameter_counts(model).adapter
    cases = list(validation) if validation is not None else encode_sample_cases(manifest)
    staging = Path(tempfile.mkdtemp(prefix=f".{TASKS_DIR}.partial-", dir=folder))
    try:
        graph, copy = staging / f"{task}.onnx", staging / f"{task}.safetensors"
        say(f"exporting the {task} decoder ({config.kind}, rank {config.rank}, merged) ...")
        export_decoder(merge(model), graph, opset)
        prompt_encoder = model.prompt_encoder
        gaussian = prompt_encoder.pe_layer.positional_encoding_gaussian_matrix.detach().cpu().numpy()
        compute_dense_pe_in_graph(graph, gaussian, tuple(prompt_encoder.image_embedding_size))
        say(f"validating it in ONNX Runtime against PyTorch on {len(cases)} cases ...")
        report = validate_task_decoder(model, graph, cases, manifest.preprocess)
        if not report.passed:
            raise ExportError(f"task decoder {task!r} misses its tolerance against PyTorch "
                              f"({'; '.join(report.failures())}); nothing was written")
        shutil.copyfile(adapter, copy)
        entry = {
            "files": {"decoder": file_entry(graph, file=graph.name, precision="fp32", opset=opset),
                      "adapter": file_entry(copy, file=copy.name)},
            "adapter": {"source": adapter.name, "config": config.to_dict(), "parameters": n_params},
            "validation": report.to_dict() | {"reference": "adapted PyTorch decoder on the same embeddings, "
                                                            "box prompt from each case's mask"},
        }
        _publish(folder, task, staging, entry)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    say(f"added task {task!r}: {folder / TASKS_DIR / graph.name} ({entry['files']['decoder']['bytes'] / 2**20:.1f} "
        f"MiB), min mask Dice {report.mask_dice_min:.4f}, logits max abs {report.to_dict()['logits_max_abs']:.1e}")
    return TaskDecoderResult(task, folder / TASKS_DIR / graph.name, folder / TASKS_DIR / copy.name,
                             entry["files"]["decoder"]["bytes"], report, entry)


def _publish(folder: Path, task: str, staging: Path, entry: dict[str, Any]) -> None:
    """Move the staged files into ``decoders/`` and list them in the manifest (all or nothing)."""
    with folder_lock(folder):
        manifest = Manifest.load(folder)  # again, under the lock: another task may have been added meanwhile
        manifest.record_task(task, entry)
        target = folder / TASKS_DIR
        created = not target.exists()
        target.mkdir(exist_ok=True)
        moved: list[Path] = []
        try:
            for kind in ("decoder", "adapter"):
                name = entry["files"][kind]["file"]
                if (target / name).exists():
                    raise ExportError(f"{target / name}: exists but is not listed in the manifest; remove it first")
                os.replace(staging / name, target / name)
                moved.append(target / name)
            manifest.save()
        except BaseException:
            for path in moved:
                path.unlink(missing_ok=True)
            if created:
                shutil.rmtree(target, ignore_errors=True)
            raise
