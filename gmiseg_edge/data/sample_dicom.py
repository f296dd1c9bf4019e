"""Write real DICOM CT series with pydicom from the shipped CT NIfTI volume, cropped small (the tests' series and
the one ``gmiseg-edge samples --copy`` writes).

Each slice is a CT Image Storage instance with its own UIDs, ImageOrientationPatient/ImagePositionPatient
in LPS (the NIfTI affine's RAS flipped in x and y), PixelSpacing, and stored values = HU - intercept with
RescaleIntercept -1024 (slope 1), so the reader must apply the rescale to get the NIfTI voxels back.
"""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

from gmiseg_edge.data.samples import sample_data_dir

RAS_TO_LPS = np.diag([-1.0, -1.0, 1.0, 1.0])
INTERCEPT = -1024.0


def sample_ct(crop: tuple[slice, slice, slice] = (slice(30, 94), slice(20, 84), slice(8, 20))):
    """(HU array (i, j, k), LPS affine, label map) of the shipped CT, cropped (default 64 x 64 x 12)."""
    folder = sample_data_dir() / "totalsegmentator"
    image, labels = nib.load(folder / "example_ct_sm.nii.gz"), nib.load(folder / "example_seg.nii.gz")
    start = np.array([s.start or 0 for s in crop] + [1.0])
    affine = RAS_TO_LPS @ image.affine
    affine[:, 3] = affine @ start
    return (np.asarray(image.dataobj)[crop].astype(np.int16), affine,
            np.asarray(labels.dataobj)[crop].astype(np.uint8))


def slice_dataset(hu: np.ndarray, affine: np.ndarray, k: int, series_uid: str, study_uid: str, frame_uid: str,
                  *, series_number: int = 2, description: str = "CT abdomen") -> FileDataset:
    """One CT slice k of ``hu`` (i, j, k) with geometry from the LPS ``affine``."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CTImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset("", {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study_uid, series_uid, frame_uid
    ds.PatientName, ds.PatientID, ds.PatientBirthDate, ds.PatientSex = "Test^Phantom", "GMISEG-1", "", "O"
    ds.StudyDate, ds.StudyTime, ds.StudyID, ds.AccessionNumber = "20261203", "120000", "1", ""
    ds.ReferringPhysicianName = ""
    ds.Modality, ds.SeriesNumber, ds.SeriesDescription = "CT", series_number, description
    ds.Manufacturer, ds.InstanceNumber = "gmiseg-edge sample data", 100 - k  # deliberately not in slice order
    ds.PositionReferenceIndicator = ""
    column_step, row_step = affine[:3, 0], affine[:3, 1]
    ds.ImageOrientationPatient = [*(column_step / np.linalg.norm(column_step)), *(row_step / np.linalg.norm(row_step))]
    ds.ImagePositionPatient = [float(v) for v in affine[:3, :3] @ [0, 0, k] + affine[:3, 3]]
    ds.PixelSpacing = [float(np.linalg.norm(row_step)), float(np.linalg.norm(column_step))]
    ds.SliceThickness = float(np.linalg.norm(affine[:3, 2]))
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.Rows, ds.Columns = hu.shape[1], hu.shape[0]
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1  # signed
    ds.RescaleIntercept, ds.RescaleSlope, ds.RescaleType = INTERCEPT, 1.0, "HU"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    stored = (hu[:, :, k].T.astype(np.int32) - int(INTERCEPT)).astype(np.int16)  # rows = j, columns = i
    ds.PixelData = stored.tobytes()
    return ds


def write_series(folder: Path, hu: np.ndarray, affine: np.ndarray, *, series_number: int = 2,
                 description: str = "CT abdomen", names: str = "slice") -> list[Path]:
    """Write every slice of ``hu`` into ``folder`` (files named by a scrambled order); the paths in k order."""
    folder.mkdir(parents=True, exist_ok=True)
    series_uid, study_uid, frame_uid = generate_uid(), generate_uid(), generate_uid()
    depth = hu.shape[2]
    paths = []
    for k in range(depth):
        ds = slice_dataset(hu, affine, k, series_uid, study_uid, frame_uid, series_number=series_number,
                           description=description)
        path = folder / f"{names}_{(k * 7) % depth:03d}_{k:03d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


def read_slice(path: Path) -> pydicom.Dataset:
    return pydicom.dcmread(path)


#: the sample series: whole slices, the 6 through the liver's middle (label 5)
SAMPLE_SERIES_CROP = (slice(None), slice(None), slice(12, 18))


def write_sample_series(folder: Path, crop: tuple[slice, slice, slice] = SAMPLE_SERIES_CROP) -> tuple[list[Path], Path]:
    """The shipped CT as a DICOM series in ``folder`` and its label map beside it (``<folder>_labels.nii.gz``, the
    series' grid and geometry); (the slice paths in k order, the label map's path)."""
    import nibabel as nib

    hu, affine, labels = sample_ct(crop)
    paths = write_series(Path(folder), hu, affine)
    label_path = Path(folder).parent / f"{Path(folder).name}_labels.nii.gz"
    nib.save(nib.Nifti1Image(labels, RAS_TO_LPS @ affine), label_path)
    return paths, label_path
