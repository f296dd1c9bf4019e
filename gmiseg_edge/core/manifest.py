"""The model folder's ``manifest.json`` (DESIGN §6): its one reader and writer.

Export creates it (:meth:`Manifest.create`), the TensorRT build records engines in it
(:meth:`Manifest.record_engine`), the runtime reads it. Nothing else touches the JSON: every part asks this
class. Plain JSON and the standard library only, so the torch-free runtime can read it. Every file the
runtime loads is listed with its sha256 and size and checked before use.

The folder is a trust boundary: every path the manifest names (graphs, files, their external data, engines,
the adapter and base checkpoint files) must be a plain file name inside the folder (no folder separators,
no ``..``, not absolute), or the manifest is refused naming the field. A file is verified by the very path
that is then loaded, and what identifies it (:meth:`Manifest.verify_path`) is the sha256 of the bytes read,
never the value the manifest records.

Task decoders (DESIGN §11) live in the ``decoders/`` subfolder, the one exception to plain names: the optional
``tasks`` section maps a task name (lower-case letters, digits, ``_`` and ``-``) to its decoder graph and
adapter file names (plain names inside ``decoders/``), their sha256 and sizes, and the adapter's provenance.
Manifests without it (every folder written before tasks existed) load as before; readers that predate it
ignore it.

Format versions: 1 is the only one written so far; a folder of an unknown version is refused with the
command that writes a current one.
"""

from __future__ import annotations

import copy
import datetime as dt
import hashlib
import json
import re
from collections.abc import Iterable, Mapping
from pathlib import Path, PureWindowsPath
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
    "base_checkpoint": dict, "adapter": (dict, type(None)), "engines": dict, "versions": dict, "tasks": dict,
}
OPTIONAL_SECTIONS = ("base_checkpoint", "adapter", "engines", "versions", "tasks")
TASKS_DIR = "decoders"  # the model folder's subfolder holding task decoders and their adapters
TASK_FILES = ("decoder", "adapter")  # what each task entry lists under "files"
_TASK_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")
#: names Windows reserves for devices (a file "con.onnx" cannot be made there): no task may take one
_WINDOWS_RESERVED = re.compile(r"con|prn|aux|nul|com[0-9]|lpt[0-9]")
MIN_INPUT_SIZE, MAX_INPUT_SIZE = 16, 4096  # a model's square input side (SAM: 1024, lite_medsam: 256)


def check_task_name(name: Any, where: Path | str = "task") -> str:
    """``name`` if it is a valid task name (1-64 of a-z, 0-9, ``_``, ``-``, starting with a letter or digit:
    it becomes a file name); otherwise a :class:`ManifestError` naming ``where``."""
    if not isinstance(name, str) or not _TASK_NAME.fullmatch(name):
        raise ManifestError(f"{where}: task name {name!r} must be 1-64 characters of a-z, 0-9, '_' or '-', "
                            "starting with a letter or digit")
    if _WINDOWS_RESERVED.fullmatch(name):
        raise ManifestError(f"{where}: task name {name!r} is a device name on Windows (con, prn, aux, nul, com0-9, "
                            "lpt0-9), where its files could not be made; choose another")
    return name


