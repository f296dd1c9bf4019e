"""Place a DICOM-SEG's frames on a series by their plane geometry, for SEGs whose frames cannot be placed by the
source instance they reference (widely used writers, e.g. dcmqi behind 3D Slicer, leave out
SpatialLocationsPreserved or the per-frame derivation references, and highdicom then refuses that indexing).

Each frame's ImagePositionPatient (PlanePositionSequence) is mapped through the series' affine to voxel indices
(i, j, k). A frame fits slice k when, within these tolerances:

- its ImageOrientationPatient equals the series' to :data:`ORIENTATION_TOLERANCE` (each direction cosine);
- its PixelSpacing equals the series' to :data:`SPACING_TOLERANCE` (relative), its rows and columns equal;
- its position lies within :data:`POSITION_TOLERANCE` of a voxel: a tenth of the slice spacing along the slice
  normal (|k - round(k)|), a tenth of a pixel in-plane (|i|, |j|), with round(k) one of the series' slices.

Otherwise a :class:`DataError` says which frame does not fit and by how much.
"""

from __future__ import annotations

from pathlib import Path

import highdicom as hd
import numpy as np
from pydicom.dataset import Dataset

from gmiseg_edge.core.errors import DataError
from gmiseg_edge.data.images import Volume

ORIENTATION_TOLERANCE = 1e-3  # direction cosines
SPACING_TOLERANCE = 1e-3  # relative
POSITION_TOLERANCE = 0.1  # a fraction of the voxel: of the slice spacing along the normal, of a pixel in-plane


def _group_item(seg: Dataset, frame: Dataset | None, group: str, attribute: str):
    """``attribute`` of functional group ``group``: the frame's own, else the shared one, else None."""
    for holder in (frame, seg.get("SharedFunctionalGroupsSequence", [None])[0]):
        if holder is not None and group in holder and len(holder[group].value) and attribute in holder[group][0]:
            return holder[group][0][attribute].value
    return None


def _floats(value, size: int, what: str, path: Path) -> np.ndarray:
    try:
        array = np.asarray([float(v) for v in value], dtype=np.float64)
    except (TypeError, ValueError):
        array = np.zeros(0)
    if array.shape != (size,) or not np.isfinite(array).all():
        raise DataError(f"{what} is missing or not {size} finite numbers: cannot place the frame by position", path)
    return array


def _frames(seg: hd.seg.Segmentation, path: Path) -> np.ndarray:
    """The SEG's frames (n, rows, columns) as booleans (a FRACTIONAL frame: at least half the maximum value)."""
    try:
        pixels = np.asarray(seg.pixel_array)
    except Exception as exc:
        raise DataError(f"cannot decode the SEG's frames ({type(exc).__name__}: {exc})", path) from exc
    pixels = pixels.reshape(-1, int(seg.Rows), int(seg.Columns))
    if str(seg.get("SegmentationType", "BINARY")) == "FRACTIONAL":
        return pixels * 2 >= int(seg.get("MaximumFractionalValue", 255) or 255)
    return pixels > 0


