"""2D image registration for support sets (DESIGN §7, anatomy): a support image is registered to the query and its
mask warped onto the query, as in multi-atlas segmentation. Torch-free (SimpleITK and numpy).

The method, exactly (``register``):

1. Both images are taken as float intensities in one *physical* frame: each image carries its own pixel
   spacing in mm (``fixed_spacing``, ``moving_spacing``: (row, col), default 1 mm), and the frame's unit ``u``
   is the query's pixel *as registered*: its finest pixel side, or its long side's extent in mm / ``max_size``
   when that is larger (pixel (row, col) of an image of spacing (sy, sx) sits at (x, y) = (col sx / u,
   row sy / u)). A 3 mm support on a 0.8 mm query is met at scale 1, not at a 3.75x scale for the similarity
   stage to find, and one body registers the same whatever the query's pixel size (the optimiser's steps are
   in units of ``u``; with the finest pixel side as the unit, a 0.8 mm query took steps 3.75x smaller against
   its own extent than the same slice at 3 mm, and one of three real registrations diverged). Images larger
   than ``max_size`` pixels on their long side are area-downsampled for registration only, with spacing and
   origin set so that the frame is unchanged. A transform found at low resolution therefore maps original
   query pixels to original support pixels directly.
2. **Similarity stage**: a 2D similarity transform (rotation, isotropic scale, shift) initialised by aligning
   the image centres, optimised on Mattes mutual information (32 bins, a seeded 30% random sample of the
   query's pixels), regular-step gradient descent, three resolution levels (shrink 4, 2, 1; smoothing 2, 1,
   0 pixels at each level's spacing), at most ``iterations`` steps per level.
3. **Affine stage** starting from the similarity (same metric and levels, shrink 2, 1).
4. **B-spline stage**: a cubic B-spline on a ``mesh`` x ``mesh`` grid over the query, composed after the affine,
   optimised with L-BFGS-B on the same metric (shrink 2, 1; at most ``iterations`` evaluations per level).
5. **Checks**: a stage whose final metric is not below the metric of the transform it started from is
   dropped (its result is not used); a similarity scale (physical: of bodies, not of pixel sizes) outside
   [1/3, 3] or an exception from SimpleITK makes the whole registration *failed* (``Registration.ok`` is
   False, ``message`` says why) - callers then fall back to appearance only. Nothing here raises on bad image content.
6. **Threads**: ITK runs each registration on one thread. The B-spline stage's L-BFGS-B optimiser is run under a
   process-wide lock: run concurrently from several threads (a served support set with several instances), it
   returned a different transform in about 1 of 30 runs (ITK 5.4's netlib L-BFGS-B keeps shared state), so
   results would depend on what else ran at the same time. The similarity and affine stages run concurrently.

``Registration.warp(mask)`` resamples a support mask (or any support-frame map) onto the query with linear
interpolation: a probability map in [0, 1] at the query's size. ``Registration.metric`` is the final Mattes
metric (negative mutual information: lower is a better match; only comparable between registrations onto the
same query); :func:`match_quality` gives a normalised similarity in [0, 1] for weighting supports.

SimpleITK is imported inside the functions (not at module level) so that importing the runtime, and every
predictor that never uses support sets, needs neither SimpleITK nor its start-up cost.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np

MAX_SIZE = 128
ITERATIONS = 25
MESH = 4
BINS = 32
SAMPLING = 0.3
SEED = 20240515
SCALE_LIMITS = (1 / 3, 3.0)
_LBFGSB_LOCK = threading.Lock()
INITIALS = ("geometry", "body")
INITIAL = "geometry"  # how the similarity stage starts (module step 2); ``register(initial=...)`` overrides it


@dataclass(frozen=True)
class Registration:
    """A support image registered onto a query: ``transform`` maps query (x, y) to support (x, y)."""

    fixed_size: tuple[int, int]  # (H, W) of the query
    moving_size: tuple[int, int]  # (H, W) of the support
    fixed_spacing: tuple[float, float] = (1.0, 1.0)  # (row, col) pixel sides in frame units (module step 1)
    moving_spacing: tuple[float, float] = (1.0, 1.0)
    transform: Any = None  # SimpleITK.Transform, None when the registration failed
    metric: float = 0.0  # final Mattes metric (-MI; lower is better), 0.0 when failed
    initial_metric: float = 0.0  # the metric with the images' centres aligned
    stages: tuple[str, ...] = ()  # stages kept, e.g. ("similarity", "affine", "bspline")
    message: str = ""  # why a stage was dropped or the registration failed
    seconds: float = 0.0
    scale: float = 1.0  # the similarity stage's scale
    extra: dict = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """True when a transform was found; False means: use appearance only."""
        return self.transform is not None

    def warp(self, moving: np.ndarray) -> np.ndarray:
        """A support-frame (H_s, W_s) map resampled onto the query, linear interpolation, float32 (H_q, W_q)."""
        import SimpleITK as sitk  # noqa: N813  (lazy: see the module docstring)

        if self.transform is None:
            raise ValueError(f"registration failed ({self.message}): nothing to warp with")
        array = np.asarray(moving, np.float32)
        if array.shape != self.moving_size:
            raise ValueError(f"map of shape {array.shape} is not in the support's frame {self.moving_size}")
        reference = sitk.Image(self.fixed_size[1], self.fixed_size[0], sitk.sitkFloat32)
        reference.SetSpacing(self.fixed_spacing[::-1])
        moving_image = sitk.GetImageFromArray(array)
        moving_image.SetSpacing(self.moving_spacing[::-1])
        warped = sitk.Resample(moving_image, reference, self.transform, sitk.sitkLinear, 0.0, sitk.sitkFloat32)
        return sitk.GetArrayFromImage(warped)


def _image(array: np.ndarray, max_size: int, spacing: tuple[float, float] = (1.0, 1.0)):
    """A float32 SimpleITK image of ``array`` (H, W) whose pixels are ``spacing`` (row, col) frame units,
    downsampled to ``max_size`` on its long side in that frame (module step 1)."""
    import SimpleITK as sitk  # noqa: N813  (lazy: see the module docstring)

    height, width = array.shape
    factor = max(1.0, max(height, width) / max_size)
    if factor > 1.0:
        new_w, new_h = max(4, round(width / factor)), max(4, round(height / factor))
        small = cv2.resize(array.astype(np.float32), (new_w, new_h), interpolation=cv2.INTER_AREA)
    else:
        new_w, new_h, small = width, height, array.astype(np.float32)
    image = sitk.GetImageFromArray(small)
    row, col = spacing
    sx, sy = col * width / new_w, row * height / new_h
    image.SetSpacing((sx, sy))
    image.SetOrigin(((sx - col) / 2, (sy - row) / 2))  # pixel centres of the original grid stay where they were
    return image


def _spacing(spacing: tuple[float, float], name: str) -> tuple[float, float]:
    values = tuple(float(s) for s in np.ravel(spacing))
    if len(values) != 2 or not all(np.isfinite(v) and v > 0 for v in values):
        raise ValueError(f"{name} must be two positive numbers (row, col) in mm, got {spacing!r}")
    return values[0], values[1]


def _gray(image: np.ndarray) -> np.ndarray:
    array = np.asarray(image)
    if array.ndim == 3:
        array = array.mean(axis=2)
    return array.astype(np.float32)


def _method(sitk, fixed, shrink: list[int], smooth: list[float], seed: int):
    method = sitk.ImageRegistrationMethod()
    method.SetMetricAsMattesMutualInformation(numberOfHistogramBins=BINS)
    method.SetMetricSamplingStrategy(method.RANDOM)
    method.SetMetricSamplingPercentage(SAMPLING, seed)
    method.SetInterpolator(sitk.sitkLinear)
    method.SetShrinkFactorsPerLevel(shrink)
    method.SetSmoothingSigmasPerLevel(smooth)
    method.SmoothingSigmasAreSpecifiedInPhysicalUnitsOff()
    return method


def _body(sitk, image):
    """The body of a registration image: above Otsu's threshold, holes filled, as float 0/1 (same grid)."""
    body = sitk.OtsuThreshold(image, 0, 1)
    body = sitk.BinaryFillhole(body)
    return sitk.Cast(body, sitk.sitkFloat32)


