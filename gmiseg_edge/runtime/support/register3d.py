"""3D registration of a support volume onto the query volume, in physical space (DESIGN §7, anatomy): the
classic multi-atlas step. Torch-free (SimpleITK and numpy).

Both volumes come as canonical arrays with their LPS affines (:mod:`.geometry`), already mapped to uint8 by the
same window. The method, exactly (``register_volume``):

1. **Working grid**: each volume is smoothed (Gaussian, sigma = half the difference between the working spacing
   and its own, per axis) and resampled (linear) to an isotropic grid of ``spacing`` mm (3 mm, or the volume's
   coarsest voxel size when that is larger), same origin and direction. Registration runs on these grids only;
   the transform maps query mm to support mm, so it applies to the full-resolution volumes unchanged.
2. **Start** (partial fields of view): the *body* of each volume is its voxels above ``BODY_LEVEL`` (uint8). The
   translation aligns the bodies' centroids in x and y (left-right, anterior-posterior). Along z (head-feet) a
   short scan (the second CT: 20 slices) sits somewhere inside a long one (112 slices): every offset that puts
   the shorter body z-extent inside the longer (and within 10% of the longer extent around the centred one), in
   steps of one working voxel (at most 61 offsets), is scored by the Mattes metric on grids of twice the working
   spacing; the best is the start. Its metric is the *initial metric*. When the support's body is the shorter
   one, every later metric samples only the query's slab that the start puts the support on (a fixed mask):
   without it the stages slid the short support along the query (measured: 40 mm on the two CT patients).
3. **Similarity** (versor rotation, isotropic scale, translation; centred on the query body's centroid), Mattes
   mutual information (32 bins, a seeded ``SAMPLING`` random sample of the query's working voxels), regular-step
   gradient descent with scales from physical shifts, three levels (shrink 4, 2, 1; smoothing 2, 1, 0 voxels).
4. **Affine** from the similarity, same metric and optimiser, two levels (shrink 2, 1).
5. **B-spline** (cubic, control points about every ``CONTROL_MM`` mm over the query's working grid, at least one
   mesh cell per axis), composed after the affine, optimised with LBFGS2 (ITK's own L-BFGS, not the netlib
   L-BFGS-B the 2D registration locks around), two levels (shrink 2, 1).
6. **Checks**: a stage whose final metric is not below the metric it started from is dropped (so the result is
   never worse than the start; when no stage improves, the start's translation is kept and ``message`` says so).
   A similarity scale outside ``SCALE_LIMITS`` or an exception from SimpleITK makes the registration *failed*
   (``ok`` False, ``message`` says why): callers drop that support and say so.

Seeded sampling and a fixed thread count make a run repeatable. SimpleITK is imported inside the functions, not
at module level, so that importing the runtime (and every predictor that never registers volumes) needs
neither SimpleITK nor its start-up cost.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from gmiseg_edge.runtime.support.geometry import from_sitk, sitk_image

SPACING = 3.0  # mm: the working grid
BODY_LEVEL = 20  # uint8: a voxel above it is body (CT abdomen window: above about -130 HU; MR: above background)
BINS = 32
SAMPLING = 0.2
SEED = 20240515
ITERATIONS = 60  # per level, linear stages
BSPLINE_ITERATIONS = 30  # per level
CONTROL_MM = 60.0
SCALE_LIMITS = (0.6, 1.6)  # isotropic scale between two adults' scans
Z_SLACK = 0.1  # the z search also covers +/- this fraction of the longer extent around the centred offset
MAX_OFFSETS = 61


@dataclass(frozen=True)
class Registration3D:
    """A support volume registered onto a query volume: ``transform`` maps query LPS mm to support LPS mm."""

    name: str
    transform: Any = None  # SimpleITK.Transform; None when the registration failed
    metric: float = 0.0  # final Mattes metric (-MI: lower is better), on the working grids
    initial_metric: float = 0.0  # the metric at the start (step 2)
    stages: tuple[str, ...] = ()
    message: str = ""
    seconds: float = 0.0
    scale: float = 1.0
    z_offset: float = 0.0  # mm, the start's translation along z

    @property
    def ok(self) -> bool:
        """True when a transform was found; False: drop this support (``message`` says why)."""
        return self.transform is not None

    def warp(self, moving: np.ndarray, moving_affine: np.ndarray, shape: tuple[int, int, int],
             affine: np.ndarray) -> np.ndarray:
        """A support-grid map (canonical array with ``moving_affine``) resampled (linear, 0 outside) onto the
        query grid of ``shape`` and ``affine``: float32 (I, J, K)."""
        import SimpleITK as sitk  # noqa: N813  (lazy: see the module docstring)

        if self.transform is None:
            raise ValueError(f"{self.name}: registration failed ({self.message}): nothing to warp with")
        reference = sitk.Image([int(s) for s in shape], sitk.sitkFloat32)
        spacing = np.linalg.norm(affine[:3, :3], axis=0)
        reference.SetSpacing([float(s) for s in spacing])
        reference.SetOrigin([float(v) for v in affine[:3, 3]])
        reference.SetDirection([float(v) for v in (affine[:3, :3] / spacing).ravel()])
        warped = sitk.Resample(sitk_image(moving, moving_affine), reference, self.transform, sitk.sitkLinear, 0.0,
                               sitk.sitkFloat32)
        return from_sitk(warped)


def _working(sitk, image, spacing: float):
    """``image`` smoothed and resampled to isotropic ``spacing`` mm (step 1)."""
    own = np.asarray(image.GetSpacing(), float)
    sigma = np.maximum(spacing - own, 0.0) / 2
    for axis in range(3):  # axis by axis: an axis already coarser than the grid (or too short to filter) is left
        if sigma[axis] > 0 and image.GetSize()[axis] >= 4:
            image = sitk.RecursiveGaussian(image, float(sigma[axis]), direction=axis)
    size = [max(2, int(np.rint(n * s / spacing))) for n, s in zip(image.GetSize(), own, strict=True)]
    return sitk.Resample(image, size, sitk.Transform(), sitk.sitkLinear, image.GetOrigin(), [spacing] * 3,
                         image.GetDirection(), 0.0, sitk.sitkFloat32)


def _body(sitk, image) -> tuple[np.ndarray, tuple[float, float]]:
    """The body's centroid (LPS mm) and its z extent (mm) on a working grid (step 2)."""
    array = sitk.GetArrayFromImage(image)  # (z, y, x)
    body = array > BODY_LEVEL
    if not body.any():
        body = array > array.min()
    if not body.any():
        body = np.ones_like(body)
    zyx = np.argwhere(body)
    points = np.array([image.TransformContinuousIndexToPhysicalPoint([float(v) for v in p[::-1]])
                       for p in (zyx.min(axis=0), zyx.max(axis=0))])
    centroid = image.TransformContinuousIndexToPhysicalPoint([float(v) for v in zyx.mean(axis=0)[::-1]])
    return np.asarray(centroid), (float(points[:, 2].min()), float(points[:, 2].max()))


