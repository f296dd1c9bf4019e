"""The case format of the CVPR 2024 "Segment Anything in Medical Images on Laptop" challenge (MedSAM on laptop).

One ``.npz`` per case (read with ``allow_pickle=False``):

- ``imgs``: a 2D case is (H, W, 3) uint8; a 3D case is (D, H, W) uint8, already windowed to 0..255.
- ``boxes``: 2D (N, 4) ``[x_min, y_min, x_max, y_max]``; 3D (N, 6) ``[x_min, y_min, z_min, x_max, y_max,
  z_max]``, pixels and slice indices, inclusive. Box n (from 1) prompts structure n.
- ``gts`` (training/validation cases): the label map, ``imgs``' spatial shape; ``spacing`` (3D): voxel size
  in mm in SimpleITK's (x, y, z) order, as the challenge's preparation scripts store ``GetSpacing()``; it is
  reversed here to the array's (z, y, x) axes.
- The answer is ``segs``: a label map of ``imgs``' spatial shape, value n where box n's structure is (uint8,
  as the challenge's baseline writes; uint16 beyond 255 boxes), written with ``numpy.savez_compressed``.

Case names start with ``2D_`` or ``3D_`` in the challenge; a name without either prefix is told apart by shape
(a last axis of 3 is a 2D colour image).
"""

from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from gmiseg_edge.core.errors import DataError, MissingFileError
from gmiseg_edge.core.files import atomic_path

CHALLENGE_SUFFIX = ".npz"


@dataclass(frozen=True, eq=False)
class ChallengeCase:
    """One challenge case (module docstring); ``spacing`` is per array axis in mm."""

    name: str
    path: Path
    image: np.ndarray
    boxes: np.ndarray | None
    gts: np.ndarray | None
    spacing: tuple[float, ...]

    @property
    def is_3d(self) -> bool:
        return self.image.ndim == 3 and self.spatial_shape == self.image.shape

    @property
    def spatial_shape(self) -> tuple[int, ...]:
        name = self.name.upper()
        two_d = name.startswith("2D") or (not name.startswith("3D") and self.image.ndim == 3
                                          and self.image.shape[-1] == 3)
        return tuple(self.image.shape[:2]) if two_d or self.image.ndim == 2 else tuple(self.image.shape)


def _load(path: Path) -> dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as data:
            return {key: data[key] for key in data.files}
    except (ValueError, OSError, zipfile.BadZipFile, EOFError) as exc:
        raise DataError(f"cannot read as a challenge .npz case ({type(exc).__name__}: {exc})", path) from exc


def _check_boxes(boxes: np.ndarray, shape: tuple[int, ...], path: Path) -> np.ndarray:
    columns = 2 * len(shape)
    if boxes.ndim != 2 or boxes.shape[1] != columns or not len(boxes):
        raise DataError(f"'boxes' has shape {boxes.shape}; a {len(shape)}D case needs (N, {columns}) boxes", path)
    boxes = boxes.astype(np.float64)
    if not np.isfinite(boxes).all():
        raise DataError("'boxes' holds NaN or infinite values", path)
    # file order: x, y (, z) minima then maxima; the array's axes are (y, x) or (z, y, x)
    low, high = boxes[:, : columns // 2], boxes[:, columns // 2:]
    limits = np.array(shape[::-1][:2] + ((shape[0],) if len(shape) == 3 else ()), dtype=np.float64)
    for n, (lo, hi) in enumerate(zip(low, high, strict=True), start=1):
        if (hi < lo).any() or (lo < 0).any() or (hi > limits).any():
            z = f", z < {limits[2]:g}" if len(shape) == 3 else ""
            raise DataError(f"box {n} {boxes[n - 1].tolist()} is empty or outside the image "
                            f"(x < {limits[0]:g}, y < {limits[1]:g}{z})", path)
    return boxes


def read_challenge_case(path: str | Path) -> ChallengeCase:
    """Read a challenge case (module docstring); DataError naming the file on anything malformed."""
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(path, "challenge case")
    data = _load(path)
    if "imgs" not in data:
        raise DataError(f"has no 'imgs' array (keys: {sorted(data)}); not a challenge case", path)
    image = data["imgs"]
    if image.ndim not in (2, 3) or image.dtype.kind not in "uif":
        raise DataError(f"'imgs' has shape {image.shape} and dtype {image.dtype}; expected (H, W, 3) or (D, H, W) "
                        "values 0..255", path)
    if image.dtype != np.uint8:
        if image.size and (not np.isfinite(image).all() or image.min() < 0 or image.max() > 255):
            raise DataError(f"'imgs' values span {image.min()}..{image.max()}; the challenge format is 0..255", path)
        image = np.round(image).astype(np.uint8)
    case = ChallengeCase(path.name.removesuffix(CHALLENGE_SUFFIX), path, image, None, None, ())
    shape = case.spatial_shape
    boxes = _check_boxes(np.asarray(data["boxes"]), shape, path) if "boxes" in data else None
    gts = data.get("gts")
    if gts is not None and (tuple(gts.shape) != shape or gts.dtype.kind not in "biu"):
        raise DataError(f"'gts' has shape {gts.shape} ({gts.dtype}); expected integer labels of shape {shape}", path)
    spacing: tuple[float, ...] = (1.0,) * len(shape)
    if len(shape) == 3 and "spacing" in data:
        values = np.asarray(data["spacing"], dtype=np.float64).ravel()
        if values.shape != (3,) or not np.isfinite(values).all() or (values <= 0).any():
            raise DataError(f"'spacing' {values.tolist()} is not three positive sizes in mm", path)
        spacing = tuple(float(v) for v in values[::-1])
    return ChallengeCase(case.name, path, image, boxes, gts, spacing)


def write_segs(path: str | Path, segs: np.ndarray) -> Path:
    """Write the answer ``segs`` (a label map) as the challenge expects, atomically."""
    path = Path(path)
    segs = np.asarray(segs)
    dtype = np.uint8 if segs.size == 0 or segs.max() <= 255 else np.uint16
    with atomic_path(path, suffix=CHALLENGE_SUFFIX) as tmp:
        np.savez_compressed(tmp, segs=segs.astype(dtype))
    return path
