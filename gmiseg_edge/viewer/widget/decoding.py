"""The widget's click to mask, on the UI thread: every change of the prompts on an encoded slice re-runs the
decoder only, with the object's previous low-res mask as ``mask_input`` while its box is unchanged; objects keep
their labels."""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from gmiseg_edge.viewer.labels import next_label, paste, paste_changes
from gmiseg_edge.viewer.prompts import SlicePrompt, slice_prompt
from gmiseg_edge.viewer.widget.state import WidgetState


class DecodingMixin(WidgetState):
    """The prompts of the current slice into the current object's label."""

    def _on_prompts_changed(self, event: Any = None) -> None:
        action = str(getattr(event, "action", "changed"))
        if self._muted or self._closed or action.endswith("ing"):
            return
        self.segment_current()

    def current_prompt(self) -> SlicePrompt:
        """The prompts of the current slice, in the image's pixels (an error when outside the image)."""
        assert self.image is not None and self.boxes_layer is not None and self.clicks_layer is not None
        k = self.current_slice()
        boxes = [self._to_image(np.asarray(data), self.boxes_layer)
                 for data, kind in zip(self.boxes_layer.data, self.boxes_layer.shape_type, strict=True)
                 if kind == "rectangle"]
        points = self._to_image(np.asarray(self.clicks_layer.data), self.clicks_layer)
        positive = np.asarray(self.clicks_layer.features["positive"], bool) if len(points) else np.zeros(0, bool)
        return slice_prompt(boxes, points, positive, k, self.image.plane_shape)

    def _to_image(self, coords: np.ndarray, layer: Any) -> np.ndarray:
        """``layer``'s data coordinates as the image layer's data coordinates."""
        assert self.image_layer is not None
        if not coords.size:
            return coords.reshape(0, self.image_layer.ndim)
        same = np.allclose(layer.scale, self.image_layer.scale[-layer.ndim:]) and \
            np.allclose(layer.translate, self.image_layer.translate[-layer.ndim:])
        if same:
            return coords
        return np.array([self.image_layer.world_to_data(layer.data_to_world(c)) for c in coords])

    def segment_current(self, force: bool = False) -> bool:
        """Decode the current slice's prompts for the current object (True when the mask was written now; False
        when nothing to do, refused, or waiting for the slice's embedding). The prompt decoded last for this
        object and slice is not decoded again (its own mask as mask_input would change it) unless ``force``."""
        if self.image is None or self.labels_layer is None:
            return False
        if self.engine is None:
            self.notify("warning", "load a model first (the prompts are kept)")
            return False
        prompt = self._guarded(self.current_prompt)
        if prompt is None or prompt.empty:
            return False
        k = self.current_slice()
        slot = 0 if k is None else k
        if not force and self._decoded.get((self.object_spin.value(), slot)) == prompt.key():
            return False
        if slot not in self._encoded:
            self._pending = slot
            self.request_encode(slot)
            self.status.setText(f"encoding slice {slot}…")
            return False
        return bool(self._guarded(lambda: self._decode(k, prompt)))

    def _decode(self, k: int | None, prompt: SlicePrompt) -> bool:
        assert self.engine is not None and self.labels_layer is not None
        start = time.perf_counter()
        label, slot = self.object_spin.value(), (0 if k is None else k)
        box_key = None if prompt.box is None else prompt.box.round(3).tobytes()
        previous = self._previous.get((label, slot))
        mask_input = previous[1] if (previous is not None and previous[0] == box_key and
                                     self.previous_check.isChecked()) else None
        result = self.engine.decode(self._encoded[slot], box=prompt.box, points=prompt.points, labels=prompt.labels,
                                    mask_input=mask_input, task=self.task)
        written = time.perf_counter()
        kept_out = self._write_object(result.mask, label, None if k is None else (k,))
        self.last_write_s = time.perf_counter() - written
        self._previous[(label, slot)] = (box_key, result.logits)
        self._decoded[(label, slot)] = prompt.key()
        self.last_decode_s = time.perf_counter() - start
        note = f"; {kept_out} px left to other objects" if kept_out else ""
        self.status.setText(f"object {label}: {int(result.mask.sum())} px, IoU {result.score:.2f}, "
                            f"{1000 * self.last_decode_s:.0f} ms{note}")
        return True

    def _write_object(self, mask: np.ndarray, label: int, region: tuple | None) -> int:
        """Write object ``label``'s ``mask`` into the Labels layer at ``region``; returns the pixels left to other
        objects. Only the pixels that change are written and redrawn (napari's ``data_setitem``, one undo step);
        ``partial_labels_update = False`` writes the slice and refreshes the whole layer (the former path, kept
        for the latency benchmark's side-by-side comparison)."""
        assert self.labels_layer is not None
        layer, overwrite = self.labels_layer, self.overwrite_check.isChecked()
        if not self.partial_labels_update:
            kept_out = paste(layer.data, mask, label, overwrite, region)
            layer.refresh()
            return kept_out
        indices, values, kept_out = paste_changes(layer.data, mask, label, overwrite, region)
        if len(values):
            layer.data_setitem(indices, values)
        return kept_out

    def new_object(self) -> int:
        """A new object: the next free label, the prompt layers emptied. Returns the label."""
        label = next_label(self.labels_layer.data) if self.labels_layer is not None else 1
        self.object_spin.setValue(label)
        self._clear_prompts()
        return label

    def _clear_prompts(self) -> None:
        self._muted = True
        try:
            if self.boxes_layer is not None and len(self.boxes_layer.data):
                self.boxes_layer.data = []
            if self.clicks_layer is not None and len(self.clicks_layer.data):
                self.clicks_layer.data = np.zeros((0, self.clicks_layer.ndim))
        finally:
            self._muted = False

    def object_mask(self, k: int | None = None) -> np.ndarray:
        """The current object's mask: on slice ``k`` (None: the whole layer)."""
        assert self.labels_layer is not None
        data = self.labels_layer.data if k is None else self.labels_layer.data[k]
        return np.asarray(data) == self.object_spin.value()
