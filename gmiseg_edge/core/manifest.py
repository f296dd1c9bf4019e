"""The model folder's ``manifest.json`` (DESIGN §6): its one reader and writer.

Export creates it (:meth:`Manifest.create`), the TensorRT build records engines in it
(:meth:`Manifest.record_engine`), the runtime reads it. Nothing else touches the JSON: every part asks this
class. Plain JSON and the standard library only, so the torch-free runtime can read it. Every file the
runtime loads is listed with its sha256 and size and checked before use.

Format versions: 1 is the only one written so far; a folder of an unknown version is refused with the
command that writes a current one.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from gmiseg_edge.core.errors import ManifestError
from gmiseg_edge.core.files import sha256_of, write_json_atomic
from gmiseg_edge.core.transforms import PreprocessConfig

MANIFEST = "manifest.json"
FORMAT = "gmiseg-edge-model"
FORMAT_VERSION = 1
READABLE_VERSIONS = (1,)
PRECISIONS = ("fp32", "fp16", "int8")
GRAPHS = ("encoder", "decoder")
#: each top-level section a manifest must have, and the JSON type it must be
SECTIONS: dict[str, type | tuple[type, ...]] = {
    "model": dict, "graphs": dict, "files": dict, "validation": dict,
    "base_checkpoint": dict, "adapter": (dict, type(None)), "engines": dict, "versions": dict,
}
OPTIONAL_SECTIONS = ("base_checkpoint", "adapter", "engines", "versions")


def graph_filename(graph: str, precision: str) -> str:
    """``encoder.onnx``, ``encoder.fp16.onnx``, ``decoder.int8.onnx``, ..."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    return f"{graph}.onnx" if precision == "fp32" else f"{graph}.{precision}.onnx"


def engine_filename(graph: str, precision: str) -> str:
    """``encoder.fp16.engine``, ..."""
    return f"{graph}.{precision}.engine"


def _check_schema(data: Any, path: Path) -> dict[str, Any]:
    """The parsed JSON if it is a manifest this version reads; otherwise an error naming the field."""
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        found = data.get("format") if isinstance(data, dict) else type(data).__name__
        raise ManifestError(f"{path}: not a gmiseg-edge manifest (format {found!r})")
    if data.get("format_version") not in READABLE_VERSIONS:
        raise ManifestError(
            f"{path}: manifest format version {data.get('format_version')} is not supported "
            f"(this gmiseg-edge reads version {', '.join(map(str, READABLE_VERSIONS))}); export the model again"
        )
    for key, kind in SECTIONS.items():
        if key not in data:
            if key in OPTIONAL_SECTIONS:
                continue
            raise ManifestError(f"{path}: manifest has no {key!r} section")
        if not isinstance(data[key], kind):
            raise ManifestError(f"{path}: manifest section {key!r} is {type(data[key]).__name__}, not an object")
    model = data["model"]
    if not isinstance(model.get("name"), str):
        raise ManifestError(f"{path}: manifest field 'model.name' is missing or not a string")
    try:
        PreprocessConfig.from_dict(model["preprocess"])
    except (KeyError, TypeError, ValueError) as exc:
        raise ManifestError(f"{path}: manifest field 'model.preprocess' is malformed ({exc!r})") from exc
    return data


