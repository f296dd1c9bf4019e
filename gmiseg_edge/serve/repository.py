"""``gmiseg-edge export-triton``: a model repository for a stock Triton Inference Server on GPU nodes.

For each precision (of those exported and validated): ``encoder_<p>`` (``onnxruntime_onnx``, or
``tensorrt_plan`` from engines built on the target; dynamic batching, instance groups), ``decoder_<p>`` (one
image embedding and any number of prompts per run, so no Triton batching), and ``segment_<p>``: a Python BLS
model that chains pre -> encoder -> decoder -> post (:mod:`gmiseg_edge.serve.triton_model`). Model inputs and
outputs are read from the graphs themselves. Every ``config.pbtxt`` follows Triton's model-configuration schema
(``model_config.proto``); the tests parse each with tritonclient's ``model_config_pb2``.

The repository is written to a temporary folder beside ``out`` and renamed into place at the end: a failed
export leaves nothing that looks complete.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gmiseg_edge.core.errors import ManifestError
from gmiseg_edge.core.files import remove_stale_partials, write_bytes_atomic
from gmiseg_edge.core.manifest import Manifest, engine_filename, external_data_name
from gmiseg_edge.runtime.loader import check_precision
from gmiseg_edge.serve import triton_model
from gmiseg_edge.serve.pbtxt import Enum, to_pbtxt
from gmiseg_edge.serve.protocol import BOX, IMAGE, LABELS, LOW_RES_LOGITS, MASK, MASK_INPUT, POINTS, SCORE

FORMATS = ("onnxruntime", "tensorrt")
KINDS = {"gpu": "KIND_GPU", "cpu": "KIND_CPU"}
_ONNX_TYPES = {"tensor(float)": "TYPE_FP32", "tensor(float16)": "TYPE_FP16", "tensor(int64)": "TYPE_INT64",
               "tensor(int32)": "TYPE_INT32", "tensor(uint8)": "TYPE_UINT8", "tensor(bool)": "TYPE_BOOL"}


class RepositoryError(ManifestError):
    """A model repository that cannot be written from this model folder (the message says why and what to do)."""


@dataclass(frozen=True)
class RepositoryOptions:
    """What to write. ``precisions`` None: every exported precision that passed validation."""

    model_dir: Path
    out: Path
    precisions: tuple[str, ...] | None = None
    format: str = "onnxruntime"
    kind: str = "gpu"
    encoder_instances: int = 1
    decoder_instances: int = 2
    segment_instances: int = 2
    max_batch: int = 8
    queue_delay_us: int = 2000
    force: bool = False

    def __post_init__(self) -> None:
        if self.format not in FORMATS:
            raise ValueError(f"format must be one of {', '.join(FORMATS)}, got {self.format!r}")
        if self.kind not in KINDS:
            raise ValueError(f"kind must be one of {', '.join(KINDS)}, got {self.kind!r}")
        counts = (self.encoder_instances, self.decoder_instances, self.segment_instances, self.max_batch)
        if min(counts) < 1 or self.queue_delay_us < 0:
            raise ValueError("instance counts and max_batch must be >= 1 and queue_delay_us >= 0")


def _tensor(name: str, data_type: str, dims: Sequence[int], optional: bool = False) -> dict[str, Any]:
    return {"name": name, "data_type": Enum(data_type), "dims": list(dims), "optional": True if optional else None}


def graph_io(path: Path) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(inputs, outputs) of an ONNX graph as Triton tensors (dynamic dimensions -1), read with ONNX Runtime."""
    from gmiseg_edge.runtime.backends.onnxrt.session import cpu_session

    session = cpu_session(path, threads=1)

    def convert(args) -> list[dict[str, Any]]:
        out = []
        for arg in args:
            if arg.type not in _ONNX_TYPES:
                raise RepositoryError(f"{path}: {arg.name} has type {arg.type}, which this writer does not map")
            dims = [d if isinstance(d, int) and d > 0 else -1 for d in arg.shape]
            out.append(_tensor(arg.name, _ONNX_TYPES[arg.type], dims))
        return out

    return convert(session.get_inputs()), convert(session.get_outputs())


def _without_batch(tensors: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{**t, "dims": t["dims"][1:]} for t in tensors]


