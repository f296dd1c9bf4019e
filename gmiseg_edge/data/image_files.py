"""PNG, JPEG and TIFF files: the 2D rows of :data:`gmiseg_edge.data.formats.FORMATS`.

The readers return the file's pixels as stored (dtype kept, colour in RGB order); :func:`gmiseg_edge.data.read_image_2d`
then puts them in the 2D layout. Each refuses an image above :data:`~gmiseg_edge.core.transforms.MAX_PIXELS` from
its header, before decoding it. Masks of 2D images are written as PNG.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import tifffile
from PIL import JpegImagePlugin

from gmiseg_edge.core.errors import DataError, InputError
from gmiseg_edge.core.files import write_bytes_atomic
from gmiseg_edge.core.transforms import MAX_PIXELS, check_pixels
from gmiseg_edge.data.images import Image2D, corrupt


def _png_size(path: Path) -> tuple[int, int] | None:
    """(height, width) from a PNG's IHDR chunk, None if the file does not start like a PNG."""
    with open(path, "rb") as handle:
        head = handle.read(24)
    if len(head) < 24 or head[:8] != b"\x89PNG\r\n\x1a\n" or head[12:16] != b"IHDR":
        return None
    return int.from_bytes(head[20:24], "big"), int.from_bytes(head[16:20], "big")


def _jpeg_size(path: Path) -> tuple[int, int] | None:
    """(height, width) from a JPEG's first start-of-frame marker, None if none is found."""
    with open(path, "rb") as handle:
        if handle.read(2) != b"\xff\xd8":
            return None
        while True:
            byte = handle.read(1)
            while byte and byte != b"\xff":
                byte = handle.read(1)
            while byte == b"\xff":
                byte = handle.read(1)
            if not byte:
                return None
            marker = byte[0]
            if marker == 0x01 or 0xD0 <= marker <= 0xD9:  # markers without a length
                continue
            length = int.from_bytes(handle.read(2), "big")
            if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
                frame = handle.read(5)
                return (int.from_bytes(frame[1:3], "big"), int.from_bytes(frame[3:5], "big")) if len(frame) == 5 \
                    else None
            if length < 2:
                return None
            handle.seek(length - 2, 1)


def _check_size(size: tuple[int, ...] | None, path: Path) -> None:
    """Refuse an image above :data:`MAX_PIXELS` from its header, before decoding it."""
    if size is not None and len(size) >= 2:
        try:
            check_pixels(size[0], size[1], name=str(path))
        except InputError as exc:
            raise DataError(str(exc).removeprefix(f"{path}: "), path) from None


def read_png(path: Path) -> np.ndarray:
    """A PNG's pixels as stored (8 or 16 bit; colour in RGB order, alpha kept), size checked from its header."""
    _check_size(_png_size(path), path)
    data = np.fromfile(path, dtype=np.uint8)
    try:
        array = cv2.imdecode(data, cv2.IMREAD_UNCHANGED) if data.size else None
    except cv2.error as exc:
        raise corrupt(path, "PNG", exc) from None
    if array is None:
        reason = "is empty (0 bytes)" if not data.size else "cannot decode PNG file, it may be truncated or corrupt"
        raise DataError(reason, path)
    if array.ndim == 3:
        code = cv2.COLOR_BGRA2RGB if array.shape[2] == 4 else cv2.COLOR_BGR2RGB
        array = cv2.cvtColor(array, code)
    return array


def read_jpeg(path: Path) -> np.ndarray:
    """A JPEG's pixels: grey HxW or RGB HxWx3 (other modes converted to RGB), size checked from its header."""
    _check_size(_jpeg_size(path), path)
    try:
        # the JPEG plugin itself, not Image.open: Pillow's own (lower) decompression-bomb limit would refuse
        # sizes up to MAX_PIXELS, already checked above from the header
        with JpegImagePlugin.JpegImageFile(str(path)) as im:
            im.load()
            if im.mode not in ("L", "RGB"):
                im = im.convert("RGB")
            return np.asarray(im).copy()
    except (OSError, SyntaxError, ValueError) as exc:
        raise corrupt(path, "JPEG", exc) from exc


def read_tiff(path: Path) -> np.ndarray:
    """A TIFF's first series, singleton axes dropped and colour samples last."""
    try:
        with tifffile.TiffFile(path) as tif:
            series = tif.series[0]
            sizes = [n for n, axis in zip(series.shape, series.axes, strict=False) if axis in "YX"]
            if len(sizes) == 2 and sizes[0] * sizes[1] > MAX_PIXELS:
                raise InputError(f"{sizes[1]} x {sizes[0]} pixels is above the limit of {MAX_PIXELS} pixels; "
                                 "downscale or crop it first")
            array = series.asarray()
            axes = series.axes
    except InputError as exc:
        raise DataError(str(exc), path) from None
    except Exception as exc:
        raise corrupt(path, "TIFF", exc) from exc
    # drop singleton axes, then put samples (colour channels) last
    keep = [i for i, n in enumerate(array.shape) if n != 1 or axes[i] in "YX"]
    array = array.reshape([array.shape[i] for i in keep])
    axes = "".join(axes[i] for i in keep)
    if array.ndim == 3 and axes[0] == "S":
        array = np.moveaxis(array, 0, -1)
    return array


def write_png(path: str | Path, array: np.ndarray) -> Path:
    """Write a PNG atomically: (H, W) uint8/uint16 grey or labels, or (H, W, 3) uint8 RGB."""
    path = Path(path)
    if array.dtype not in (np.uint8, np.uint16):
        raise DataError(f"values {array.min()}..{array.max()} ({array.dtype}) do not fit in a 16-bit PNG", path)
    if array.ndim == 3:
        array = cv2.cvtColor(array, cv2.COLOR_RGB2BGR)  # OpenCV writes BGR
    ok, encoded = cv2.imencode(".png", array)
    if not ok:
        raise DataError("PNG encoding failed", path)
    return write_bytes_atomic(path, encoded.tobytes())


def write_png_mask(reference: Image2D, labels: np.ndarray, path: Path) -> None:
    """Write 2D ``labels`` (uint8 or uint16, see :func:`gmiseg_edge.data.save_like`) as a PNG, atomically."""
    write_png(path, labels)