def _method(sitk, shrink: list[int], smooth: list[float], seed: int, threads: int, mask=None):
    method = sitk.ImageRegistrationMethod()
    if mask is not None:
        method.SetMetricFixedMask(mask)
    method.SetMetricAsMattesMutualInformation(numberOfHistogramBins=BINS)
    method.SetMetricSamplingStrategy(method.RANDOM)
    method.SetMetricSamplingPercentage(SAMPLING, seed)
    method.SetInterpolator(sitk.sitkLinear)
    method.SetShrinkFactorsPerLevel(shrink)
    method.SetSmoothingSigmasPerLevel(smooth)
    method.SmoothingSigmasAreSpecifiedInPhysicalUnitsOff()
    method.SetNumberOfThreads(threads)
    return method


def _metric(sitk, fixed, moving, transform, seed: int, threads: int, mask=None) -> float:
    method = _method(sitk, [1], [0.0], seed, threads, mask)
    method.SetInitialTransform(transform, inPlace=False)
    return float(method.MetricEvaluate(fixed, moving))


def _linear(sitk, fixed, moving, transform, shrink, smooth, seed: int, threads: int, mask) -> None:
    method = _method(sitk, shrink, smooth, seed, threads, mask)
    method.SetOptimizerAsRegularStepGradientDescent(learningRate=2.0, minStep=1e-3, numberOfIterations=ITERATIONS,
                                                    relaxationFactor=0.6, gradientMagnitudeTolerance=1e-6)
    method.SetOptimizerScalesFromPhysicalShift()
    method.SetInitialTransform(transform, inPlace=True)
    method.Execute(fixed, moving)