def _initial(sitk, fixed, moving, how: str):
    """The similarity stage's start: image centres aligned (``"geometry"``), or the bodies' centres of mass
    aligned and the scale set from their areas (``"body"``: robust to a field of view cut around another
    patient's body)."""
    if how not in INITIALS:
        raise ValueError(f"initial must be one of {INITIALS}, got {how!r}")
    if how == "geometry":
        return sitk.CenteredTransformInitializer(fixed, moving, sitk.Similarity2DTransform(),
                                                 sitk.CenteredTransformInitializerFilter.GEOMETRY)
    fixed_body, moving_body = _body(sitk, fixed), _body(sitk, moving)
    fixed_area = float(np.asarray(sitk.GetArrayViewFromImage(fixed_body)).sum()) * float(np.prod(fixed.GetSpacing()))
    moving_area = (float(np.asarray(sitk.GetArrayViewFromImage(moving_body)).sum())
                   * float(np.prod(moving.GetSpacing())))
    if fixed_area <= 0 or moving_area <= 0:
        return _initial(sitk, fixed, moving, "geometry")
    transform = sitk.CenteredTransformInitializer(fixed_body, moving_body, sitk.Similarity2DTransform(),
                                                  sitk.CenteredTransformInitializerFilter.MOMENTS)
    transform.SetScale(float(np.clip(np.sqrt(moving_area / fixed_area), 0.5, 2.0)))
    return transform


