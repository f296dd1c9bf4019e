"""``segment``'s options (one prompt source), its output naming, and the window of a sample case: no model
needed."""

from __future__ import annotations

from pathlib import Path

import pytest

from gmiseg_edge.core.errors import InputError
from gmiseg_edge.jobs.evaluate_volumes import case_window
from gmiseg_edge.jobs.segment import (
    BoxesPrompt,
    BoxPrompt,
    InputFile,
    InstancesPrompt,
    LabelPrompt,
    PointsPrompt,
    SegmentOptions,
    SupportSetPrompt,
    mask_suffix,
    output_names,
)
from gmiseg_edge.jobs.segment.prompts import gives_label_map, propagates, seed_slice, structure_label

BOX = (1.0, 2.0, 30.0, 40.0)


def test_what_each_prompt_source_implies():
    assert seed_slice(BoxPrompt(BOX, 3)) == 3 and seed_slice(LabelPrompt(2)) is None
    assert propagates(PointsPrompt(((5.0, 6.0, 1),), propagate=True)) and not propagates(BoxesPrompt((BOX,)))
    assert structure_label(SupportSetPrompt(Path("ex"), 5)) == 5 and structure_label(BoxPrompt(BOX)) is None
    assert gives_label_map(InstancesPrompt()) and not gives_label_map(LabelPrompt(1))
    with pytest.raises(InputError):
        PointsPrompt(())
    with pytest.raises(InputError):
        BoxesPrompt(())


def test_options_need_a_prompt_unless_the_inputs_bring_theirs_and_a_known_format():
    with pytest.raises(InputError, match="no prompt"):
        SegmentOptions().check()
    SegmentOptions().check(prompts_in_inputs=True)
    with pytest.raises(InputError, match="challenge cases"):
        SegmentOptions(prompt=LabelPrompt(1)).check(prompts_in_inputs=True)
    with pytest.raises(InputError, match="--format 'mha': expected one of auto, nifti, nrrd, metaimage, dicom-seg"):
        SegmentOptions(prompt=LabelPrompt(1), format="mha").check()


def test_each_input_maps_to_one_mask_suffix_and_names_never_collide(tmp_path):
    (tmp_path / "series").mkdir()
    suffixes = {name: mask_suffix(Path(name)) for name in ("a.png", "b.JPG", "c.tif", "d.nii.gz", "e.nii",
                                                           "f.nrrd", "g.nhdr", "h.npz")}
    assert suffixes == {"a.png": ".png", "b.JPG": ".png", "c.tif": ".png", "d.nii.gz": ".nii.gz", "e.nii": ".nii",
                        "f.nrrd": ".nrrd", "g.nhdr": ".nrrd", "h.npz": ".npz"}
    assert mask_suffix(tmp_path / "series") == ".dcm"  # a DICOM series: a DICOM-SEG
    assert [mask_suffix(tmp_path / "series", f) for f in ("nifti", "nrrd")] == [".nii.gz", ".nrrd"]
    assert mask_suffix(Path("x.png"), "nifti") == ".png"  # --format applies to volumes only
    names = output_names([InputFile(Path("x.png")), InputFile(Path("x.jpg")), InputFile(Path("y.nii.gz"))])
    assert names == ["x_png", "x_jpg", "y"]
    with pytest.raises(InputError, match=r"would both write x_png_mask\.png"):
        output_names([InputFile(Path("x.png")), InputFile(Path("x.jpg")), InputFile(Path("x_png.png"))])


def test_a_cases_window_is_read_from_window_then_the_legacy_normalisation_key():
    assert case_window({"window": "lung", "normalisation": "abdomen"}) == "lung"
    assert case_window({"normalisation": [-160, 240]}) == (-160, 240)
    assert case_window({}) == "percentile"