def encoder_config(name: str, inputs, outputs, options: RepositoryOptions, platform: str) -> dict[str, Any]:
    """The encoder: batched by Triton (the graph's first dimension), dynamic batching, ``encoder_instances``."""
    preferred = sorted({b for b in (options.max_batch // 2, options.max_batch) if b > 1})
    return {
        "name": name, "platform": platform, "max_batch_size": options.max_batch,
        "input": _without_batch(inputs), "output": _without_batch(outputs),
        "dynamic_batching": {"preferred_batch_size": preferred or None,
                             "max_queue_delay_microseconds": options.queue_delay_us} if options.max_batch > 1 else None,
        "instance_group": [{"count": options.encoder_instances, "kind": Enum(KINDS[options.kind])}],
    }


def decoder_config(name: str, inputs, outputs, options: RepositoryOptions, platform: str) -> dict[str, Any]:
    """The decoder: one embedding and K prompts a run (its leading dimensions are its own, not a batch)."""
    return {
        "name": name, "platform": platform, "max_batch_size": 0, "input": inputs, "output": outputs,
        "instance_group": [{"count": options.decoder_instances, "kind": Enum(KINDS[options.kind])}],
    }


def segment_config(name: str, encoder: str, decoder: str, manifest: Manifest,
                   options: RepositoryOptions) -> dict[str, Any]:
    """The BLS pipeline: the inputs and outputs of ``gmiseg-edge serve``'s ``segment`` (protocol module)."""
    parameters = {"encoder_model": encoder, "decoder_model": decoder,
                  "preprocess": json.dumps(manifest.preprocess.to_dict(), sort_keys=True),
                  "model": manifest.model_name}
    return {
        "name": name, "backend": "python", "max_batch_size": 0,
        "input": [_tensor(IMAGE, "TYPE_UINT8", [-1, -1, -1]), _tensor(POINTS, "TYPE_FP32", [-1, 2], True),
                  _tensor(LABELS, "TYPE_FP32", [-1], True), _tensor(BOX, "TYPE_FP32", [4], True),
                  _tensor(MASK_INPUT, "TYPE_FP32", [256, 256], True)],
        "output": [_tensor(MASK, "TYPE_UINT8", [-1, -1]), _tensor(SCORE, "TYPE_FP32", [1]),
                   _tensor(LOW_RES_LOGITS, "TYPE_FP32", [256, 256])],
        "instance_group": [{"count": options.segment_instances, "kind": Enum("KIND_CPU")}],
        "parameters": [{"key": key, "value": {"string_value": value}} for key, value in parameters.items()],
    }


def _precisions(manifest: Manifest, asked: tuple[str, ...] | None) -> list[str]:
    if asked is not None:
        for precision in asked:
            check_precision(manifest, precision)  # exported and validated, or an error saying which
        return list(asked)
    chosen = []
    for precision in manifest.precisions():
        report = manifest.validation(precision)
        if report and report.get("passed"):
            chosen.append(precision)
    if not chosen:
        raise RepositoryError(f"{manifest.folder}: no precision passed its validation against PyTorch; export again")
    return chosen


def _copy_graph(manifest: Manifest, graph: str, precision: str, version_dir: Path, fmt: str) -> Path:
    """Copy the verified graph (and its external data) or engine into ``version_dir``; returns the ONNX source."""
    source = manifest.graph_path(graph, precision)
    manifest.verify_path(source)
    version_dir.mkdir(parents=True)
    if fmt == "tensorrt":
        engine = engine_filename(graph, precision)
        if engine not in manifest.engines():
            raise RepositoryError(f"{manifest.folder}: no TensorRT {precision} engine for the {graph} ({engine}); "
                                  f"plans are built per GPU: run `gmiseg-edge build --model-dir {manifest.folder} "
                                  f"--precision {precision}` on a node of the fleet's GPU type, or use "
                                  "--format onnxruntime")
        entry = manifest.engines()[engine]
        shutil.copyfile(manifest.file_path(engine, "engines"), version_dir / "model.plan")
        (version_dir / "engine.json").write_text(json.dumps(entry, indent=2, sort_keys=True) + "\n")
        return source
    shutil.copyfile(source, version_dir / "model.onnx")
    data = source.parent / external_data_name(source.name)
    if data.exists():  # the graph names its weights file: keep that name beside model.onnx
        shutil.copyfile(data, version_dir / data.name)
    return source


def write_repository(options: RepositoryOptions, log: Callable[[str], None] | None = None) -> dict[str, Path]:
    """Write the repository (module docstring); returns each model's config.pbtxt path."""
    manifest = Manifest.load(options.model_dir)
    out = Path(options.out)
    if out.exists() and not options.force:
        raise RepositoryError(f"{out}: already exists; pass --force to replace it")
    precisions = _precisions(manifest, options.precisions)
    out.parent.mkdir(parents=True, exist_ok=True)
    for path in remove_stale_partials(out):
        if log is not None:
            log(f"removed {path} (left by an export-triton that was killed)")
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
    staging.chmod(0o755)  # mkdtemp makes it private; a Triton container may run as another user
    platform = "onnxruntime_onnx" if options.format == "onnxruntime" else "tensorrt_plan"
    configs: dict[str, dict[str, Any]] = {}
    try:
        for precision in precisions:
            names = {graph: f"{graph}_{precision}" for graph in ("encoder", "decoder")}
            for graph, make in (("encoder", encoder_config), ("decoder", decoder_config)):
                source = _copy_graph(manifest, graph, precision, staging / names[graph] / "1", options.format)
                inputs, outputs = graph_io(source)
                configs[names[graph]] = make(names[graph], inputs, outputs, options, platform)
            segment = f"segment_{precision}"
            (staging / segment / "1").mkdir(parents=True)
            shutil.copyfile(triton_model.__file__, staging / segment / "1" / "model.py")
            configs[segment] = segment_config(segment, names["encoder"], names["decoder"], manifest, options)
            if log is not None:
                log(f"{precision}: {names['encoder']}, {names['decoder']} ({platform}), {segment} (python BLS)")
        for name, config in configs.items():
            write_bytes_atomic(staging / name / "config.pbtxt", to_pbtxt(config).encode())
        if out.exists():
            shutil.rmtree(out)
        os.replace(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return {name: out / name / "config.pbtxt" for name in configs}