def _metric(sitk, fixed, moving, transform, seed: int) -> float:
    method = _method(sitk, fixed, [1], [0.0], seed)
    method.SetInitialTransform(transform, inPlace=False)
    return float(method.MetricEvaluate(fixed, moving))


def _linear_stage(sitk, fixed, moving, transform, shrink, smooth, iterations: int, seed: int):
    method = _method(sitk, fixed, shrink, smooth, seed)
    method.SetOptimizerAsRegularStepGradientDescent(learningRate=1.0, minStep=1e-3, numberOfIterations=iterations,
                                                    relaxationFactor=0.6, gradientMagnitudeTolerance=1e-6)
    method.SetOptimizerScalesFromPhysicalShift()
    method.SetInitialTransform(transform, inPlace=True)
    method.Execute(fixed, moving)
    return transform


def register(
    fixed: np.ndarray,
    moving: np.ndarray,
    *,
    deformable: bool = True,
    fixed_spacing: tuple[float, float] = (1.0, 1.0),
    moving_spacing: tuple[float, float] = (1.0, 1.0),
    max_size: int = MAX_SIZE,
    iterations: int = ITERATIONS,
    mesh: int = MESH,
    seed: int = SEED,
    initial: str | None = None,
) -> Registration:
    """Register ``moving`` (the support image, (H, W) or (H, W, 3)) onto ``fixed`` (the query): the module's
    method, in the physical frame of the two images' (row, col) pixel spacings in mm (default 1 mm each; only
    their ratio to the query's finest side matters). Never raises on image content: a failure is a
    :class:`Registration` with ``ok`` False. Raises ``ValueError`` on a spacing that is not two positive numbers."""
    import time

    import SimpleITK as sitk  # noqa: N813  (lazy: see the module docstring)

    start = time.perf_counter()
    fixed_gray, moving_gray = _gray(fixed), _gray(moving)
    fixed_mm = _spacing(fixed_spacing, "fixed_spacing")
    extent = max(fixed_gray.shape[0] * fixed_mm[0], fixed_gray.shape[1] * fixed_mm[1])
    unit = max(min(fixed_mm), extent / max_size)  # the query's registration pixel (module step 1)
    fixed_frame = tuple(s / unit for s in fixed_mm)
    moving_frame = tuple(s / unit for s in _spacing(moving_spacing, "moving_spacing"))
    sizes = {"fixed_size": fixed_gray.shape[:2], "moving_size": moving_gray.shape[:2],
             "fixed_spacing": fixed_frame, "moving_spacing": moving_frame}
    if min(*fixed_gray.shape, *moving_gray.shape) < 8:
        return Registration(**sizes, message="image smaller than 8 pixels: not registered")
    if np.ptp(fixed_gray) == 0 or np.ptp(moving_gray) == 0:
        return Registration(**sizes, message="constant image: nothing to register")
    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(1)  # the inference runtime owns the other core
    fixed_image = _image(fixed_gray, max_size, fixed_frame)
    moving_image = _image(moving_gray, max_size, moving_frame)
    notes = []
    try:
        similarity = _initial(sitk, fixed_image, moving_image, initial or INITIAL)
        initial = _metric(sitk, fixed_image, moving_image, similarity, seed)
        best = sitk.Similarity2DTransform(similarity)
        _linear_stage(sitk, fixed_image, moving_image, similarity, [4, 2, 1], [2.0, 1.0, 0.0], iterations, seed)
        scale = float(similarity.GetScale())
        if not SCALE_LIMITS[0] <= scale <= SCALE_LIMITS[1]:
            return Registration(**sizes, initial_metric=initial, scale=scale,
                                message=f"similarity scale {scale:.2f} outside {SCALE_LIMITS}: registration failed",
                                seconds=time.perf_counter() - start)
        current = _metric(sitk, fixed_image, moving_image, similarity, seed)
        stages: list[str] = []
        if current < initial:
            best, stages = similarity, ["similarity"]
        else:
            current = initial
            notes.append("similarity stage did not improve the metric")
        affine = sitk.AffineTransform(2)
        affine.SetMatrix(best.GetMatrix())
        affine.SetTranslation(best.GetTranslation())
        affine.SetCenter(best.GetCenter())
        _linear_stage(sitk, fixed_image, moving_image, affine, [2, 1], [1.0, 0.0], iterations, seed)
        value = _metric(sitk, fixed_image, moving_image, affine, seed)
        linear: Any = best
        if value < current:
            linear, current = affine, value
            stages.append("affine")
        else:
            notes.append("affine stage did not improve the metric")
        final: Any = linear
        if deformable:
            bspline = sitk.BSplineTransformInitializer(fixed_image, [mesh, mesh], 3)
            method = _method(sitk, fixed_image, [2, 1], [1.0, 0.0], seed)
            method.SetOptimizerAsLBFGSB(gradientConvergenceTolerance=1e-5, numberOfIterations=iterations,
                                        maximumNumberOfCorrections=5, maximumNumberOfFunctionEvaluations=2 * iterations,
                                        costFunctionConvergenceFactor=1e7)
            method.SetMovingInitialTransform(linear)
            method.SetInitialTransform(bspline, inPlace=True)
            with _LBFGSB_LOCK:  # one L-BFGS-B run at a time (module docstring, step 6)
                method.Execute(fixed_image, moving_image)
            composite = sitk.CompositeTransform(linear)
            composite.AddTransform(bspline)
            value = _metric(sitk, fixed_image, moving_image, composite, seed)
            if value < current:
                final, current = composite, value
                stages.append("bspline")
            else:
                notes.append("b-spline stage did not improve the metric")
    except RuntimeError as exc:  # SimpleITK: e.g. too few samples overlap after a bad step
        return Registration(**sizes, message=f"SimpleITK: {str(exc).strip().splitlines()[-1]}",
                            seconds=time.perf_counter() - start)
    return Registration(**sizes, transform=final, metric=current, initial_metric=initial, stages=tuple(stages),
                        message="; ".join(notes), seconds=time.perf_counter() - start, scale=scale)


def match_quality(fixed: np.ndarray, warped: np.ndarray, region: np.ndarray | None = None, bins: int = BINS) -> float:
    """Normalised mutual information of two aligned images, minus 1 (0 unrelated, 1 identical up to a
    one-to-one intensity mapping), over ``region`` (bool, same shape) or everywhere."""
    a, b = _gray(fixed), _gray(warped)
    if region is not None:
        a, b = a[region], b[region]
    a, b = a.ravel(), b.ravel()
    if a.size < 16 or np.ptp(a) == 0 or np.ptp(b) == 0:
        return 0.0
    joint, _, _ = np.histogram2d(a, b, bins=bins)
    joint /= joint.sum()

    def entropy(p: np.ndarray) -> float:
        p = p[p > 0]
        return float(-(p * np.log(p)).sum())

    h_joint = entropy(joint)
    if h_joint <= 0:
        return 0.0
    return float(np.clip((entropy(joint.sum(axis=0)) + entropy(joint.sum(axis=1))) / h_joint - 1.0, 0.0, 1.0))
