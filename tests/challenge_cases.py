"""Challenge-format cases (CVPR 2024 "MedSAM on laptop" .npz) written from the shipped CT for the tests."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np

from gmiseg_edge.data.intensity import apply_window
from gmiseg_edge.data.samples import sample_data_dir
from gmiseg_edge.jobs.challenge import boxes_from_labels

LABELS = {5: 1, 1: 2}  # TotalSegmentator liver -> 1, spleen -> 2


def _ct() -> tuple[np.ndarray, np.ndarray]:
    folder = sample_data_dir() / "totalsegmentator"
    ct = np.asarray(nib.load(folder / "example_ct_sm.nii.gz").dataobj)
    seg = np.asarray(nib.load(folder / "example_seg.nii.gz").dataobj)
    gts = np.zeros(seg.shape, np.uint8)
    for source, target in LABELS.items():
        gts[seg == source] = target
    # (i, j, k) -> the challenge's (D, H, W) = (k, j, i)
    return np.transpose(apply_window(ct, "abdomen"), (2, 1, 0)), np.transpose(gts, (2, 1, 0))


def write_2d_case(path: Path, z: int = 14) -> Path:
    """``2D_...npz``: one CT slice as (H, W, 3) uint8, its labels, and one tight box per label."""
    imgs, gts = _ct()
    image = np.repeat(imgs[z][:, :, None], 3, axis=2)
    np.savez_compressed(path, imgs=image, gts=gts[z], boxes=boxes_from_labels(gts[z]))
    return path


def write_3d_case(path: Path, depth: slice = slice(8, 20)) -> Path:
    """``3D_...npz``: (D, H, W) uint8, labels, 3D boxes per label, spacing (x, y, z) mm as SimpleITK orders it."""
    imgs, gts = _ct()
    imgs, gts = imgs[depth], gts[depth]
    np.savez_compressed(path, imgs=imgs, gts=gts, boxes=boxes_from_labels(gts), spacing=np.array([3.0, 3.0, 3.0]))
    return path