def _z_offsets(fixed_z: tuple[float, float], moving_z: tuple[float, float], step: float) -> np.ndarray:
    """Step 2's candidate z translations (query mm + t = support mm)."""
    ends = sorted((moving_z[0] - fixed_z[0], moving_z[1] - fixed_z[1]))
    centred = (moving_z[0] + moving_z[1]) / 2 - (fixed_z[0] + fixed_z[1]) / 2
    slack = Z_SLACK * max(fixed_z[1] - fixed_z[0], moving_z[1] - moving_z[0])
    low, high = min(ends[0], centred - slack), max(ends[1], centred + slack)
    count = min(MAX_OFFSETS, max(1, int(np.floor((high - low) / step)) + 1))
    return np.unique(np.append(np.linspace(low, high, count), centred))


def _start(sitk, fixed, moving, seed: int, threads: int):
    """Step 2: the translation aligning the bodies in x, y and the best z offset; with its metric."""
    coarse = 2 * fixed.GetSpacing()[0]
    fixed_coarse, moving_coarse = _working(sitk, fixed, coarse), _working(sitk, moving, coarse)
    fixed_centre, fixed_z = _body(sitk, fixed)
    moving_centre, moving_z = _body(sitk, moving)
    shift = moving_centre - fixed_centre
    best = None
    for dz in _z_offsets(fixed_z, moving_z, fixed.GetSpacing()[2]):
        transform = sitk.TranslationTransform(3, (float(shift[0]), float(shift[1]), float(dz)))
        try:
            value = _metric(sitk, fixed_coarse, moving_coarse, transform, seed, threads)
        except RuntimeError:  # too few samples overlap at this offset
            continue
        if best is None or value < best[0]:
            best = (value, float(dz))
    if best is None:
        raise RuntimeError("no z offset leaves the two volumes overlapping")
    mask = None
    if moving_z[1] - moving_z[0] < fixed_z[1] - fixed_z[0] - 2 * fixed.GetSpacing()[2]:
        mask = _slab(sitk, fixed, moving_z[0] - best[1], moving_z[1] - best[1])
    return fixed_centre, np.array([shift[0], shift[1], best[1]]), best[1], mask


def _slab(sitk, image, low: float, high: float):
    """A uint8 mask of ``image``'s voxels whose z (LPS mm) lies in [low, high] (step 2's partial field of view)."""
    size = image.GetSize()
    z = np.array([image.TransformIndexToPhysicalPoint((0, 0, k))[2] for k in range(size[2])])
    inside = (z >= low) & (z <= high)
    if not inside.any():
        inside[int(np.argmin(np.abs(z - (low + high) / 2)))] = True
    array = np.broadcast_to(inside[:, None, None], (size[2], size[1], size[0])).astype(np.uint8)
    mask = sitk.GetImageFromArray(array)
    mask.CopyInformation(image)
    return mask


