"""The model folder's ``manifest.json`` (DESIGN §6): written by export and build, read by the runtime.

Plain JSON and the standard library only, so the torch-free runtime can read it. Every file the runtime
loads is listed with its sha256 and checked before use.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from gmiseg_edge.atomic import write_bytes_atomic
from gmiseg_edge.runtime.transforms import PreprocessConfig

MANIFEST = "manifest.json"
FORMAT = "gmiseg-edge-model"
FORMAT_VERSION = 1
PRECISIONS = ("fp32", "fp16", "int8")


class ManifestError(ValueError):
    """A model folder whose manifest is missing, malformed, or does not match its files."""


def graph_filename(graph: str, precision: str) -> str:
    """``encoder.onnx``, ``encoder.fp16.onnx``, ``decoder.int8.onnx``, ..."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    return f"{graph}.onnx" if precision == "fp32" else f"{graph}.{precision}.onnx"


def write_json_atomic(path: Path, data: dict[str, Any]) -> None:
    """Write JSON to ``path`` through a temporary file and a rename: readers never see half a file."""
    write_bytes_atomic(path, (json.dumps(data, indent=2) + "\n").encode())


class Manifest:
    """A parsed ``manifest.json`` with the accessors the runtime needs."""

    def __init__(self, data: dict[str, Any], folder: Path) -> None:
        self.data = data
        self.folder = folder

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
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise ManifestError(f"{path}: not a gmiseg-edge manifest (format {data.get('format')!r})")
        if data.get("format_version") != FORMAT_VERSION:
            raise ManifestError(
                f"{path}: manifest format version {data.get('format_version')} is not supported "
                f"(this gmiseg-edge reads version {FORMAT_VERSION}); export the model again"
            )
        for key in ("model", "graphs", "files", "validation"):
            if key not in data:
                raise ManifestError(f"{path}: manifest has no {key!r} section")
        return cls(data, folder)

    @property
    def model_name(self) -> str:
        return str(self.data["model"]["name"])

    @property
    def preprocess(self) -> PreprocessConfig:
        return PreprocessConfig.from_dict(self.data["model"]["preprocess"])

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
        return self.folder / pair[graph]

    def validation(self, precision: str = "fp32") -> dict[str, Any] | None:
        """The recorded validation of a precision (None if it was never validated)."""
        return self.data["validation"].get(precision)

    def verify_files(self, names: Iterable[str] | None = None) -> None:
        """Check the sha256 and size of listed files (all by default) and of their external data; raise naming
        the first that is unlisted, missing or different."""
        entries = self.data["files"]
        for name in names if names is not None else entries:
            if name not in entries:
                raise ManifestError(f"{self.folder / name}: not listed in the manifest's files; cannot verify it")
            entry = entries[name]
            verify_file(self.folder / name, entry, "the file was altered or corrupted after export")
            if "external_data" in entry:  # weights of a graph over 2 GB
                verify_file(self.folder / entry["external_data"]["file"], entry["external_data"],
                            "the file was altered or corrupted after export")


def verify_file(path: Path, expected: dict[str, Any], cause: str) -> None:
    """Raise :class:`ManifestError` naming ``path`` unless it exists with the recorded size and sha256."""
    from gmiseg_edge.models.weights import sha256_of

    if not path.is_file():
        raise ManifestError(f"{path}: listed in the manifest but missing")
    if path.stat().st_size != expected.get("bytes") or sha256_of(path) != expected.get("sha256"):
        raise ManifestError(f"{path}: sha256 differs from the manifest's; {cause}")
