"""The widget's image and the layers made for it: the image layer chosen, its intensity window, its objects
(Labels), boxes (Shapes) and clicks (Points) with the image's scale, and the slice on screen."""

from __future__ import annotations

from typing import Any

import numpy as np
from napari.layers import Image, Labels, Points, Shapes

from gmiseg_edge.data.intensity import parse_window
from gmiseg_edge.viewer.image import SourceImage
from gmiseg_edge.viewer.widget.state import WidgetState


class ImageLayersMixin(WidgetState):
    """The image layer, its window and its prompt and label layers."""

    def _refresh_image_choices(self, *_: Any) -> None:
        if self._closed:
            return
        names = [layer.name for layer in self.viewer.layers if isinstance(layer, Image) and not
                 layer.name.endswith(" uncertainty")]
        current = self.image_combo.currentText()
        self.image_combo.blockSignals(True)
        self.image_combo.clear()
        self.image_combo.addItems(names)
        if current in names:
            self.image_combo.setCurrentText(current)
        self.image_combo.blockSignals(False)
        if self.image_combo.currentText() != current or self.image_layer is None:
            self._image_changed()

    @property
    def window(self) -> str | tuple[float, float]:
        """The intensity mapping chosen (a preset name or (low, high))."""
        return parse_window(self.window_combo.currentText().strip())

    def set_window(self, window: str) -> None:
        """Choose the intensity mapping (a preset or ``"low,high"``)."""
        self.window_combo.setCurrentText(window)

    def set_image(self, name: str) -> None:
        """Segment the image layer called ``name``."""
        self.image_combo.setCurrentText(name)
        self._image_changed()

    def _layer(self, name: str) -> Any:
        """The viewer's layer called ``name``, None when there is none."""
        return next((layer for layer in self.viewer.layers if layer.name == name), None)

    def _image_changed(self) -> None:
        name = self.image_combo.currentText()
        layer = self._layer(name)
        if not isinstance(layer, Image):
            self.image_layer, self.image = None, None
            return
        self.wait_for_jobs()
        image = self._guarded(lambda: SourceImage.of_layer(layer, self.window))
        self.image_layer, self.image = (layer, image) if image is not None else (None, None)
        self._reset_embeddings()
        if image is None:
            return
        for warning in image.warnings:
            self.notify("warning", warning)
        self._ensure_layers()
        self._encode_current()

    def _ensure_layers(self) -> None:
        """The Labels, Shapes and Points layers of the image (made with its scale when missing)."""
        assert self.image is not None and self.image_layer is not None
        base = self.image_layer.name
        shape = self.image.data.shape[:3] if self.image.is_volume else self.image.plane_shape
        where = self._placement(len(shape))
        name = f"{base} objects"
        labels = self._layer(name)
        if not isinstance(labels, Labels) or labels.data.shape != shape:
            labels = self.viewer.add_labels(np.zeros(shape, np.uint16), name=name, **where)
        self.labels_layer = labels
        name = f"{base} boxes"
        boxes = self._layer(name)
        if not isinstance(boxes, Shapes) or boxes.ndim != len(shape):
            boxes = self.viewer.add_shapes(ndim=len(shape), name=name, edge_color="yellow", face_color="transparent",
                                           edge_width=2, **where)
            boxes.events.data.connect(self._on_prompts_changed)
        self.boxes_layer = boxes
        name = f"{base} clicks"
        clicks = self._layer(name)
        if not isinstance(clicks, Points) or clicks.ndim != len(shape):
            clicks = self.viewer.add_points(np.zeros((0, len(shape))), ndim=len(shape), name=name, size=6,
                                            features={"positive": np.zeros(0, bool)},
                                            face_color="positive", face_color_cycle=["red", "lime"], **where)
            clicks.feature_defaults["positive"] = True
            clicks.events.data.connect(self._on_prompts_changed)
        self.clicks_layer = clicks
        self._click_sign_changed(self.negative_check.isChecked())

    def _placement(self, ndim: int) -> dict[str, Any]:
        """Scale, translate and units of the image layer's last ``ndim`` axes, for the layers made for it."""
        assert self.image_layer is not None
        layer = self.image_layer
        return {"scale": layer.scale[-ndim:], "translate": layer.translate[-ndim:], "units": layer.units[-ndim:]}

    def _click_sign_changed(self, negative: bool) -> None:
        if self.clicks_layer is not None:
            self.clicks_layer.feature_defaults["positive"] = not negative

    def current_slice(self) -> int | None:
        """The image's slice on screen (napari's first axis of the volume), None for a 2D image."""
        if self.image is None or not self.image.is_volume or self.image_layer is None:
            return None
        point = self.image_layer.world_to_data(self.viewer.dims.point)
        return int(np.clip(np.round(point[0]), 0, self.image.depth - 1))

    def _reset_embeddings(self) -> None:
        self._encoded.clear()
        self._previous.clear()
        self._decoded.clear()
        self._pending = None
        self._encode_wanted = None