def place_frames_by_position(seg: hd.seg.Segmentation, reference: Volume, path: str | Path) -> np.ndarray:
    """The label map (i, j, k) on ``reference``'s grid of ``seg``'s frames, each placed on the slice its plane
    position matches (module docstring for the tolerances); overlapping segments keep the highest number."""
    path = Path(path)
    affine = np.asarray(reference.affine, dtype=np.float64)
    width, height, depth = reference.array.shape
    if (int(seg.Rows), int(seg.Columns)) != (height, width):
        raise DataError(f"frames of {seg.Rows}x{seg.Columns} pixels do not match the {height}x{width} slices of "
                        f"{reference.path}", path)
    series_frame = str(reference.header.datasets[0].get("FrameOfReferenceUID", "") or "")
    seg_frame = str(seg.get("FrameOfReferenceUID", "") or "")
    if series_frame and seg_frame and series_frame != seg_frame:
        raise DataError(f"FrameOfReferenceUID {seg_frame} differs from {series_frame} of {reference.path}: "
                        "its frames cannot be placed on that series", path)
    per_frame = seg.get("PerFrameFunctionalGroupsSequence")
    if not per_frame:
        raise DataError("has no per-frame functional groups (no plane position per frame): its frames cannot be "
                        "placed on a series", path)
    frames = _frames(seg, path)
    if len(per_frame) != len(frames):
        raise DataError(f"has {len(frames)} frames but {len(per_frame)} per-frame functional group items", path)
    pixel_spacing = np.linalg.norm(affine[:3, :2], axis=0)[::-1]  # (row spacing, column spacing), as DICOM orders
    series_orientation = np.concatenate([affine[:3, 0] / pixel_spacing[1], affine[:3, 1] / pixel_spacing[0]])
    to_voxels = np.linalg.inv(affine)
    labels = np.zeros(reference.array.shape, dtype=np.uint16)
    for n, (item, frame) in enumerate(zip(per_frame, frames, strict=True), start=1):
        segment = _group_item(seg, item, "SegmentIdentificationSequence", "ReferencedSegmentNumber")
        if segment is None:
            raise DataError(f"frame {n} names no segment (SegmentIdentificationSequence)", path)
        orientation = _floats(_group_item(seg, item, "PlaneOrientationSequence", "ImageOrientationPatient"), 6,
                              f"frame {n}'s ImageOrientationPatient", path)
        off = float(np.abs(orientation - series_orientation).max())
        if off > ORIENTATION_TOLERANCE:
            raise DataError(f"frame {n}'s ImageOrientationPatient {orientation.round(4).tolist()} differs from "
                            f"{series_orientation.round(4).tolist()} of {reference.path} by {off:.4f} (tolerance "
                            f"{ORIENTATION_TOLERANCE})", path)
        spacing = _floats(_group_item(seg, item, "PixelMeasuresSequence", "PixelSpacing"), 2,
                          f"frame {n}'s PixelSpacing", path)
        if np.abs(spacing / pixel_spacing - 1).max() > SPACING_TOLERANCE:
            raise DataError(f"frame {n}'s PixelSpacing {spacing.tolist()} differs from {pixel_spacing.tolist()} of "
                            f"{reference.path}", path)
        position = _floats(_group_item(seg, item, "PlanePositionSequence", "ImagePositionPatient"), 3,
                           f"frame {n}'s ImagePositionPatient", path)
        i, j, k = (float(v) for v in (to_voxels @ np.append(position, 1.0))[:3])
        slice_index = round(k)
        along, across = abs(k - slice_index), max(abs(i), abs(j))
        if not 0 <= slice_index < depth or along > POSITION_TOLERANCE:
            step = float(np.linalg.norm(affine[:3, 2]))
            where = (f"{along:.2f} of the slice spacing ({along * step:.2f} mm) from slice {slice_index}"
                     if 0 <= slice_index < depth else f"at slice {k:.2f}, outside the series' 0..{depth - 1}")
            raise DataError(f"frame {n} (segment {segment}) at ImagePositionPatient {position.round(3).tolist()} "
                            f"lies {where} of {reference.path} (tolerance {POSITION_TOLERANCE} of the spacing)", path)
        if across > POSITION_TOLERANCE:
            raise DataError(f"frame {n} (segment {segment}) at ImagePositionPatient {position.round(3).tolist()} "
                            f"is shifted in-plane by ({i:.2f}, {j:.2f}) pixels from slice {slice_index}'s corner of "
                            f"{reference.path} (tolerance {POSITION_TOLERANCE} pixel)", path)
        target = labels[:, :, slice_index]
        np.maximum(target, np.where(frame.T, int(segment), 0).astype(np.uint16), out=target)
    return labels
