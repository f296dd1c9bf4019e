"""The widget's support set: labelled slices (or a labelled volume) added as examples, then a slice or the whole
volume segmented from them (worker jobs), with the supports' disagreement in an ``uncertainty`` layer."""

from __future__ import annotations

from typing import Any

import numpy as np
from napari.layers import Image

from gmiseg_edge.core.errors import InputError
from gmiseg_edge.viewer.image import SourceImage
from gmiseg_edge.viewer.labels import paste
from gmiseg_edge.viewer.tasks import Outcome, support_volume_job
from gmiseg_edge.viewer.widget.state import WidgetState


class ExamplesMixin(WidgetState):
    """Examples in, segmentation from the examples out."""

    def _support_set(self) -> Any:
        if self.segmenter is None:
            from gmiseg_edge.runtime import SupportSetSegmenter

            self.segmenter = SupportSetSegmenter(self._local_predictor("a support set"))
        return self.segmenter

    def _added(self, count: int) -> None:
        self.example_count += count
        self.examples_label.setText(f"examples: {self.example_count}")
        self.notify("info", f"{count} example(s) added; the support set has {self.example_count}")

    def add_example_slice(self) -> None:
        """The current slice and the current object's mask there join the support set (an accepted correction
        grows it)."""
        def add() -> None:
            if self.image is None or self.labels_layer is None:
                raise InputError("no image: open one first")
            k = self.current_slice()
            mask = self.object_mask(k)
            name = f"{self.image.name} slice {k}" if k is not None else self.image.name
            self._support_set().add_support(self.image.slice(k or 0), mask, name=name,
                                            spacing=self.image.plane_spacing)
            self._added(1)
        self._guarded(add)

    def add_example_volume(self) -> None:
        """Every labelled slice of the current object in this volume joins the support set (at most 8, spread)."""
        def add() -> None:
            if self.image is None or not self.image.is_volume:
                raise InputError("add a volume as an example: this image is 2D (add the slice instead)")
            mask = self.object_mask()
            labelled = np.flatnonzero(mask.any(axis=(1, 2)))
            if not labelled.size:
                raise InputError(f"object {self.object_spin.value()} has no mask in this volume")
            pixels = np.zeros(mask.shape, np.uint8)
            for k in labelled:
                pixels[k] = self.image.slice(int(k))
            added = self._support_set().add_support(pixels, mask, name=self.image.name, axis=0,
                                                    spacing=self.image.voxel_spacing)
            self._added(len(added))
        self._guarded(add)

    def segment_from_examples(self, volume: bool = False) -> None:
        """Segment the current slice (or the whole volume) from the examples as the current object; the supports'
        disagreement goes to an ``uncertainty`` layer."""
        if not self._can_start("segmenting from the examples"):
            return
        self._guarded(lambda: self._start_support(volume))

    def _start_support(self, volume: bool) -> None:
        assert self.image is not None
        if self.segmenter is None or not self.segmenter.supports:
            raise InputError("no examples yet: label a slice and add it as an example first")
        image, segmenter, label = self.image, self.segmenter, self.object_spin.value()
        if volume:
            if not image.is_volume:
                raise InputError("this image is 2D: segment the slice")
            job = support_volume_job(segmenter, image.slice, image.depth, image.plane_spacing)
            self._start_job("support-set volume", job, lambda outcome: self._support_volume_done(image, label,
                                                                                                  outcome))
            return
        k = self.current_slice()
        pixels = image.slice(k or 0)
        spacing = image.plane_spacing  # examples and query each at their layer's pixel size (mm)
        self._start_job("support-set slice", lambda _progress: segmenter.segment(pixels, spacing=spacing),
                        lambda outcome: self._support_slice_done(image, label, k, outcome))

    def _uncertainty(self, image: SourceImage) -> Image:
        assert self.image_layer is not None
        name = f"{self.image_layer.name} uncertainty"
        shape = image.data.shape[:3] if image.is_volume else image.plane_shape
        layer = self._layer(name)
        if not isinstance(layer, Image) or layer.data.shape != shape:
            layer = self.viewer.add_image(np.zeros(shape, np.float32), name=name, colormap="magma", opacity=0.5,
                                          blending="additive", contrast_limits=(0.0, 0.5),
                                          **self._placement(len(shape)))
        return layer

    def _support_slice_done(self, image: SourceImage, label: int, k: int | None, outcome: Outcome) -> None:
        if self._report_outcome("support-set segmentation", outcome) or image is not self.image:
            return
        assert self.labels_layer is not None
        prediction = outcome.value
        paste(self.labels_layer.data, prediction.mask, label, self.overwrite_check.isChecked(),
              None if k is None else (k,))
        self.labels_layer.refresh()
        layer = self._uncertainty(image)
        if k is None:
            layer.data = prediction.uncertainty.astype(np.float32)
        else:
            layer.data[k] = prediction.uncertainty
            layer.refresh()
        state = "present" if prediction.present else "absent (masked anyway)"
        self.notify("info", f"object {label} from {len(self.segmenter.supports)} example(s): "
                            f"{int(prediction.mask.sum())} px, structure {state}")

    def _support_volume_done(self, image: SourceImage, label: int, outcome: Outcome) -> None:
        if self._report_outcome("support-set segmentation", outcome) or image is not self.image:
            return
        assert self.labels_layer is not None
        result = outcome.value
        paste(self.labels_layer.data, result.mask, label, self.overwrite_check.isChecked())
        self.labels_layer.refresh()
        self._uncertainty(image).data = result.uncertainty.astype(np.float32) / 510.0
        kept = int(result.mask.any(axis=(1, 2)).sum())
        self.notify("info", f"object {label} from the examples on {kept} slice(s)")
