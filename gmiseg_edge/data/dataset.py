"""Dataset folders: image/mask pairs from ``images/`` + ``masks/`` or from a ``dataset.json``.

Folder convention: ``root/images/<stem>.<ext>`` pairs with ``root/masks/<stem>.<ext>`` (extensions may
differ: any suffix of :data:`gmiseg_edge.data.formats.FORMATS`; ``.nii.gz`` counts as one extension). A DICOM
series is a subfolder ``root/images/<stem>/``; its label map ``root/masks/<stem>.nii.gz`` (any axis order of the
same grid) or ``root/masks/<stem>.dcm`` (a DICOM-SEG). Hidden files, and the data file beside a detached header
(``x.raw`` beside ``x.nhdr``), are ignored. Files that are symlinks to files outside the folder are read, with a
warning (logged once per folder). :func:`read_pair` reads an image and its mask.

JSON convention: ``root/dataset.json`` holds a list (or ``{"cases": [...]}``) of
``{"image": "...", "mask": "...", "label": 3}`` with paths relative to the JSON file; ``label`` is optional
(None: every non-zero label is foreground). When ``dataset.json`` exists it wins over the folders.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from gmiseg_edge.core.errors import DataError, MissingFileError
from gmiseg_edge.data.align import read_labels_on
from gmiseg_edge.data.formats import DICOM_SEG_SUFFIX, SUFFIXES_2D, SUFFIXES_3D, file_stem, file_suffix, is_side_file
from gmiseg_edge.data.images import Image2D, Volume
from gmiseg_edge.data.readers import NanPolicy, as_label_array, is_dicom, read_image, read_mask

DICOM_SUFFIXES = (DICOM_SEG_SUFFIX,)  # one DICOM image, or a DICOM-SEG label map of a DICOM series

DATASET_JSON = "dataset.json"

log = logging.getLogger(__name__)


def read_pair(
    image_path: str | Path, mask_path: str | Path, *, nan: NanPolicy = "error"
) -> tuple[Image2D | Volume, Image2D | Volume]:
    """Read an image and its mask; both 2D or both 3D, with the same (spatial) shape and spacing. A DICOM series'
    label map may be a NIfTI/NRRD in another axis order (put on the series' grid from the affines) or a DICOM-SEG."""
    image = read_image(image_path, nan=nan)
    if isinstance(image, Volume) and image.format == "dicom":
        labels = as_label_array(read_labels_on(image, mask_path), Path(mask_path))
        return image, replace(image, array=np.ascontiguousarray(labels), path=Path(mask_path))
    mask = read_mask(mask_path)
    if isinstance(image, Volume) != isinstance(mask, Volume):
        kinds = ("3D volume", "2D image") if isinstance(image, Volume) else ("2D image", "3D volume")
        raise DataError(f"is a {kinds[0]} but its mask {mask.path} is a {kinds[1]}", image.path)
    shape = image.array.shape if isinstance(image, Volume) else image.array.shape[:2]
    if shape != mask.array.shape:
        raise DataError(
            f"image shape {tuple(shape)} does not match mask {mask.path} shape {tuple(mask.array.shape)}",
            image.path,
        )
    if not np.allclose(image.spacing, mask.spacing, rtol=1e-3, atol=1e-5):
        raise DataError(
            f"image spacing {image.spacing} mm does not match mask {mask.path} spacing {mask.spacing} mm",
            image.path,
        )
    return image, mask


@dataclass(frozen=True)
class Pair:
    """One case of a dataset: an image, its mask, and the label of interest (None: all non-zero)."""

    name: str
    image: Path
    mask: Path
    label: int | None = None

    def read(self) -> tuple[Image2D | Volume, Image2D | Volume]:
        """Read the image and mask (see :func:`read_pair`)."""
        return read_pair(self.image, self.mask)


def _index_folder(folder: Path) -> dict[str, Path]:
    files: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        if path.name.startswith(".") or (path.is_dir() and not is_dicom(path)) or is_side_file(path):
            continue
        if file_suffix(path) not in SUFFIXES_2D + SUFFIXES_3D + DICOM_SUFFIXES and not path.is_dir():
            raise DataError(
                f"unsupported file type {file_suffix(path) or '(none)'!r} in a dataset folder; "
                f"supported: {', '.join(SUFFIXES_2D + SUFFIXES_3D)}",
                path,
            )
        stem = file_stem(path)
        if stem in files:
            raise DataError(f"two files share the stem {stem!r}: {files[stem].name} and {path.name}", path)
        files[stem] = path
    return files


def _pairs_from_folders(root: Path) -> list[Pair]:
    images_dir, masks_dir = root / "images", root / "masks"
    for folder in (images_dir, masks_dir):
        if not folder.is_dir():
            raise DataError(f"no {DATASET_JSON} and no {folder.name}/ folder: not a dataset folder", root)
    images, masks = _index_folder(images_dir), _index_folder(masks_dir)
    if not images and not masks:
        raise DataError("dataset is empty: images/ and masks/ hold no image files", root)
    lonely_images = sorted(set(images) - set(masks))
    if lonely_images:
        names = ", ".join(str(images[s]) for s in lonely_images[:5])
        more = f" (and {len(lonely_images) - 5} more)" if len(lonely_images) > 5 else ""
        raise DataError(f"image(s) without a mask in {masks_dir}: {names}{more}", images[lonely_images[0]])
    lonely_masks = sorted(set(masks) - set(images))
    if lonely_masks:
        names = ", ".join(str(masks[s]) for s in lonely_masks[:5])
        more = f" (and {len(lonely_masks) - 5} more)" if len(lonely_masks) > 5 else ""
        raise DataError(f"mask(s) without an image in {images_dir}: {names}{more}", masks[lonely_masks[0]])
    _warn_about_links_out(root, [*images.values(), *masks.values()])
    return [Pair(name=stem, image=images[stem], mask=masks[stem]) for stem in sorted(images)]


def _warn_about_links_out(root: Path, paths: list[Path]) -> None:
    """Log one warning when files of the folder ``root`` are symlinks to files outside it: they are read (a dataset
    may be made of links to a shared store), but a support or training set should not take in files silently."""
    inside = root.resolve()
    outside = [(path, path.resolve()) for path in paths if not path.resolve().is_relative_to(inside)]
    if outside:
        (path, target), more = outside[0], len(outside) - 1
        log.warning("%s: %d file(s) are symlinks to files outside the folder, and are read from there: %s -> %s%s",
                    root, len(outside), path.relative_to(root), target, f" (and {more} more)" if more else "")


def _pair_from_entry(entry: object, number: int, json_path: Path) -> Pair:
    where = f"entry {number}"
    if not isinstance(entry, dict):
        raise DataError(
            f"{where} is {type(entry).__name__}, expected an object with 'image' and 'mask'", json_path
        )
    for key in ("image", "mask"):
        if not isinstance(entry.get(key), str) or not entry[key]:
            raise DataError(f"{where} has no {key!r} path (a non-empty string)", json_path)
    label = entry.get("label")
    if label is not None and (isinstance(label, bool) or not isinstance(label, int) or label == 0):
        raise DataError(f"{where}: 'label' must be a non-zero integer, got {label!r}", json_path)
    image, mask = (json_path.parent / entry[k] for k in ("image", "mask"))
    for path, key in ((image, "image"), (mask, "mask")):
        if not path.is_file():
            raise DataError(f"{where}: {key} file {path} not found", json_path)
    name = entry.get("name") or file_stem(image)
    return Pair(name=str(name), image=image, mask=mask, label=label)


def _pairs_from_json(json_path: Path) -> list[Pair]:
    try:
        content = json.loads(json_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise DataError(
            f"invalid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}", json_path
        ) from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"cannot read ({exc})", json_path) from exc
    entries = content.get("cases") if isinstance(content, dict) else content
    if not isinstance(entries, list):
        raise DataError("expected a list of cases (or an object with a 'cases' list)", json_path)
    if not entries:
        raise DataError("dataset is empty: the list of cases is empty", json_path)
    return [_pair_from_entry(entry, i, json_path) for i, entry in enumerate(entries)]


def find_pairs(root: str | Path) -> list[Pair]:
    """The image/mask pairs of a dataset folder (``dataset.json``, else ``images/`` + ``masks/``)."""
    root = Path(root)
    if not root.exists():
        raise MissingFileError(root, "dataset folder")
    if root.is_file() and root.name.endswith(".json"):
        return _pairs_from_json(root)
    if not root.is_dir():
        raise DataError("is not a folder nor a dataset .json file", root)
    if (root / DATASET_JSON).is_file():
        return _pairs_from_json(root / DATASET_JSON)
    if not any(root.iterdir()):
        raise DataError("dataset folder is empty", root)
    return _pairs_from_folders(root)
