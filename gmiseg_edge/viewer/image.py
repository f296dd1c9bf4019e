"""The image a widget segments: a napari Image layer's data as the runtime sees it, one slice at a time.

napari data (D, H, W) (a volume, see :mod:`gmiseg_edge.viewer.reader`) or (H, W) / (H, W, 3) (a 2D image). Slices
are mapped to uint8 with one mapping for the whole volume, the runtime's own
(:class:`gmiseg_edge.runtime.propagate.SliceSource`), so a click on slice k and a propagation through slice k
see the same pixels. Everything here is Qt-free.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from gmiseg_edge.core.errors import InputError
from gmiseg_edge.runtime.images import check_image
from gmiseg_edge.runtime.propagate import SliceSource

#: window choices of the widget: intensity mappings of the runtime (CT presets, percentiles, min-max)
WINDOW_CHOICES = ("percentile", "minmax", "abdomen", "lung", "liver", "brain", "bone", "mediastinum", "soft_tissue")


@dataclass(eq=False)
class SourceImage:
    """One image layer's pixels for the runtime: ``slice(k)`` uint8 (H, W) or (H, W, 3)."""

    data: np.ndarray  # napari order: (D, H, W), or (H, W) / (H, W, 3)
    window: str | tuple[float, float]
    rgb: bool = False
    name: str = "image"
    scale: tuple[float, ...] | None = None  # the layer's scale, napari order: the voxel (or pixel) size in mm
    warnings: list[str] = field(default_factory=list)
    _source: SliceSource | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        data = np.asarray(self.data)
        ndim = data.ndim - (1 if self.rgb else 0)
        if ndim not in (2, 3):
            raise InputError(f"layer {self.name!r}: {data.ndim}D data of shape {data.shape} (rgb={self.rgb}); the "
                             "plugin segments 2D images and 3D volumes: pick one channel or time point first")
        if self.rgb and ndim == 3:
            raise InputError(f"layer {self.name!r}: an RGB volume {data.shape} is not supported; give one slice "
                             "or a grey volume")
        self.data = data
        if data.dtype == np.uint8 and _is_intensity_window(self.window):
            what = "an RGB photo" if self.rgb else "8-bit"
            self.warnings.append(f"layer {self.name!r} is {what} (uint8): the CT window {self.window!r} does not "
                                 "apply, its pixels are used as they are")
        if ndim == 3:
            # (D, H, W) -> the runtime's file order (W, H, D), a view: slice_2d(volume, 2, k) == data[k]
            self._source = SliceSource(np.transpose(data, (2, 1, 0)), 2, self.window, name=f"layer {self.name!r}")

    @classmethod
    def of_layer(cls, layer: Any, window: str | tuple[float, float]) -> SourceImage:
        """From a napari Image layer (its data, rgb flag and name)."""
        data = layer.data
        if getattr(layer, "multiscale", False):
            data = data[0]
        scale = getattr(layer, "scale", None)
        return cls(np.asarray(data), window, rgb=bool(getattr(layer, "rgb", False)), name=str(layer.name),
                   scale=None if scale is None else tuple(float(v) for v in scale))

    @property
    def is_volume(self) -> bool:
        return self._source is not None

    @property
    def depth(self) -> int:
        """Slices along napari's first axis (1 for a 2D image)."""
        return int(self.data.shape[0]) if self.is_volume else 1

    @property
    def plane_shape(self) -> tuple[int, int]:
        """(H, W) of a slice."""
        return tuple(int(v) for v in (self.data.shape[1:3] if self.is_volume else self.data.shape[:2]))  # type: ignore

    @property
    def plane_spacing(self) -> tuple[float, float] | None:
        """(row mm, col mm) of a slice, from the layer's scale (the reader sets it from the header); None when
        the layer has none (the runtime then takes 1 mm per pixel)."""
        if self.scale is None or len(self.scale) < 2:
            return None
        return (float(self.scale[-2]), float(self.scale[-1]))

    @property
    def voxel_spacing(self) -> tuple[float, float, float] | None:
        """(D, H, W) voxel size in mm of a volume, from the layer's scale; None for a 2D image or no scale."""
        if not self.is_volume or self.scale is None or len(self.scale) != 3:
            return None
        return (float(self.scale[0]), float(self.scale[1]), float(self.scale[2]))

    @property
    def file_order(self) -> np.ndarray:
        """The volume as the runtime's volume functions take it (W, H, D), slices along axis 2 (a view)."""
        if self._source is None:
            raise InputError(f"layer {self.name!r} is a 2D image, not a volume")
        return np.transpose(self.data, (2, 1, 0))

    def slice(self, k: int = 0) -> np.ndarray:
        """Slice ``k`` (napari's first axis) as uint8, as the runtime segments it."""
        if self._source is None:
            return check_image(self.data, self.window, name=f"layer {self.name!r}")
        if not 0 <= k < self.depth:
            raise InputError(f"slice {k} is outside layer {self.name!r} (0..{self.depth - 1})")
        return self._source.pixels(k)


def _is_intensity_window(window: str | tuple[float, float]) -> bool:
    """A CT window (a preset or (low, high)) rather than a per-image rescaling."""
    return not (isinstance(window, str) and window in ("percentile", "minmax"))
