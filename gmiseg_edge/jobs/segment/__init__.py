"""Segment image files and volumes, write the masks in the input's format (``gmiseg-edge segment``).

Inputs (:mod:`.inputs`): one file, or a folder: a dataset folder (``images/`` + ``masks/`` or ``dataset.json``, so
each image has its label map) or a plain folder of images (and of DICOM series subfolders). 2D images (PNG, JPEG,
TIFF) give a PNG mask; NIfTI and NRRD volumes a mask of the same format, header and affine
(:func:`gmiseg_edge.data.save_like`); a DICOM series (a folder, DICOMDIR or file; ``series`` picks one) a
DICOM-SEG referencing it (:mod:`gmiseg_edge.data.dicom_seg`), or with ``format`` ``nifti``/``nrrd`` a label
volume with its geometry. A challenge case (``.npz``, :mod:`gmiseg_edge.data.challenge`) brings its own boxes
and gives ``<name>.npz`` with ``segs`` (:mod:`gmiseg_edge.jobs.challenge`). Output names: :mod:`.naming`.

One prompt source (:mod:`.prompts`, the union :data:`Prompt`): a box or points (one object), several boxes or
the instances of a label map (a label map out), a support set, or a label of the input's label map; box,
points and label prompts can seed propagation through a volume. The routes per input: :mod:`.routes`; what is
written: :mod:`.writing`; ``window`` maps non-uint8 intensities to uint8 (:class:`SegmentOptions`).

With a label the structure is that label in every label map (supports, evaluation); without it each dataset
entry's own label, or every non-zero label. When an input has a label map, Dice against it is reported. Masks
(and overlay PNGs) are written atomically; a batch never stops at a bad input (:mod:`.batch`), and
``out/segment_report.json`` (:data:`REPORT_NAME`) lists every input with its status and its output or error.
"""

from gmiseg_edge.jobs.segment.batch import segment_files
from gmiseg_edge.jobs.segment.inputs import InputFile, collect_inputs, inputs_bring_prompts
from gmiseg_edge.jobs.segment.naming import mask_suffix, output_names
from gmiseg_edge.jobs.segment.options import OUTPUT_FORMATS, SegmentOptions, check_output_format
from gmiseg_edge.jobs.segment.prompts import (
    BoxesPrompt,
    BoxPrompt,
    InstancesPrompt,
    LabelPrompt,
    PointsPrompt,
    Prompt,
    SupportSetPrompt,
)
from gmiseg_edge.jobs.segment.report import REPORT_NAME, FileResult
from gmiseg_edge.jobs.segment.routes import Progress, segment_file
from gmiseg_edge.jobs.segment.sources import load_supports
from gmiseg_edge.jobs.segment.writing import prepare_output_folder, write_mask

__all__ = [
    "OUTPUT_FORMATS",
    "REPORT_NAME",
    "BoxPrompt",
    "BoxesPrompt",
    "FileResult",
    "InputFile",
    "InstancesPrompt",
    "LabelPrompt",
    "PointsPrompt",
    "Progress",
    "Prompt",
    "SegmentOptions",
    "SupportSetPrompt",
    "check_output_format",
    "collect_inputs",
    "inputs_bring_prompts",
    "load_supports",
    "mask_suffix",
    "output_names",
    "prepare_output_folder",
    "segment_file",
    "segment_files",
    "write_mask",
]