class Manifest:
    """A parsed ``manifest.json`` and the folder it describes."""

    def __init__(self, data: dict[str, Any], folder: Path) -> None:
        self.data = data  # read-only outside this class: use the accessors
        self.folder = Path(folder)

    # -- reading ---------------------------------------------------------------------------------------
    @classmethod
    def load(cls, folder: str | Path) -> Manifest:
        """Read and check ``folder/manifest.json``."""
        folder = Path(folder)
        path = folder / MANIFEST
        if not path.is_file():
            raise ManifestError(f"{folder}: not a gmiseg-edge model folder (no {MANIFEST}); create one with "
                                "`gmiseg-edge export`")
        try:
            data = json.loads(path.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ManifestError(f"{path}: unreadable manifest ({exc})") from exc
        return cls(_check_schema(data, path), folder)

    @property
    def model_name(self) -> str:
        return str(self.data["model"]["name"])

    @property
    def preprocess(self) -> PreprocessConfig:
        return PreprocessConfig.from_dict(self.data["model"]["preprocess"])

    @property
    def base_checkpoint(self) -> dict[str, Any]:
        """``{"file": ..., "sha256": ...}`` of the checkpoint the graphs were exported from ({} if unknown)."""
        return dict(self.data.get("base_checkpoint") or {})

    @property
    def adapter(self) -> dict[str, Any] | None:
        """The merged adapter's ``file``, ``sha256`` and ``config`` (None: no adapter)."""
        return self.data.get("adapter") or None

    def precisions(self) -> list[str]:
        """Precisions with an exported graph pair, in the order fp32, fp16, int8."""
        return [p for p in PRECISIONS if p in self.data["graphs"]]

    def graph_path(self, graph: str, precision: str = "fp32") -> Path:
        """Path of the ``encoder`` or ``decoder`` graph of a precision (an error names what is present)."""
        pair = self.data["graphs"].get(precision)
        if pair is None:
            raise ManifestError(
                f"{self.folder}: no {precision} graphs; present: {', '.join(self.precisions())} "
                f"(export with --fp16 / --int8 to add them)"
            )
        if not isinstance(pair, dict) or not isinstance(pair.get(graph), str):
            raise ManifestError(f"{self.folder / MANIFEST}: manifest field 'graphs.{precision}.{graph}' is malformed")
        return self.folder / pair[graph]

    def file_entry(self, name: str) -> dict[str, Any]:
        """The ``files`` entry of ``name`` (sha256, bytes, precision, ...); an error if it is not listed."""
        entry = self.data["files"].get(name)
        if not isinstance(entry, dict):
            raise ManifestError(f"{self.folder / name}: not listed in the manifest's files; cannot verify it")
        return entry

    def file_sha256(self, name: str) -> str:
        return str(self.file_entry(name).get("sha256"))

    def validation(self, precision: str = "fp32") -> dict[str, Any] | None:
        """The recorded validation of a precision (None if it was never validated)."""
        return self.data["validation"].get(precision)

    def engines(self) -> dict[str, dict[str, Any]]:
        """Recorded TensorRT engines by file name (a copy)."""
        return dict(self.data.get("engines") or {})

    def verify_files(self, names: Iterable[str] | None = None) -> None:
        """Check the sha256 and size of listed files (all by default) and of their external data; raise naming
        the first that is unlisted, missing or different."""
        for name in names if names is not None else list(self.data["files"]):
            entry = self.file_entry(name)
            verify_file(self.folder / name, entry, "the file was altered or corrupted after export")
            if "external_data" in entry:  # weights of a graph over 2 GB
                verify_file(self.folder / entry["external_data"]["file"], entry["external_data"],
                            "the file was altered or corrupted after export")

    # -- writing ---------------------------------------------------------------------------------------
    @classmethod
    def create(
        cls,
        folder: str | Path,
        *,
        model_name: str,
        preprocess: PreprocessConfig,
        base_checkpoint: Mapping[str, Any],
        adapter: Mapping[str, Any] | None,
        graphs: Mapping[str, Mapping[str, str]],
        files: Mapping[str, Mapping[str, Any]],
        validation: Mapping[str, Mapping[str, Any]],
        versions: Mapping[str, Any],
    ) -> Manifest:
        """A new manifest for the folder export is writing (not saved yet: :meth:`save`)."""
        data = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "model": {
                "name": model_name,
                "input_size": preprocess.input_size,
                "preprocess": preprocess.to_dict(),
                "embedding_shape": [256, 64, 64],
                "low_res_mask_shape": [256, 256],
            },
            "base_checkpoint": dict(base_checkpoint),
            "adapter": dict(adapter) if adapter is not None else None,
            "graphs": {p: dict(pair) for p, pair in graphs.items()},
            "files": {n: dict(e) for n, e in files.items()},
            "validation": {p: dict(r) for p, r in validation.items()},
            "engines": {},
            "versions": dict(versions),
        }
        return cls(data, Path(folder))

    def record_engine(self, name: str, entry: Mapping[str, Any]) -> None:
        """Add (or replace) a TensorRT engine entry; :meth:`save` writes it."""
        self.data.setdefault("engines", {})[name] = dict(entry)

    def save(self) -> Path:
        """Write ``folder/manifest.json`` atomically."""
        return write_json_atomic(self.folder / MANIFEST, self.data)


def file_entry(path: Path, **fields: Any) -> dict[str, Any]:
    """A ``files`` entry for ``path``: its sha256 and size, plus ``fields`` (graph, precision, ...)."""
    return {**fields, "sha256": sha256_of(path), "bytes": path.stat().st_size}


def verify_file(path: Path, expected: Mapping[str, Any], cause: str) -> None:
    """Raise :class:`ManifestError` naming ``path`` unless it exists with the recorded size and sha256."""
    if not path.is_file():
        raise ManifestError(f"{path}: listed in the manifest but missing")
    if path.stat().st_size != expected.get("bytes") or sha256_of(path) != expected.get("sha256"):
        raise ManifestError(f"{path}: sha256 differs from the manifest's; {cause}")