def graph_filename(graph: str, precision: str) -> str:
    """``encoder.onnx``, ``encoder.fp16.onnx``, ``decoder.int8.onnx``, ..."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    return f"{graph}.onnx" if precision == "fp32" else f"{graph}.{precision}.onnx"


def engine_filename(graph: str, precision: str) -> str:
    """``encoder.fp16.engine``, ..."""
    return f"{graph}.{precision}.engine"


def external_data_name(name: str) -> str:
    """The one name export gives the external weights of graph ``name`` (ONNX Runtime loads them by it)."""
    return f"{name}.data"


def check_file_name(value: Any, field: str, where: Path | str) -> str:
    """``value`` if it is a plain file name inside the model folder; otherwise a :class:`ManifestError` naming
    ``field`` (a path with folders, ``..``, an absolute or drive path would load a file nothing verified)."""
    if (not isinstance(value, str) or value in ("", ".", "..") or "/" in value or "\\" in value or "\0" in value
            or PureWindowsPath(value).name != value):
        raise ManifestError(f"{where}: manifest field {field!r} must be a plain file name inside the model folder "
                            f"(no folders, '..' or absolute paths), got {value!r}")
    return value


def _check_paths(data: dict[str, Any], path: Path) -> None:
    """Every path the manifest names is a plain file name (raises naming the first field that is not)."""
    for precision, pair in data["graphs"].items():
        if not isinstance(pair, dict):
            raise ManifestError(f"{path}: manifest field 'graphs.{precision}' is {type(pair).__name__}, not an object")
        for graph, name in pair.items():
            check_file_name(name, f"graphs.{precision}.{graph}", path)
    for name, entry in data["files"].items():
        check_file_name(name, f"files[{name!r}]", path)
        external = entry.get("external_data") if isinstance(entry, dict) else None
        if external is not None:
            field = f"files[{name!r}].external_data.file"
            check_file_name(external.get("file") if isinstance(external, dict) else None, field, path)
            if external["file"] != external_data_name(name):
                raise ManifestError(f"{path}: manifest field {field!r} must be {external_data_name(name)!r} (the file "
                                    f"the graph loads its weights from), got {external['file']!r}")
    for name, entry in (data.get("engines") or {}).items():
        check_file_name(name, f"engines[{name!r}]", path)
        if isinstance(entry, dict) and "source" in entry:
            check_file_name(entry["source"], f"engines[{name!r}].source", path)
    if data.get("adapter") is not None:
        check_file_name(data["adapter"].get("file"), "adapter.file", path)
    base = data.get("base_checkpoint") or {}
    if base.get("file") is not None:
        check_file_name(base["file"], "base_checkpoint.file", path)
    for task, entry in (data.get("tasks") or {}).items():
        check_task_name(task, f"{path}: manifest field 'tasks'")
        files = entry.get("files") if isinstance(entry, dict) else None
        if not isinstance(files, dict) or any(not isinstance(files.get(k), dict) for k in TASK_FILES):
            raise ManifestError(f"{path}: manifest field 'tasks.{task}.files' must list {' and '.join(TASK_FILES)}")
        for key in TASK_FILES:
            check_file_name(files[key].get("file"), f"tasks.{task}.files.{key}.file", path)


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
    size = model["preprocess"]["input_size"]
    if isinstance(size, bool) or not isinstance(size, int) or not MIN_INPUT_SIZE <= size <= MAX_INPUT_SIZE:
        raise ManifestError(f"{path}: manifest field 'model.preprocess.input_size' must be a whole number of pixels "
                            f"from {MIN_INPUT_SIZE} to {MAX_INPUT_SIZE}, got {size!r}")
    for precision, report in data["validation"].items():
        _check_report(report, f"validation.{precision}", path)
    _check_paths(data, path)
    for task, entry in (data.get("tasks") or {}).items():
        if "validation" in entry:
            _check_report(entry["validation"], f"tasks.{task}.validation", path)
    return data


#: where the commands write model folders, relative to the working folder: the main job's, then ``export``'s
MADE_BY = (("the main job (`gmiseg-edge demo`)", Path("runs/demo")), ("`gmiseg-edge export`", Path("models")))


def model_folders_hint(name: str = "") -> str:
    """Where model folders made from this working folder are (the main job's first; ``name`` first among them),
    or how to make one."""
    for maker, parent in MADE_BY:
        found = sorted(p.parent for p in parent.glob(f"*/{MANIFEST}"))
        if found:
            found.sort(key=lambda p: p.name != name)
            return f"{maker} made {found[0]}: give --model-dir {found[0]}"
    return "run `gmiseg-edge demo` (it writes runs/demo/lite_medsam) or `gmiseg-edge export` (models/lite_medsam)"


def _check_report(report: Any, field: str, path: Path) -> None:
    """A recorded validation: an object whose ``passed`` (if given) is true or false and whose ``failures`` (if
    given) is a list of strings; otherwise an error naming ``field``."""
    if not isinstance(report, dict):
        raise ManifestError(f"{path}: manifest field {field!r} is {type(report).__name__} ({report!r}), not an object "
                            "(a validation report: passed, failures, ...); export the model again")
    if "passed" in report and not isinstance(report["passed"], bool):
        raise ManifestError(f"{path}: manifest field '{field}.passed' must be true or false, got {report['passed']!r}")
    failures = report.get("failures")
    if failures is not None and (not isinstance(failures, list) or not all(isinstance(f, str) for f in failures)):
        raise ManifestError(f"{path}: manifest field '{field}.failures' must be a list of strings, got {failures!r}")


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
        if not folder.exists():
            raise ManifestError(f"{folder}: model folder does not exist; {model_folders_hint(folder.name)}")
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
        return self.file_path(pair[graph], f"graphs.{precision}.{graph}")

    def file_path(self, name: str, field: str = "files") -> Path:
        """``folder / name``, refusing (naming ``field``) a name that is not a plain file name in the folder."""
        return self.folder / check_file_name(name, field, self.folder / MANIFEST)

    def file_entry(self, name: str) -> dict[str, Any]:
        """The ``files`` entry of ``name`` (sha256, bytes, precision, ...); an error if it is not listed."""
        check_file_name(name, "files", self.folder / MANIFEST)
        entry = self.data["files"].get(name)
        if not isinstance(entry, dict):
            raise ManifestError(f"{self.folder / name}: not listed in the manifest's files; cannot verify it")
        return entry

    def file_sha256(self, name: str) -> str:
        return str(self.file_entry(name).get("sha256"))

    def file_names(self) -> list[str]:
        """The names of the files the manifest lists (graphs and their variants, adapter, ...), in its order."""
        return list(self.data["files"])

    def file_bytes(self, name: str) -> int | None:
        """Bytes on disk of a listed file with its external data (None: ``name`` is not listed)."""
        entry = self.data["files"].get(name)
        if not isinstance(entry, dict):
            return None
        return int(entry.get("bytes", 0)) + int((entry.get("external_data") or {}).get("bytes", 0))

    def to_dict(self) -> dict[str, Any]:
        """A copy of the whole manifest as JSON data (changing it changes nothing here)."""
        return copy.deepcopy(self.data)

    def validation(self, precision: str = "fp32") -> dict[str, Any] | None:
        """The recorded validation of a precision (None if it was never validated)."""
        return self.data["validation"].get(precision)

    def engines(self) -> dict[str, dict[str, Any]]:
        """Recorded TensorRT engines by file name (a copy)."""
        return dict(self.data.get("engines") or {})

    # -- tasks (DESIGN §11) ------------------------------------------------------------------------------
    def tasks(self) -> dict[str, dict[str, Any]]:
        """Task name -> its entry (decoder and adapter files, adapter config and provenance, validation)."""
        return dict(self.data.get("tasks") or {})

    def task_entry(self, task: str) -> dict[str, Any]:
        """The entry of ``task``; an error names the tasks present."""
        entry = self.tasks().get(task)
        if entry is None:
            present = ", ".join(sorted(self.tasks())) or "none"
            raise ManifestError(f"{self.folder}: no task {task!r} (tasks present: {present}); add one with "
                                "`gmiseg-edge adapt` or `gmiseg-edge add-task`")
        return entry

    def task_file_path(self, task: str, kind: str = "decoder") -> Path:
        """``folder/decoders/<file>`` of a task's ``decoder`` graph or ``adapter`` file (not verified)."""
        entry = self.task_entry(task)["files"][kind]
        return self.folder / TASKS_DIR / check_file_name(entry["file"], f"tasks.{task}.files.{kind}.file",
                                                         self.folder / MANIFEST)

    def verify_task_file(self, task: str, kind: str = "decoder") -> tuple[Path, str]:
        """The path of a task's ``decoder`` or ``adapter`` file and the sha256 of its bytes, checked against the
        manifest (an error names the file)."""
        path = self.task_file_path(task, kind)
        sha = verify_file(path, self.task_entry(task)["files"][kind], "the file was altered after it was added")
        return path, sha

    def record_task(self, task: str, entry: Mapping[str, Any]) -> None:
        """Add a task entry (its files must already be in ``decoders/``); :meth:`save` writes it."""
        check_task_name(task, self.folder)
        if task in self.tasks():
            raise ManifestError(f"{self.folder}: task {task!r} already exists")
        self.data.setdefault("tasks", {})[task] = dict(entry)

    def verify_path(self, path: Path) -> str:
        """Check the file at ``path`` (a listed file of this folder: ``folder / name``) and its external data
        against the manifest, and return its identity: the sha256 of the bytes read (combined with the external
        data's when there is any), never the manifest's recorded value. Raises naming the file at fault."""
        path = Path(path)
        if path.parent != self.folder:
            raise ManifestError(f"{path}: not a file of the model folder {self.folder}; cannot verify it")
        name = path.name
        entry = self.file_entry(name)
        cause = "the file was altered or corrupted after export"
        sha = verify_file(path, entry, cause)
        external = entry.get("external_data")
        data_path = self.file_path(external_data_name(name), f"files[{name!r}].external_data.file")
        if external is None:
            if data_path.exists():  # the graph could load weights nothing verified
                raise ManifestError(f"{data_path}: external data of {name} not listed in the manifest; "
                                    "cannot verify it")
            return sha
        if external.get("file") != data_path.name:
            field = f"files[{name!r}].external_data.file"
            raise ManifestError(f"{self.folder / MANIFEST}: manifest field {field!r} must be {data_path.name!r}, "
                                f"got {external.get('file')!r}")
        data_sha = verify_file(data_path, external, cause)  # weights of a graph over 2 GB
        return hashlib.sha256(f"{sha}+{data_sha}".encode()).hexdigest()

    def verify_files(self, names: Iterable[str] | None = None) -> dict[str, str]:
        """Check the sha256 and size of listed files (all by default) and of their external data; raise naming
        the first that is unlisted, missing or different. Returns each file's identity (:meth:`verify_path`)."""
        names = list(names) if names is not None else self.file_names()
        return {name: self.verify_path(self.file_path(name)) for name in names}

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


def verify_file(path: Path, expected: Mapping[str, Any], cause: str) -> str:
    """The sha256 of ``path`` as read; raise :class:`ManifestError` naming ``path`` unless it exists with the
    recorded size and sha256."""
    if not path.is_file():
        raise ManifestError(f"{path}: listed in the manifest but missing")
    sha = sha256_of(path) if path.stat().st_size == expected.get("bytes") else None
    if sha is None or sha != expected.get("sha256"):
        raise ManifestError(f"{path}: sha256 differs from the manifest's; {cause}")
    return sha


def verify_bytes(path: Path, data: bytes, expected: Mapping[str, Any], cause: str) -> str:
    """The sha256 of ``data`` (the bytes read from ``path``, about to be used); raise naming ``path`` unless
    they have the recorded size and sha256."""
    sha = hashlib.sha256(data).hexdigest()
    if len(data) != expected.get("bytes") or sha != expected.get("sha256"):
        raise ManifestError(f"{path}: sha256 differs from the manifest's; {cause}")
    return sha
