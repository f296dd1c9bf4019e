"""The 3D support path (gmiseg_edge.runtime.support): support volumes registered onto a query volume in physical
space, on real scans that ship (the sample CT, the pyradiomics brain MR); ../shared/data where present."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from gmiseg_edge.core.errors import InputError
from gmiseg_edge.data import load_sample_pair, read_volume
from gmiseg_edge.data.images import Volume, lps_affine
from gmiseg_edge.metrics import dice
from gmiseg_edge.runtime.support.geometry import canonical, from_sitk, sitk_image
from gmiseg_edge.runtime.support.register3d import register_volume
from gmiseg_edge.runtime.support.segment3d import _uint8, segment_volume_from_supports

SHARED = Path(__file__).resolve().parents[3] / "shared" / "data"
LIVER = 5
SHIFT_MM = (9.0, -6.0, 6.0)  # the known transform: query mm + SHIFT = support mm, and a 4 degree turn about z
TURN_DEG = 4.0


def _lps_twin(volume: Volume) -> Volume:
    """The same voxels stored the other way round in i and j, with an LPS affine (as a DICOM series holds them)."""
    shape = volume.array.shape
    to_flipped = np.eye(4)
    to_flipped[0, 0], to_flipped[1, 1] = -1, -1
    to_flipped[0, 3], to_flipped[1, 3] = shape[0] - 1, shape[1] - 1
    affine = lps_affine(volume) @ to_flipped  # flipped index -> original index -> LPS (whatever space it came in)
    return replace(volume, array=np.ascontiguousarray(volume.array[::-1, ::-1]), affine=affine, format="nrrd",
                   space="left-posterior-superior")


@pytest.fixture(scope="module")
def ct():
    image, labels = load_sample_pair("totalseg_abdomen")
    return image, labels.array == LIVER


@pytest.fixture(scope="module")
def moved(ct):
    """The sample CT and its liver resampled through a known rigid transform (a second 'patient' whose answer is
    known), on the same grid."""
    import SimpleITK as sitk  # noqa: N813

    image, liver = ct
    c = canonical(image)
    label_c = canonical(replace(image, array=liver.astype(np.int16)))
    transform = sitk.Euler3DTransform()
    centre = c.affine @ np.array([*(np.array(c.array.shape) - 1) / 2, 1.0])
    transform.SetCenter([float(v) for v in centre[:3]])
    transform.SetRotation(0.0, 0.0, np.deg2rad(TURN_DEG))
    transform.SetTranslation(SHIFT_MM)
    reference = sitk_image(c.array, c.affine)
    array = from_sitk(sitk.Resample(sitk_image(c.array, c.affine), reference, transform, sitk.sitkLinear, -1024.0))
    truth = from_sitk(sitk.Resample(sitk_image(label_c.array, c.affine), reference, transform,
                                    sitk.sitkNearestNeighbor, 0.0)) > 0.5
    query = Volume(array.astype(np.int16), c.spacing, c.affine, Path("moved.nrrd"), "nrrd",
                   "left-posterior-superior", None)
    return query, truth


def test_canonical_is_the_same_for_ras_and_lps_files(ct):
    image, _ = ct
    twin = _lps_twin(image)
    a, b = canonical(image), canonical(twin)
    np.testing.assert_array_equal(a.array, b.array)
    np.testing.assert_allclose(a.affine, b.affine, atol=1e-6)
    np.testing.assert_array_equal(b.restore(b.array), twin.array)  # back to the file's own voxel order
    np.testing.assert_array_equal(a.restore(a.array), image.array)


def test_registration_recovers_a_known_transform(ct, moved):
    image, liver = ct
    query, truth = moved
    q, s = canonical(query), canonical(image)
    registration = register_volume(_uint8(q, "abdomen")[0], q.affine, _uint8(s, "abdomen")[0], s.affine,
                                   name="sample CT", deformable=False)
    assert registration.ok, registration.message
    label = canonical(replace(image, array=liver.astype(np.float32))).array
    warped = registration.warp(label, s.affine, q.array.shape, q.affine) >= 0.5
    before = dice(label >= 0.5, truth)
    after = dice(warped, truth)
    assert after >= 0.9, (before, after)  # tolerance: the warp is linear on 3 mm voxels
    assert after > before + 0.05


def test_partial_field_of_view_is_found_along_z(ct):
    """A 12-slice slab of the scan as the query: the z search puts the full support on it."""
    image, liver = ct
    c = canonical(image)
    slab = slice(14, 26)
    affine = c.affine.copy()
    affine[:3, 3] = (c.affine @ np.array([0, 0, slab.start, 1.0]))[:3]
    query = Volume(c.array[:, :, slab], c.spacing, affine, Path("slab.nrrd"), "nrrd", "LPS", None)
    q = canonical(query)
    registration = register_volume(_uint8(q, "abdomen")[0], q.affine, _uint8(c, "abdomen")[0], c.affine,
                                   name="sample CT", deformable=False)
    assert registration.ok, registration.message
    label = canonical(replace(image, array=liver.astype(np.float32))).array
    warped = registration.warp(label, c.affine, q.array.shape, q.affine) >= 0.5
    assert abs(registration.z_offset) <= 2 * 3.0 + 1e-6  # the start within two 3 mm voxels of the truth (0)
    assert dice(warped, label[:, :, slab] >= 0.5) >= 0.9


def test_constant_support_is_a_stated_failure(ct):
    image, _ = ct
    c = canonical(image)
    u8 = _uint8(c, "abdomen")[0]
    registration = register_volume(u8, c.affine, np.zeros_like(u8), c.affine, name="blank")
    assert not registration.ok
    assert "constant" in registration.message


def _slab_of(volume: Volume, truth: np.ndarray, low: int, high: int) -> tuple[Volume, np.ndarray]:
    """Slices low..high-1 of a volume (and its label), the affine moved with them: a shorter scan of the same body."""
    shift = np.eye(4)
    shift[2, 3] = low
    return (replace(volume, array=np.ascontiguousarray(volume.array[:, :, low:high]), affine=volume.affine @ shift),
            truth[:, :, low:high])


@pytest.mark.parametrize("slab", [(10, 20), pytest.param(None, marks=pytest.mark.extended)], ids=["slab", "whole"])
def test_segment_volume_from_a_shifted_patient(predictor, ct, moved, slab):
    """End to end with lite_medsam: the liver of the moved scan from the original, the query given in LPS file
    order and the support in RAS; the same answer (in physical space) as with the query in canonical order. The
    second call reuses the first's registration (both register the same canonical arrays; CI time), so it checks
    what follows it: the warp, the slices decoded, and the mask put back in the query's file order. In CI the
    query is 10 of the moved scan's 30 slices (a shorter scan inside the support's: CI time, the encoder runs
    once per slice); ``extended`` runs the whole scan."""
    image, liver = ct
    query, truth = moved if slab is None else _slab_of(*moved, *slab)
    twin = _lps_twin(query)
    registrations: dict = {}
    result = segment_volume_from_supports(predictor, twin, [(image, liver)], "abdomen", deformable=False,
                                          registrations=registrations)
    assert len(registrations) == 1
    assert result.path == "3d" and result.located == "anatomy"
    assert result.mask.shape == twin.array.shape
    mask = canonical(replace(twin, array=result.mask)).array
    truth_c = canonical(replace(query, array=truth)).array
    assert dice(mask, truth_c) >= 0.85, result.messages
    assert set(result.timings) >= {"encode", "register", "decode"}
    again = segment_volume_from_supports(predictor, query, [(image, liver)], "abdomen", deformable=False,
                                         registrations=registrations)
    assert again.registrations == result.registrations
    np.testing.assert_array_equal(canonical(replace(query, array=again.mask)).array, mask)


def test_bad_inputs_are_clear_errors(predictor, ct):
    image, liver = ct
    with pytest.raises(InputError, match="label is empty"):
        segment_volume_from_supports(predictor, image, [(image, np.zeros_like(liver))], "abdomen")
    with pytest.raises(InputError, match="2D image cannot take support volumes"):
        segment_volume_from_supports(predictor, image.array[:, :, 10], [(image, liver)], "abdomen")
    with pytest.raises(InputError, match="needs spacing"):
        segment_volume_from_supports(predictor, image.array, [(image, liver)], "abdomen")
    brain, brain_label = load_sample_pair("brain1")
    with pytest.raises(InputError, match="modality"):
        segment_volume_from_supports(predictor, brain, [(image, liver)], "percentile")
    with pytest.raises(InputError, match="must be volumes"):
        segment_volume_from_supports(predictor, image, [(brain.array[:, :, 3], brain_label.array[:, :, 3])])


@pytest.mark.skipif(not SHARED.is_dir(), reason="../shared/data is absent (the second CT patient)")
def test_second_ct_patient_reads_and_registers():
    """The JPEG 2000 DICOM series of another patient reads, and the first CT's liver lands on its liver."""
    from gmiseg_edge.data.align import read_labels_on

    b = read_volume(SHARED / "totalseg_ct_b" / "ct_dicom")
    b_labels = read_labels_on(b, SHARED / "totalseg_ct_b" / "seg.nii.gz")
    a = read_volume(SHARED / "totalseg_ct_a_full" / "ct.nii.gz")
    a_labels = read_labels_on(a, SHARED / "totalseg_ct_a_full" / "seg.nii.gz")
    assert b.array.shape == (512, 512, 20) and b.format == "dicom"
    qb, ca = canonical(b), canonical(a)
    registration = register_volume(_uint8(qb, "abdomen")[0], qb.affine, _uint8(ca, "abdomen")[0], ca.affine,
                                   name="ct_a")
    assert registration.ok, registration.message
    liver_a = canonical(replace(a, array=(a_labels == LIVER).astype(np.float32))).array
    liver_b = canonical(replace(b, array=b_labels == LIVER)).array
    warped = registration.warp(liver_a, ca.affine, qb.array.shape, qb.affine) >= 0.5
    assert dice(warped, liver_b) >= 0.7


def test_lesion_located_by_appearance_in_3d(predictor):
    """Another patient's brain lesion (pyradiomics brain2, MR) as the support, brain1 as the query: the one 3D
    appearance search finds brain1's lesion (measured Dice 0.685 with lite_medsam), and says how sure it is."""
    query, query_label = load_sample_pair("brain1")
    support, support_label = load_sample_pair("brain2")
    result = segment_volume_from_supports(predictor, query, [(support, support_label.array > 0)], "percentile",
                                          locate="appearance")
    assert result.located == "appearance" and result.confidence is not None and 0.5 < result.confidence <= 1
    assert dice(result.mask, query_label.array > 0) >= 0.6, result.messages


def test_anatomy_without_a_registrable_support_says_so(predictor):
    """A 3-slice support cannot be registered in 3D: dropped with a message, and an empty mask that says why."""
    query, _ = load_sample_pair("brain1")
    support, support_label = load_sample_pair("brain2")
    result = segment_volume_from_supports(predictor, query, [(support, support_label.array > 0)], "percentile",
                                          locate="anatomy")
    assert not result.mask.any()
    assert any("dropped" in m for m in result.messages) and any("empty mask" in m for m in result.messages)
