"""Segment image files and volumes, write the masks in the input's format (``gmiseg-edge segment``).

Inputs: one file, or a folder: a dataset folder (``images/`` + ``masks/`` or ``dataset.json``, so each
image has its label map) or a plain folder of images (and of DICOM series subfolders). 2D images (PNG, JPEG,
TIFF) give a PNG mask; NIfTI and NRRD volumes a mask of the same format, header and affine
(:func:`gmiseg_edge.data.save_like`); a DICOM series (a folder, DICOMDIR or file; ``series`` picks one) a
DICOM-SEG referencing it (:mod:`gmiseg_edge.data.dicom_seg`), or with ``format`` ``nifti``/``nrrd`` a label
volume with its geometry. A challenge case (``.npz``, :mod:`gmiseg_edge.data.challenge`) brings its own boxes
and gives ``<name>.npz`` with ``segs`` (:mod:`gmiseg_edge.jobs.challenge`). Volumes are
segmented slice by slice along the last axis (k); slices not segmented stay empty. Non-uint8 intensities
are normalised per slice (``window``: ``percentile`` by default, ``minmax``, a CT preset or ``low,high``).

Exactly one prompt source:

- ``box`` / ``points`` (x, y in pixels of the 2D image, or of slice ``slice_index`` of a volume as
  ``slice_2d`` shows it: rows = j, columns = i): a volume needs ``slice_index``; only that slice is segmented.
- ``boxes`` (several objects, one box each): decoded together in batched decoder calls
  (:meth:`~gmiseg_edge.runtime.Predictor.predict_objects`); the output is a label map, object k (the k-th box,
  from 1) -> label k, where masks overlap the pixel goes to the object with the larger logit; the overlay draws
  each object in a colour of its own. Dice (with a label map) scores the union of the objects.
- ``instances`` (with the input's label map): one object per instance, each prompted with a box from its extent,
  all decoded together as with ``boxes``: without ``label`` every non-zero id of the map is an instance (an
  instance map, such as the nuclei sample's); with ``label`` each connected component of that label is one. The
  output is a label map as with ``boxes`` (objects numbered 1..K in ascending instance id, per slice).
- ``support`` (a dataset folder of examples): every 2D support, and up to ``support_slices`` labelled slices
  per support volume spread over the label's extent, form one :class:`SupportSetSegmenter`; every slice of a
  volume is segmented with ``require_presence=True`` (a slice where no support finds the structure stays
  empty), then only the run of slices connected to the most confident one is kept
  (:mod:`gmiseg_edge.runtime.support_volume`; when no slice is found that way, the slices found by appearance
  alone, with a note saying so); a 2D image is segmented without the presence decision.
- ``label`` alone (evaluation): a box from the extent of label ``label`` in the input's label map, on each
  slice where it is present (2D: the whole image).

``propagate`` (volumes; DESIGN §10, :mod:`gmiseg_edge.runtime.propagate`): the structure is carried from one
seed slice through its neighbours until it ends: the seed is the ``box``/``points`` prompt on ``slice_index``,
or with ``label`` the labelled slice of largest area of that label in the label map (which is kept). The
volume's intensities are mapped once for the whole volume with ``window``.

With ``label`` the structure is ``label`` in every label map (supports, evaluation); without it each
dataset entry's own label, or every non-zero label. When an input has a label map, Dice against it is
reported. Masks (and overlay PNGs) are written atomically.

A batch never stops at a bad input: every input is attempted, and one that fails (unreadable file, bad label
map, a prompt outside it, ...) is recorded with its one-line reason while the others go on. Outputs never
collide: inputs whose outputs would share a name (``x.png`` and ``x.jpg`` both give ``x_mask.png``) are named
with their source suffix instead (``x_png_mask.png``, ``x_jpg_mask.png``), decided before anything is
written; names that still collide are refused up front. ``out/segment_report.json`` (:data:`REPORT_NAME`,
written atomically) lists every input with its status and its output or error.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from gmiseg_edge import __version__
from gmiseg_edge.core.errors import GmisegError, InputError, MissingFileError
from gmiseg_edge.core.files import folder_problem, write_json_atomic
from gmiseg_edge.core.prompts import box_from_mask, boxes_from_labels, instance_labels
from gmiseg_edge.core.selection import spread
from gmiseg_edge.data import (
    Image2D,
    Volume,
    file_stem,
    file_suffix,
    find_pairs,
    is_dicom,
    labelled_indices,
    largest_index,
    read_image,
    read_mask,
    save_like,
    select_label,
    slice_2d,
)
from gmiseg_edge.data.align import read_labels_on
from gmiseg_edge.data.challenge import CHALLENGE_SUFFIX
from gmiseg_edge.data.intensity import to_uint8
from gmiseg_edge.data.readers import SUFFIXES_2D, SUFFIXES_3D
from gmiseg_edge.jobs.overlays import write_label_overlay, write_overlay
from gmiseg_edge.metrics import dice
from gmiseg_edge.runtime.predictor import Predictor
from gmiseg_edge.runtime.support_set import SupportSetSegmenter
from gmiseg_edge.runtime.support_volume import SupportVolume, segment_volume, uncertainty_uint8

AXIS = 2
REPORT_NAME = "segment_report.json"
OUTPUT_FORMATS = ("auto", "nifti", "nrrd", "dicom-seg")
_FORMAT_SUFFIX = {"nifti": ".nii.gz", "nrrd": ".nrrd", "dicom-seg": ".dcm"}
Progress = Callable[[str, int, int], None]  # (file name, slices done, slices in this file)


@dataclass(frozen=True)
class SegmentOptions:
    """How to prompt (see the module docstring) and what to write."""

    box: tuple[float, float, float, float] | None = None
    boxes: tuple[tuple[float, float, float, float], ...] = ()  # several objects: a label map
    points: tuple[tuple[float, float, int], ...] = ()
    support: Path | None = None
    label: int | None = None
    slice_index: int | None = None
    window: str | tuple[float, float] = "percentile"
    overlay: bool = False
    support_slices: int = 3
    propagate: bool = False
    uncertainty: bool = False  # support sets: also write the supports' disagreement map
    instances: bool = False  # one object per instance of the label map (a label map out)
    series: str | None = None  # DICOM folders holding several series: SeriesInstanceUID, number or description
    format: str = "auto"  # volumes: auto (the input's own; DICOM -> dicom-seg), nifti, nrrd, dicom-seg
    structure: str | None = None  # the structure's name (DICOM-SEG segment label)

    @property
    def prompted(self) -> bool:
        return self.box is not None or bool(self.points) or bool(self.boxes)

    def check(self, prompts_in_inputs: bool = False) -> None:
        """Exactly one prompt source (none when every input brings its own, ``prompts_in_inputs``)."""
        if self.format not in OUTPUT_FORMATS:
            raise InputError(f"--format {self.format!r}: expected one of {', '.join(OUTPUT_FORMATS)}")
        if prompts_in_inputs:
            if self.prompted or self.support is not None or self.label is not None or self.propagate:
                raise InputError("challenge cases (.npz) bring their own boxes: give no --box/--point/--support/"
                                 "--label/--propagate")
            return
        if self.prompted and (self.support is not None or self.label is not None):
            raise InputError("give one prompt source: --box/--point, or --support, or --label (not several)")
        if self.instances and (self.prompted or self.support is not None or self.propagate):
            raise InputError("--instances prompts each instance of the label map (--mask) with its own box: it goes "
                             "without --box/--point/--support/--propagate")
        if not self.prompted and self.support is None and self.label is None and not self.instances:
            raise InputError("no prompt: give --box/--point, --support DIR, or --label K with a label map")
        if self.boxes and (self.box is not None or self.points):
            raise InputError("several boxes are one object each: give them all as --box (or --boxes FILE), without "
                             "--point (points prompt one object: give them with a single --box)")
        if self.boxes and self.propagate:
            raise InputError("--propagate carries one structure: give one --box")
        if self.slice_index is not None and not self.prompted:
            raise InputError("--slice only applies to --box/--point prompts on a volume")
        if self.uncertainty and self.support is None:
            raise InputError("--uncertainty is the disagreement of a support set's examples: it needs --support")
        if self.propagate and self.support is not None:
            raise InputError("--propagate starts from --box/--point with --slice K, or from --label (its largest "
                             "labelled slice); not from --support: a volume with --support is segmented slice by "
                             "slice and kept where connected (propagating from the supports' best slice scored "
                             "lower, BENCHMARKS.md)")


@dataclass(frozen=True)
class InputFile:
    """An image to segment, with its label map when it has one."""

    image: Path
    mask: Path | None = None
    label: int | None = None


@dataclass
class FileResult:
    """What was written for one input, or why it failed (``error``: one line naming the file; a failure before
    its mask is written leaves nothing for it: a volume's overlays are written after its mask)."""

    image: Path
    output: Path
    slices: int  # 2D: 1; volumes: slices segmented
    dice: float | None = None
    overlays: list[Path] = field(default_factory=list)
    seconds: float = 0.0
    note: str = ""  # propagation: the slices visited and why it stopped; support set: the slices kept
    error: str = ""

    @property
    def ok(self) -> bool:
        return not self.error

    def to_dict(self) -> dict[str, object]:
        return {"image": str(self.image), "status": "ok" if self.ok else "failed",
                "output": str(self.output) if self.ok else None, "error": self.error or None,
                "slices": self.slices, "dice": self.dice, "seconds": round(self.seconds, 3),
                "overlays": [str(p) for p in self.overlays], "note": self.note or None}


def collect_inputs(image: Path | None = None, folder: Path | None = None, mask: Path | None = None,
                   ) -> list[InputFile]:
    """One file (with an optional label map), or every image of a dataset folder or plain folder."""
    if (image is None) == (folder is None):
        raise InputError("give exactly one of --image FILE or --input DIR")
    if image is not None:
        return [InputFile(Path(image), Path(mask) if mask else None)]
    if mask is not None:
        raise InputError("--mask goes with --image; a dataset folder (images/ + masks/) brings its own label maps")
    folder = Path(folder)  # type: ignore[arg-type]
    if not folder.exists():
        raise MissingFileError(folder, "input folder")
    if not folder.is_dir():
        raise InputError(f"{folder}: is a file; --input takes a folder (--image takes one file)")
    if (folder / "images").is_dir() or (folder / "dataset.json").is_file():
        return [InputFile(p.image, p.mask, p.label) for p in find_pairs(folder)]
    files = sorted(p for p in folder.iterdir() if not p.name.startswith(".") and (
        (p.is_file() and file_suffix(p) in SUFFIXES_2D + SUFFIXES_3D + (CHALLENGE_SUFFIX,)) or
        (p.is_dir() and is_dicom(p))))
    if not files and is_dicom(folder):
        raise InputError(f"{folder}: is a DICOM series folder: give it with --image (--input takes a folder of "
                         "images, series subfolders or a dataset)")
    if not files:
        raise InputError(f"{folder}: no image files ({', '.join(SUFFIXES_2D + SUFFIXES_3D)}, challenge .npz) "
                         "and no DICOM series subfolders")
    return [InputFile(p) for p in files]


def inputs_bring_prompts(inputs: Sequence[InputFile]) -> bool:
    """True when every input is a challenge case (``.npz``), which holds its own boxes."""
    return bool(inputs) and all(file_suffix(i.image) == CHALLENGE_SUFFIX for i in inputs)


def load_supports(predictor: Predictor, options: SegmentOptions) -> SupportSetSegmenter:
    """A segmenter holding every support of ``options.support`` (encoded through the predictor's cache)."""
    assert options.support is not None
    segmenter = SupportSetSegmenter(predictor)
    for pair in find_pairs(options.support):
        image, labels = pair.read()
        label = options.label if options.label is not None else pair.label
        mask = select_label(labels.array, label, path=labels.path)
        if isinstance(image, Volume):
            for k in spread(labelled_indices(mask, AXIS), options.support_slices):
                segmenter.add_support(to_uint8(slice_2d(image.array, AXIS, k), options.window),
                                      slice_2d(mask, AXIS, k), name=f"{pair.image} slice {k}")
        else:
            segmenter.add_support(to_uint8(image.array, options.window), mask, name=str(pair.image))
    return segmenter


def _support_note(found: SupportVolume) -> str:
    """What ``segment`` says of a support set's volume: slices marked and kept, and whether it was searched."""
    choice = found.choice
    if not choice.keep.any():
        return "support set: structure not found in any slice"
    note = (f"support set: {int(found.marked.sum())} slice(s) marked, {int(choice.keep.sum())} kept connected to "
            f"slice {choice.anchor}")
    if choice.searched:
        note += ("; found by appearance alone, away from where the supports' anatomy puts it (another patient's "
                 "lesion, or a look-alike in a scan without it): check it")
    return note


class _FileSegmenter:
    """Segments one 2D image (a slice) by the chosen prompt source."""

    def __init__(self, predictor: Predictor, options: SegmentOptions, supports: SupportSetSegmenter | None) -> None:
        self.predictor = predictor
        self.options = options
        self.supports = supports

        self.uncertainty: np.ndarray | None = None  # the last support-set query's, as uint8 (0..255 for 0..0.5)

    def __call__(self, pixels: np.ndarray, truth: np.ndarray | None) -> np.ndarray:
        if self.supports is not None:  # a 2D image (volumes go through runtime.support_volume.segment_volume)
            prediction = self.supports.segment(pixels)
            self.uncertainty = uncertainty_uint8(prediction)
            return prediction.mask
        if self.options.boxes:
            return self.predictor.predict(pixels, boxes=self.options.boxes).label_map()
        if self.options.instances:
            assert truth is not None
            _, boxes = boxes_from_labels(instance_labels(truth) if truth.dtype == bool else truth)
            if not len(boxes):
                return np.zeros(truth.shape, np.uint8)
            return self.predictor.predict(pixels, boxes=boxes).label_map()
        if self.options.prompted:
            pts = self.options.points
            return self.predictor.predict(
                pixels,
                points=[p[:2] for p in pts] if pts else None,
                labels=[p[2] for p in pts] if pts else None,
                box=self.options.box,
            ).mask
        assert truth is not None
        return self.predictor.predict(pixels, box=box_from_mask(truth)).mask


def _write_overlay(path: Path, pixels: np.ndarray, mask: np.ndarray) -> Path:
    """A bool mask tinted red; a label map (several objects) with a colour per object."""
    return write_overlay(path, pixels, mask) if mask.dtype == bool else write_label_overlay(path, pixels, mask)


def _uncertainty_path(mask_path: Path) -> Path:
    """``x_mask.nii.gz`` -> ``x_uncertainty.nii.gz``: the supports' disagreement, uint8 0..255 for 0..0.5
    (beside a DICOM-SEG: ``x_uncertainty.nii.gz``)."""
    name = mask_path.name.replace("_mask.dcm", "_mask.nii.gz") if mask_path.suffix == ".dcm" else mask_path.name
    return mask_path.with_name(name.replace("_mask.", "_uncertainty.", 1))


def _mask_suffix(image: Path, fmt: str = "auto") -> str:
    suffix = file_suffix(image)
    if suffix == CHALLENGE_SUFFIX:
        return suffix
    if suffix in SUFFIXES_2D:
        return ".png"
    if fmt != "auto":
        return _FORMAT_SUFFIX[fmt]
    if suffix in SUFFIXES_3D:
        return {".nhdr": ".nrrd"}.get(suffix, suffix)
    return ".dcm"  # a DICOM series


def output_names(inputs: Sequence[InputFile], fmt: str = "auto") -> list[str]:
    """The name each input's outputs start with (``<name>_mask.<ext>``, ``<name>_overlay``, ...): its stem, or
    when two inputs' masks would share a file name, the stem and the source suffix (``x_png``, ``x_jpg``).

    Raises InputError, before anything is written, if names still collide (e.g. ``x.png``, ``x.jpg`` and
    ``x_png.png``)."""
    def mask_of(name: str, image: Path) -> str:
        return f"{name}_mask{_mask_suffix(image, fmt)}".lower()  # lower: case-insensitive file systems

    stems = [file_stem(item.image) for item in inputs]
    counts: dict[str, int] = {}
    for stem, item in zip(stems, inputs, strict=True):
        counts[mask_of(stem, item.image)] = counts.get(mask_of(stem, item.image), 0) + 1
    names = [stem if counts[mask_of(stem, item.image)] == 1
             else f"{stem}_{file_suffix(item.image).lstrip('.').replace('.', '_')}"
             for stem, item in zip(stems, inputs, strict=True)]
    seen: dict[str, Path] = {}
    for name, item in zip(names, inputs, strict=True):
        other = seen.setdefault(mask_of(name, item.image), item.image)
        if other != item.image:
            raise InputError(f"{other} and {item.image} would both write {name}_mask{_mask_suffix(item.image, fmt)}; "
                             "rename one of them")
    return names


def _output_path(out: Path, image: Path, name: str | None = None, fmt: str = "auto") -> Path:
    if file_suffix(image) == CHALLENGE_SUFFIX:
        return out / f"{name or file_stem(image)}{CHALLENGE_SUFFIX}"  # the challenge's own naming: same name
    return out / f"{name or file_stem(image)}_mask{_mask_suffix(image, fmt)}"


def _structure(options: SegmentOptions) -> str:
    if options.structure:
        return options.structure
    if options.label is not None:
        return f"label {options.label}"
    return options.support.name if options.support is not None else "prompted structure"


def write_mask(image: Image2D | Volume, mask: np.ndarray, output: Path, run: _FileSegmenter) -> Path:
    """Write ``mask`` for ``image``: a DICOM-SEG for ``.dcm`` outputs (one segment named after the structure, or
    for a label map of several objects one segment per object, ``"<structure> <k>"``; the algorithm is the
    model, AUTOMATIC for support sets, else SEMIAUTOMATIC), else :func:`save_like`."""
    if output.suffix != ".dcm":
        return save_like(image, mask, output)
    assert isinstance(image, Volume)
    from gmiseg_edge.data.dicom_seg import SegAlgorithm, write_dicom_seg  # highdicom: DICOM-SEG outputs only

    algorithm = SegAlgorithm(f"gmiseg-edge {run.predictor.model_name}", __version__,
                             "AUTOMATIC" if run.options.support is not None else "SEMIAUTOMATIC")
    structure = _structure(run.options)
    mask = np.asarray(mask)
    if mask.dtype == bool:
        segments = {1: structure}
    else:  # objects 1..K (--box x N, --instances)
        segments = {k: f"{structure} {k}" for k in range(1, max(1, int(mask.max())) + 1)}
    return write_dicom_seg(image, mask, output, segments, algorithm)


def _truth(item: InputFile, options: SegmentOptions, shape: tuple[int, ...],
           image: Image2D | Volume | None = None) -> np.ndarray | None:
    if item.mask is None:
        if options.label is not None and options.support is None:
            raise InputError(f"{item.image}: --label needs its label map (--mask FILE, or a dataset folder)")
        if options.instances:
            raise InputError(f"{item.image}: --instances needs its label map (--mask FILE, or a dataset folder)")
        return None
    if isinstance(image, Volume) and image.format == "dicom":
        labels = replace(image, array=read_labels_on(image, item.mask), path=item.mask)
    else:
        labels = read_mask(item.mask)
    if labels.array.shape[: len(shape)] != shape:
        raise InputError(f"{item.mask}: label map shape {labels.array.shape} differs from image shape {shape}")
    label = options.label if options.label is not None else item.label
    if options.instances and label is None:  # the instance ids themselves
        if not np.issubdtype(labels.array.dtype, np.integer) or (labels.array < 0).any():
            raise InputError(f"{item.mask}: --instances needs a label map of non-negative integer instance ids")
        return labels.array
    return select_label(labels.array, label, path=item.mask)


def segment_file(item: InputFile, out: Path, run: _FileSegmenter, progress: Progress | None = None,
                 name: str | None = None) -> FileResult:
    """Segment one input file and write its mask (and overlays) into ``out`` as ``<name>_mask.<ext>`` (``name``:
    the file's stem by default, see :func:`output_names`). Errors are raised, not recorded."""
    options = run.options
    start = time.perf_counter()
    name = name or file_stem(item.image)
    output = _output_path(out, item.image, name, options.format)
    report = progress or (lambda name, done, total: None)
    if file_suffix(item.image) == CHALLENGE_SUFFIX:
        from gmiseg_edge.jobs.challenge import segment_challenge_file

        report(item.image.name, 0, 1)
        case = segment_challenge_file(run.predictor, item.image, output)
        report(item.image.name, 1, 1)
        return FileResult(item.image, output, case.image.shape[0] if case.is_3d else 1,
                          seconds=time.perf_counter() - start)
    image = read_image(item.image, series=options.series)
    if output.suffix == ".dcm" and not (isinstance(image, Volume) and image.format == "dicom"):
        raise InputError(f"{item.image}: --format dicom-seg needs a DICOM source series (a DICOM-SEG references "
                         "the series it segments); write nifti or nrrd")
    if isinstance(image, Image2D):
        truth = _truth(item, options, image.array.shape[:2])
        if options.format != "auto":
            raise InputError(f"{item.image}: --format applies to volumes; 2D masks are written as PNG")
        if options.slice_index is not None or options.propagate:
            raise InputError(f"{item.image}: --slice and --propagate apply to volumes only")
        pixels = to_uint8(image.array, options.window)
        report(item.image.name, 0, 1)
        mask = run(pixels, truth)
        report(item.image.name, 1, 1)
        save_like(image, mask, output)
        if options.uncertainty:
            save_like(image, run.uncertainty, _uncertainty_path(output))
        overlays = [_write_overlay(out / f"{name}_overlay.png", pixels, mask)] if options.overlay else []
        return FileResult(item.image, output, 1, dice(mask != 0, truth) if truth is not None else None, overlays,
                          time.perf_counter() - start)
    truth = _truth(item, options, image.array.shape, image)
    depth = image.array.shape[AXIS]
    if options.propagate:
        return _propagate_file(item, image, truth, output, run.predictor, options, report, start, name)
    if options.prompted:
        if options.slice_index is None:
            raise InputError(f"{item.image}: a volume with --box/--point needs --slice K (0..{depth - 1}, along "
                             "the last axis): the prompt's coordinates belong to one slice")
        if not 0 <= options.slice_index < depth:
            raise InputError(f"{item.image}: --slice {options.slice_index} is outside 0..{depth - 1}")
        indices = [options.slice_index]
    elif options.support is None:
        indices = labelled_indices(truth, AXIS)  # type: ignore[arg-type]
    else:
        indices = list(range(depth))
    labelled = options.boxes or options.instances
    note = ""
    if run.supports is not None:  # runtime.support_volume: every slice, then the connected run (or the search)
        found = segment_volume(run.supports, lambda k: to_uint8(slice_2d(image.array, AXIS, k), options.window),
                               depth, lambda done, total: report(item.image.name, done, total))
        # slice k's (rows j, columns i) back to the volume's (i, j, k)
        mask3d = np.ascontiguousarray(found.mask.transpose(2, 1, 0))
        spread3d = np.ascontiguousarray(found.uncertainty.transpose(2, 1, 0)) if options.uncertainty else None
        note = _support_note(found)
    else:
        mask3d = np.zeros(image.array.shape, np.uint16 if labelled else bool)  # labels: up to 65535 objects a slice
        spread3d = None
        for done, k in enumerate(indices):
            report(item.image.name, done, len(indices))
            pixels = to_uint8(slice_2d(image.array, AXIS, k), options.window)
            slice_truth = slice_2d(truth, AXIS, k) if truth is not None else None
            mask3d[:, :, k] = run(pixels, slice_truth).T
        report(item.image.name, len(indices), len(indices))
    write_mask(image, mask3d, output, run)
    if spread3d is not None:
        save_like(image, spread3d, _uncertainty_path(output))
    overlays = []
    if options.overlay:  # after the mask, as for propagation: a volume whose mask fails leaves no overlays
        (out / f"{name}_overlay").mkdir(exist_ok=True)
        for k in indices:
            mask = slice_2d(mask3d, AXIS, k)
            if mask.any():
                pixels = to_uint8(slice_2d(image.array, AXIS, k), options.window)
                overlays.append(_write_overlay(out / f"{name}_overlay" / f"slice_{k:04d}.png", pixels, mask))
    return FileResult(item.image, output, len(indices), dice(mask3d != 0, truth) if truth is not None else None,
                      overlays, time.perf_counter() - start, note=note)


def _propagate_file(item: InputFile, image: Volume, truth: np.ndarray | None, output: Path, predictor: Predictor,
                    options: SegmentOptions, report: Progress, start: float, name: str) -> FileResult:
    """Propagation through one volume (module docstring): the 3D mask with the source geometry."""
    depth = image.array.shape[AXIS]
    if options.prompted:
        if options.slice_index is None:
            raise InputError(f"{item.image}: --propagate with --box/--point needs --slice K (0..{depth - 1}, the "
                             "seed slice along the last axis)")
        pts = options.points
        seed, prompt = options.slice_index, {
            "box": options.box, "points": [p[:2] for p in pts] if pts else None,
            "labels": [p[2] for p in pts] if pts else None}
    else:
        assert truth is not None
        if not truth.any():
            raise InputError(f"{item.mask}: label {options.label} is absent: nothing to seed --propagate with")
        seed, prompt = largest_index(truth, AXIS), {"mask": truth}
    result = predictor.propagate(image.array, seed, axis=AXIS, window=options.window,
                                 progress=lambda done, total: report(item.image.name, done, total), **prompt)
    write_mask(image, result.mask, output, _FileSegmenter(predictor, options, None))
    overlays = []
    if options.overlay:
        (output.parent / f"{name}_overlay").mkdir(exist_ok=True)
        for k in np.flatnonzero(result.kept):
            pixels = to_uint8(slice_2d(image.array, AXIS, int(k)), options.window)
            path = output.parent / f"{name}_overlay" / f"slice_{k:04d}.png"
            overlays.append(write_overlay(path, pixels, slice_2d(result.mask, AXIS, int(k))))
    return FileResult(item.image, output, result.slices_visited,
                      dice(result.mask, truth) if truth is not None else None, overlays,
                      time.perf_counter() - start, note=f"propagation: {result.summary()}")


def prepare_output_folder(out: str | Path) -> Path:
    """Create ``out`` if needed and check that files can be written there (InputError naming it if not)."""
    problem = folder_problem(out)
    if problem is not None:
        raise InputError(f"output folder {problem}")
    return Path(out)


def failure_reason(item: InputFile, exc: BaseException) -> str:
    """One line naming the file: the library's message as it is, other errors with their type."""
    text = str(exc) if isinstance(exc, GmisegError) else f"{type(exc).__name__}: {exc}"
    text = " ".join(text.split())  # one line (OpenCV's messages span several)
    return text if str(item.image) in text or (item.mask and str(item.mask) in text) else f"{item.image}: {text}"


def write_report(out: Path, results: Sequence[FileResult]) -> Path:
    """``out/segment_report.json``: every input with its status and its output or error (atomically)."""
    failed = sum(not r.ok for r in results)
    return write_json_atomic(out / REPORT_NAME, {"inputs": len(results), "written": len(results) - failed,
                                                 "failed": failed, "files": [r.to_dict() for r in results]})


def segment_files(predictor: Predictor, inputs: Sequence[InputFile], out: str | Path, options: SegmentOptions,
                  progress: Progress | None = None) -> list[FileResult]:
    """Segment every input (see the module docstring); masks go to ``out/<stem>_mask.<ext>``. Every input is
    attempted: one that fails has ``error`` set and the rest go on. The report is written to
    ``out/segment_report.json``."""
    options.check(prompts_in_inputs=inputs_bring_prompts(inputs))
    names = output_names(inputs, options.format)
    out = prepare_output_folder(out)
    supports = load_supports(predictor, options) if options.support is not None else None
    run = _FileSegmenter(predictor, options, supports)
    results = []
    for item, name in zip(inputs, names, strict=True):
        start = time.perf_counter()
        try:
            results.append(segment_file(item, out, run, progress, name))
        except Exception as exc:  # recorded for this input; the batch goes on
            results.append(FileResult(item.image, _output_path(out, item.image, name, options.format), 0,
                                      seconds=time.perf_counter() - start, error=failure_reason(item, exc)))
    write_report(out, results)
    return results