def register_volume(fixed: np.ndarray, fixed_affine: np.ndarray, moving: np.ndarray, moving_affine: np.ndarray, *,
                    name: str = "support", deformable: bool = True, spacing: float = SPACING, seed: int = SEED,
                    threads: int | None = None) -> Registration3D:
    """Register ``moving`` (a support volume, canonical array + LPS affine) onto ``fixed`` (the query): the module's
    method. Never raises on image content: a failure is a :class:`Registration3D` with ``ok`` False."""
    import SimpleITK as sitk  # noqa: N813  (lazy: see the module docstring)

    start = time.perf_counter()
    threads = threads or min(2, os.cpu_count() or 1)
    for array, role in ((fixed, "query"), (moving, name)):
        if min(array.shape) < 1 or np.ptp(array) == 0:
            return Registration3D(name, message=f"{role} volume is constant: nothing to register")
    grid = max(spacing, float(np.linalg.norm(fixed_affine[:3, :3], axis=0).max()),
               float(np.linalg.norm(moving_affine[:3, :3], axis=0).max()))
    notes: list[str] = []
    try:
        fixed_image = _working(sitk, sitk_image(fixed, fixed_affine), grid)
        moving_image = _working(sitk, sitk_image(moving, moving_affine), grid)
        centre, translation, z_offset, mask = _start(sitk, fixed_image, moving_image, seed, threads)
        similarity = sitk.Similarity3DTransform()
        similarity.SetCenter([float(v) for v in centre])
        similarity.SetTranslation([float(v) for v in translation])
        initial = current = _metric(sitk, fixed_image, moving_image, similarity, seed, threads, mask)
        best: Any = sitk.Similarity3DTransform(similarity)
        stages = ["start"]
        _linear(sitk, fixed_image, moving_image, similarity, [4, 2, 1], [2.0, 1.0, 0.0], seed, threads, mask)
        scale = float(similarity.GetScale())
        if not SCALE_LIMITS[0] <= scale <= SCALE_LIMITS[1]:
            return Registration3D(name, initial_metric=initial, scale=scale, seconds=time.perf_counter() - start,
                                  message=f"{name}: similarity scale {scale:.2f} outside {SCALE_LIMITS}: "
                                  "registration diverged")
        value = _metric(sitk, fixed_image, moving_image, similarity, seed, threads, mask)
        if value < current:
            best, current = similarity, value
            stages.append("similarity")
        else:
            notes.append("similarity stage did not improve the metric")
        affine = sitk.AffineTransform(3)
        affine.SetMatrix(best.GetMatrix())
        affine.SetTranslation(best.GetTranslation())
        affine.SetCenter(best.GetCenter())
        _linear(sitk, fixed_image, moving_image, affine, [2, 1], [1.0, 0.0], seed, threads, mask)
        value = _metric(sitk, fixed_image, moving_image, affine, seed, threads, mask)
        linear: Any = best
        if value < current:
            linear, current = affine, value
            stages.append("affine")
        else:
            notes.append("affine stage did not improve the metric")
        final: Any = linear
        if deformable:
            extent = np.asarray(fixed_image.GetSize()) * grid
            mesh = [max(1, int(np.rint(e / CONTROL_MM))) for e in extent]
            bspline = sitk.BSplineTransformInitializer(fixed_image, mesh, 3)
            method = _method(sitk, [2, 1], [1.0, 0.0], seed, threads, mask)
            method.SetOptimizerAsLBFGS2(solutionAccuracy=1e-4, numberOfIterations=BSPLINE_ITERATIONS,
                                        deltaConvergenceTolerance=1e-4)
            method.SetMovingInitialTransform(linear)
            method.SetInitialTransform(bspline, inPlace=True)
            method.Execute(fixed_image, moving_image)
            composite = sitk.CompositeTransform(linear)
            composite.AddTransform(bspline)
            value = _metric(sitk, fixed_image, moving_image, composite, seed, threads, mask)
            if value < current:
                final, current = composite, value
                stages.append("bspline")
            else:
                notes.append("b-spline stage did not improve the metric")
    except RuntimeError as exc:  # SimpleITK (e.g. too few samples overlap after a bad step) or no overlap at all
        return Registration3D(name, message=f"{name}: registration failed ({str(exc).strip().splitlines()[-1]})",
                              seconds=time.perf_counter() - start)
    seconds = time.perf_counter() - start
    if len(stages) == 1:
        notes.append("no stage improved on the start: its translation is kept")
    return Registration3D(name, final, current, initial, tuple(stages), "; ".join(notes), seconds, scale, z_offset)
