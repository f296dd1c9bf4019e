"""Save a Labels layer with the geometry of the image it was drawn on: NIfTI / NRRD through
:func:`gmiseg_edge.data.save_like`, DICOM-SEG (``.dcm``) through :func:`gmiseg_edge.data.dicom_seg.write_dicom_seg`
when the source is a DICOM series, PNG for a 2D image. Qt-free; every write is atomic."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from gmiseg_edge.core.errors import DataError
from gmiseg_edge.data.readers import Image2D, Volume
from gmiseg_edge.data.writers import save_like

ALGORITHM_KINDS = ("SEMIAUTOMATIC", "AUTOMATIC")


def save_labels(labels: np.ndarray, source: Image2D | Volume | None, path: str | Path, model: str = "",
                automatic: bool = False) -> Path:
    """Write napari-order ``labels`` ((k, j, i) for a volume, (H, W) for a 2D image) beside ``source``'s geometry.

    A ``.dcm`` path writes a DICOM-SEG referencing the source series (one segment per label value 1..max, named
    ``object n``; AUTOMATIC when ``automatic``, e.g. from a support set, else SEMIAUTOMATIC).
    """
    path = Path(path)
    if source is None:
        raise DataError("the image layer has no source file geometry (open the image with the gmiseg-edge reader "
                        "to save a mask beside it)", path)
    labels = np.asarray(labels)
    if isinstance(source, Volume):
        if labels.ndim != 3:
            raise DataError(f"labels of shape {labels.shape} do not match the volume {source.path}", path)
        in_file_order = np.transpose(labels, (2, 1, 0))
        if path.suffix.lower() == ".dcm":
            from gmiseg_edge import __version__
            from gmiseg_edge.data.dicom_seg import SegAlgorithm, write_dicom_seg  # highdicom: only for DICOM-SEG

            count = int(labels.max(initial=0))
            if count < 1:
                raise DataError("the Labels layer is empty: nothing to save", path)
            kind = "AUTOMATIC" if automatic else "SEMIAUTOMATIC"
            return write_dicom_seg(source, in_file_order, path, {n: f"object {n}" for n in range(1, count + 1)},
                                   SegAlgorithm(f"gmiseg-edge {model}".strip(), __version__, kind))
        return save_like(source, in_file_order, path)
    return save_like(source, labels, path)
