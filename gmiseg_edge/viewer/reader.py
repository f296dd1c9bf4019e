"""The plugin's reader: every format the toolkit reads (PNG/JPEG/TIFF, NIfTI, NRRD, DICOM series) as a napari
Image layer.

Layout: a volume's voxel array (i, j, k) is shown as napari data (k, j, i), so napari's slice k is exactly the
runtime's ``slice_2d(volume, axis=2, k)`` (rows j, columns i) and a prompt's pixels mean the same in both. The
layer's scale is the voxel spacing in mm along (k, j, i); its axis labels name where each axis points in the
header's space (``k (S)``, ``j (P)``, ``i (L)`` for an LPS series), and its metadata keep the source
(``gmiseg_source``: the :class:`~gmiseg_edge.data.Volume` or :class:`~gmiseg_edge.data.Image2D`) so that a
mask is saved with the source geometry (:mod:`gmiseg_edge.viewer.save`).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from gmiseg_edge.data.readers import SUFFIXES_2D, SUFFIXES_3D, Image2D, Volume, file_stem, file_suffix, read_image

SOURCE_KEY = "gmiseg_source"  # layer.metadata key holding the Volume / Image2D the layer was read from
LayerData = tuple[Any, dict[str, Any], str]

#: world axis letters of each space name a reader gives (positive direction along world axes 0, 1, 2)
_SPACES = {"RAS": "RAS", "LPS": "LPS", "right-anterior-superior": "RAS", "left-posterior-superior": "LPS",
           "scanner-xyz": "RAS", "LAS": "LAS", "left-anterior-superior": "LAS"}
_OPPOSITE = {"R": "L", "L": "R", "A": "P", "P": "A", "S": "I", "I": "S"}


def axis_codes(affine: np.ndarray, space: str) -> tuple[str, str, str] | None:
    """Where voxel axes i, j, k point in ``space`` (e.g. ``("L", "P", "S")``), None for an unknown space."""
    letters = _SPACES.get(space) or _SPACES.get(space.lower())
    if letters is None:
        return None
    codes = []
    for column in np.asarray(affine, dtype=np.float64)[:3, :3].T:
        world = int(np.argmax(np.abs(column)))
        letter = letters[world]
        codes.append(letter if column[world] >= 0 else _OPPOSITE[letter])
    return (codes[0], codes[1], codes[2])


def volume_layer(volume: Volume, name: str | None = None) -> LayerData:
    """A volume as napari layer data: the array (k, j, i) (a view), scale in mm, axis labels, the source kept."""
    codes = axis_codes(volume.affine, volume.space)
    labels = tuple(f"{axis} ({code})" if codes else axis for axis, code in zip("kji", (codes or "???")[::-1],
                                                                                 strict=True))
    si, sj, sk = volume.spacing
    metadata = {SOURCE_KEY: volume, "space": volume.space, "axis_codes": codes, "affine": volume.affine}
    return (np.transpose(volume.array, (2, 1, 0)),
            {"name": name or file_stem(volume.path), "scale": (sk, sj, si), "axis_labels": labels,
             "units": ("mm", "mm", "mm"), "metadata": metadata},
            "image")


def image_layer(image: Image2D, name: str | None = None) -> LayerData:
    """A 2D image as napari layer data (grey (H, W) or RGB (H, W, 3)), its pixel spacing as scale."""
    rgb = image.array.ndim == 3
    return (image.array,
            {"name": name or file_stem(image.path), "scale": image.spacing, "rgb": rgb,
             "metadata": {SOURCE_KEY: image}},
            "image")


def read_layers(path: str | Path) -> list[LayerData]:
    """Read ``path`` with the toolkit's readers (a :class:`~gmiseg_edge.core.errors.DataError` names a bad file)."""
    item = read_image(path)
    return [volume_layer(item) if isinstance(item, Volume) else image_layer(item)]


def _readable(path: str | Path) -> bool:
    path = Path(path)
    if path.is_dir():
        return True  # a DICOM series folder; the reader says so when it holds none
    suffix = file_suffix(path)
    return suffix in SUFFIXES_2D + SUFFIXES_3D or suffix == ".dcm"


def napari_get_reader(path: str | list[str]) -> Callable[[str | list[str]], list[LayerData]] | None:
    """npe2 reader contribution: a reader for ``path`` (or each of a list of paths), None when not ours."""
    paths = [path] if isinstance(path, str | Path) else list(path)
    if not paths or not all(_readable(p) for p in paths):
        return None

    def reader(given: str | list[str]) -> list[LayerData]:
        items = [given] if isinstance(given, str | Path) else list(given)
        return [layer for item in items for layer in read_layers(item)]

    return reader
