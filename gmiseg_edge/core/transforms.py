"""Model input preprocessing and prompt coordinate transforms (numpy, OpenCV and Pillow; no torch).

Every model sees a square S x S input: the image resized so that its long side is S, normalised, and padded
with zeros at the bottom and right. How it is resized and normalised depends on the model and is recorded
in the export manifest as a :class:`PreprocessConfig`:

- ``sam`` (SAM ViT-B/L/H, MobileSAM): uint8 RGB resized with Pillow's bilinear filter, exactly as
  segment-anything's ``ResizeLongestSide.apply_image``, then ``(x - pixel_mean) / pixel_std``.
- ``minmax`` (LiteMedSAM): resized in float32 with OpenCV's area filter (the filter of the upstream
  LiteMedSAM inference code, without its intermediate rounding to uint8), then scaled to [0, 1] by the
  resized image's own minimum and maximum.

Memory stays bounded for large images: a grey image is resized as one channel and repeated to RGB only at
the model's size, and the ``minmax`` area resize of a large image runs in two passes (columns over bands of
rows, then rows), which gives the same float32 values as OpenCV's one-pass area resize (its area resize is
separable and sums in the same order) while holding only a band in float32. Images above :data:`MAX_PIXELS`
are refused.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from typing import Any

import cv2
import numpy as np
from PIL import Image

from gmiseg_edge.core.errors import InputError

SAM_PIXEL_MEAN = (123.675, 116.28, 103.53)
SAM_PIXEL_STD = (58.395, 57.12, 57.375)
NORMALIZATIONS = ("sam", "minmax")
MAX_PIXELS = 1 << 29  # 536,870,912 pixels (e.g. 23170 x 23170): larger images are refused
BAND_BYTES = 1 << 24  # the float32 band of the large-image area resize (16 MiB)


def check_pixels(height: int, width: int, name: str = "image") -> None:
    """Refuse an image of more than :data:`MAX_PIXELS` pixels (callers check file headers before decoding)."""
    if int(height) * int(width) > MAX_PIXELS:
        raise InputError(
            f"{name}: {width} x {height} pixels ({int(height) * int(width) / 1e6:.0f} MP) is above the limit of "
            f"{MAX_PIXELS} pixels ({MAX_PIXELS / 1e6:.0f} MP); downscale or crop it first")


@dataclass(frozen=True)
class PreprocessConfig:
    """How an image becomes the encoder's input (recorded in the manifest)."""

    input_size: int
    normalization: str = "sam"
    pixel_mean: tuple[float, float, float] = SAM_PIXEL_MEAN
    pixel_std: tuple[float, float, float] = SAM_PIXEL_STD

    def __post_init__(self) -> None:
        if self.normalization not in NORMALIZATIONS:
            raise ValueError(f"normalization must be one of {NORMALIZATIONS}, got {self.normalization!r}")
        if self.input_size <= 0:
            raise ValueError(f"input_size must be positive, got {self.input_size}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PreprocessConfig:
        return cls(
            input_size=int(data["input_size"]),
            normalization=str(data["normalization"]),
            pixel_mean=tuple(float(v) for v in data["pixel_mean"]),  # type: ignore[arg-type]
            pixel_std=tuple(float(v) for v in data["pixel_std"]),  # type: ignore[arg-type]
        )


@dataclass(frozen=True)
class ImageGeometry:
    """Where an image sits in the model's S x S input: what maps prompts in and masks back out."""

    original_size: tuple[int, int]  # (H, W) of the image given
    resized_size: tuple[int, int]  # (h, w) inside the S x S input, before padding

    @classmethod
    def of(cls, height: int, width: int, input_size: int) -> ImageGeometry:
        """The geometry of an H x W image in an S x S input (no pixels needed)."""
        return cls(original_size=(int(height), int(width)), resized_size=resized_shape(height, width, input_size))


@dataclass(frozen=True)
class PreparedImage(ImageGeometry):
    """A model input and its geometry."""

    tensor: np.ndarray  # float32 (1, 3, S, S)


def resized_shape(height: int, width: int, long_side: int) -> tuple[int, int]:
    """(h, w) after scaling so the longer side is ``long_side``, rounded half up (as segment-anything), and at
    least 1 (segment-anything would give 0 for a side under half a pixel and fail)."""
    scale = long_side / max(height, width)
    return max(1, int(height * scale + 0.5)), max(1, int(width * scale + 0.5))


def as_rgb_uint8(image: np.ndarray, name: str = "image") -> np.ndarray:
    """Check an image is uint8 (H, W), (H, W, 1) or (H, W, 3) and return it as contiguous (H, W, 3) RGB.

    Medical intensities (CT HU, 16-bit MR, float) must be mapped to [0, 255] first, e.g. with a window from
    :mod:`gmiseg_edge.data`: a silent cast would give a wrong mask, so other dtypes are refused.
    """
    array = np.asarray(image)
    if array.dtype != np.uint8:
        raise ValueError(
            f"{name}: expected uint8 intensities in [0, 255], got dtype {array.dtype}; "
            "normalise it first (a CT window or percentile scaling, see gmiseg_edge.data)"
        )
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    if array.ndim == 2:
        array = np.repeat(array[:, :, None], 3, axis=2)
    if array.ndim != 3 or array.shape[2] != 3:
        raise ValueError(f"{name}: expected shape (H, W) or (H, W, 3), got {array.shape}")
    if min(array.shape[:2]) < 1:
        raise ValueError(f"{name}: empty image of shape {array.shape}")
    return np.ascontiguousarray(array)


def _checked_pixels(image: np.ndarray, name: str) -> np.ndarray:
    """``image`` as contiguous uint8 (H, W) or (H, W, 3), checked as :func:`as_rgb_uint8` does, not repeated."""
    array = np.asarray(image)
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    if array.ndim == 2 and array.dtype == np.uint8 and min(array.shape) >= 1:
        check_pixels(*array.shape, name=name)
        return np.ascontiguousarray(array)
    if array.ndim == 3 and array.shape[2] == 3 and array.dtype == np.uint8 and min(array.shape[:2]) >= 1:
        check_pixels(*array.shape[:2], name=name)
        return np.ascontiguousarray(array)
    return as_rgb_uint8(array, name)  # raises the message for a wrong dtype, shape or empty image


def area_resize(pixels: np.ndarray, new_h: int, new_w: int, band_bytes: int = BAND_BYTES) -> np.ndarray:
    """OpenCV's float32 area resize of uint8 ``pixels`` (H, W[, C]) to (new_h, new_w[, C]).

    A small image is converted and resized in one call. A larger one (float32 copy above ``band_bytes``,
    downscaled on both axes) is resized along columns band by band of rows, then along rows: OpenCV sums
    each output pixel over the same source pixels in the same order either way, so the values are equal.
    """
    height, width = pixels.shape[:2]
    channels = pixels.shape[2] if pixels.ndim == 3 else 1
    if height * width * channels * 4 <= band_bytes or new_h > height or new_w > width:
        return cv2.resize(pixels.astype(np.float32), (new_w, new_h), interpolation=cv2.INTER_AREA)
    rows = max(1, band_bytes // (width * channels * 4))
    columns = np.empty((height, new_w, *pixels.shape[2:]), dtype=np.float32)
    for top in range(0, height, rows):
        band = pixels[top: top + rows].astype(np.float32)
        columns[top: top + rows] = cv2.resize(band, (new_w, band.shape[0]), interpolation=cv2.INTER_AREA)
    return cv2.resize(columns, (new_w, new_h), interpolation=cv2.INTER_AREA)


def preprocess(image: np.ndarray, config: PreprocessConfig, name: str = "image") -> PreparedImage:
    """Resize, normalise and pad one image to the model's (1, 3, S, S) float32 input.

    A grey image is resized as one channel (the same values as each channel of its RGB copy) and large
    images are resized in bands (module docstring): no full-resolution RGB or float32 copy is made.
    """
    pixels = _checked_pixels(image, name)
    height, width = pixels.shape[:2]
    size = config.input_size
    new_h, new_w = resized_shape(height, width, size)
    if config.normalization == "sam":
        resized = np.asarray(Image.fromarray(pixels).resize((new_w, new_h), Image.BILINEAR), dtype=np.float32)
        if resized.ndim == 2:
            resized = np.repeat(resized[:, :, None], 3, axis=2)
        mean = np.asarray(config.pixel_mean, dtype=np.float32)
        std = np.asarray(config.pixel_std, dtype=np.float32)
        normalised = (resized - mean) / std
    else:
        resized = area_resize(pixels, new_h, new_w)
        low, high = float(resized.min()), float(resized.max())
        normalised = (resized - low) / max(high - low, 1e-8)
        if normalised.ndim == 2:
            normalised = np.repeat(normalised[:, :, None], 3, axis=2)
    tensor = np.zeros((1, 3, size, size), dtype=np.float32)
    tensor[0, :, :new_h, :new_w] = normalised.transpose(2, 0, 1)
    return PreparedImage(tensor=tensor, original_size=(height, width), resized_size=(new_h, new_w))


def scale_coords(coords: np.ndarray, original_size: tuple[int, int], input_size: int) -> np.ndarray:
    """Map (..., 2) pixel coordinates (x, y) of the original image into the model's S x S frame."""
    height, width = original_size
    new_h, new_w = resized_shape(height, width, input_size)
    out = np.asarray(coords, dtype=np.float32).copy()
    out[..., 0] *= new_w / width
    out[..., 1] *= new_h / height
    return out


def scale_boxes(boxes: np.ndarray, original_size: tuple[int, int], input_size: int) -> np.ndarray:
    """Map (..., 4) boxes [x0, y0, x1, y1] of the original image into the model's S x S frame."""
    boxes = np.asarray(boxes, dtype=np.float32)
    return scale_coords(boxes.reshape(-1, 2, 2), original_size, input_size).reshape(boxes.shape)


def linear_resize_matrix(n_in: int, n_out: int) -> np.ndarray:
    """(n_out, n_in) matrix of 1D linear interpolation with half-pixel centres (align_corners=False).

    Sample ``i`` of the output reads the input at ``(i + 0.5) * n_in / n_out - 0.5``, clamped to the edges:
    the per-axis weights of PyTorch's and OpenCV's bilinear resize (without antialiasing).
    """
    position = np.maximum((np.arange(n_out, dtype=np.float64) + 0.5) * (n_in / n_out) - 0.5, 0.0)
    low = np.minimum(np.floor(position).astype(np.int64), n_in - 1)
    high = np.minimum(low + 1, n_in - 1)
    frac = position - low
    matrix = np.zeros((n_out, n_in), dtype=np.float64)
    rows = np.arange(n_out)
    np.add.at(matrix, (rows, low), 1.0 - frac)
    np.add.at(matrix, (rows, high), frac)
    return matrix


@dataclass(frozen=True)
class BandedResize:
    """A 1D linear map whose output sample ``i`` reads at most ``k`` input samples: ``index`` (n_out, k) and
    ``weight`` (n_out, k), float32; unused slots have weight 0."""

    index: np.ndarray
    weight: np.ndarray

    @classmethod
    def from_matrix(cls, matrix: np.ndarray) -> BandedResize:
        nonzero = matrix != 0
        width = max(1, int(nonzero.sum(axis=1).max()))
        # a copy of the slice: a view would keep the whole (n_out, n_in) argsort alive in postprocess_maps' cache
        index = np.argsort(~nonzero, axis=1, kind="stable")[:, :width].copy()
        return cls(index=index, weight=np.take_along_axis(matrix, index, axis=1).astype(np.float32))

    def apply(self, array: np.ndarray, axis: int) -> np.ndarray:
        """The map along ``axis`` of ``array`` (a negative axis: -2 rows, -1 columns)."""
        trailing = (1,) * (-1 - axis)  # weights broadcast over the axes after ``axis``
        out = self.weight[:, 0].reshape(-1, *trailing) * np.take(array, self.index[:, 0], axis=axis)
        for k in range(1, self.index.shape[1]):
            out += self.weight[:, k].reshape(-1, *trailing) * np.take(array, self.index[:, k], axis=axis)
        return out


@functools.lru_cache(maxsize=64)
def postprocess_maps(grid: tuple[int, int], input_size: int, resized: tuple[int, int],
                     original: tuple[int, int]) -> tuple[BandedResize, BandedResize]:
    """Row and column maps from low-res logits of shape ``grid`` to the original image size (see
    :func:`postprocess_logits`); cached per geometry."""
    maps = []
    for n_grid, n_resized, n_original in zip(grid, resized, original, strict=True):
        folded = linear_resize_matrix(n_resized, n_original) @ linear_resize_matrix(n_grid, input_size)[:n_resized]
        maps.append(BandedResize.from_matrix(folded))
    return maps[0], maps[1]


def postprocess_logits(low_res_logits: np.ndarray, prepared: ImageGeometry, input_size: int) -> np.ndarray:
    """Low-res logits (..., 256, 256) to logits at the original image size (..., H, W).

    The steps of segment-anything's ``Sam.postprocess_masks`` (bilinear upsampling to the S x S input frame,
    cropping the padding, bilinear resizing to the original size) are all linear and separable, so they are
    folded, in float64, into one map per axis. Each output row (column) reads only a few input rows (columns),
    so the maps are applied as a handful of weighted gathers rather than dense matrix products: a few ms, and
    no BLAS thread pool that would contend with the inference runtime's own threads.
    """
    logits = np.asarray(low_res_logits, dtype=np.float32)
    lead = logits.shape[:-2]
    grid = logits.shape[-2:]
    rows, cols = postprocess_maps(tuple(grid), input_size, tuple(prepared.resized_size),
                                  tuple(prepared.original_size))
    out = cols.apply(rows.apply(logits.reshape(-1, *grid), axis=-2), axis=-1)
    return out.reshape(*lead, *prepared.original_size)


#: the float32 logits of one band of rows (bytes; with the gathers' temporaries a band peaks at about 4x this)
LOGIT_BAND_BYTES = 8 << 20


def postprocess_bands(low_res_logits: np.ndarray, prepared: ImageGeometry, input_size: int,
                      band_bytes: int = LOGIT_BAND_BYTES) -> Iterator[tuple[slice, np.ndarray]]:
    """:func:`postprocess_logits` of (K, 256, 256) low-res logits in bands of output rows: yields (rows, logits
    (K, rows, W)) with at most ``band_bytes`` of float32 logits in a band; each band equals that slice of the
    full result exactly (the same arithmetic, row by row)."""
    flat = np.asarray(low_res_logits, dtype=np.float32)
    rows, cols = postprocess_maps(tuple(flat.shape[-2:]), input_size, tuple(prepared.resized_size),
                                  tuple(prepared.original_size))
    height, width = prepared.original_size
    step = max(1, band_bytes // max(1, 4 * flat.shape[0] * width))
    for top in range(0, height, step):
        band = BandedResize(rows.index[top:top + step], rows.weight[top:top + step])
        yield slice(top, min(top + step, height)), cols.apply(band.apply(flat, axis=-2), axis=-1)


def postprocess_masks(low_res_logits: np.ndarray, prepared: ImageGeometry, input_size: int,
                      band_bytes: int = LOGIT_BAND_BYTES) -> np.ndarray:
    """``postprocess_logits(...) > 0`` (bool (..., H, W)), identical to it, computed in bands of output rows
    (:func:`postprocess_bands`): a mask costs 1 byte a pixel, not the 4 of its float32 logits."""
    logits = np.asarray(low_res_logits, dtype=np.float32)
    lead = logits.shape[:-2]
    flat = logits.reshape(-1, *logits.shape[-2:])
    out = np.empty((flat.shape[0], *prepared.original_size), bool)
    for rows, band in postprocess_bands(flat, prepared, input_size, band_bytes):
        out[:, rows] = band > 0
    return out.reshape(*lead, *prepared.original_size)
