"""The widget's encoding: the slice on screen is encoded in a worker thread (the latest request wins the queue);
the embedding handles of recent slices are kept for the clicks."""

from __future__ import annotations

from typing import Any

from gmiseg_edge.viewer.engines import Engine
from gmiseg_edge.viewer.image import SourceImage
from gmiseg_edge.viewer.tasks import Outcome
from gmiseg_edge.viewer.widget.state import WidgetState

RECENT_SLICES = 16  # embedding handles the widget keeps (the engine's cache keeps more)


class EncodingMixin(WidgetState):
    """Encoding requests and their results."""

    def _on_slice_changed(self, *_: Any) -> None:
        if not self._closed:
            self._encode_current()

    def _image_on_screen(self) -> bool:
        """Whether the widget's image layer is still in the viewer: napari removes the layers first when its
        window closes, and the last removal moves the dims, which must not start an encoding the close then
        waits for (or the process exits under)."""
        layer, viewer = self.image_layer, self.viewer
        return layer is not None and viewer is not None and any(item is layer for item in viewer.layers)

    def _encode_current(self) -> None:
        if self.engine is not None and self.image is not None:
            k = self.current_slice()
            self.request_encode(0 if k is None else k)

    def is_encoded(self, k: int | None = None) -> bool:
        """Whether slice ``k`` (None: the 2D image) has its embedding."""
        return (0 if k is None else k) in self._encoded

    def request_encode(self, k: int) -> None:
        """Encode slice ``k`` in a worker thread unless done or under way (the latest request wins the queue)."""
        if k in self._encoded or self._encoding == k or self.engine is None or self.image is None or \
                not self._image_on_screen():
            return
        if self._encoding is not None:
            self._encode_wanted = k
            return
        engine, image = self.engine, self.image
        self._encoding = k
        self._start_job("encode", lambda _progress: engine.encode(image.slice(k)),
                        lambda outcome: self._encoded_slice(k, image, engine, outcome), cancellable=False)

    def _encoded_slice(self, k: int, image: SourceImage, engine: Engine, outcome: Outcome) -> None:
        self._encoding = None
        if image is not self.image or engine is not self.engine:
            pass  # the image, window or model changed meanwhile: that embedding is of no use
        elif outcome.error is not None:
            self.notify("error", f"encoding slice {k} failed: {outcome.error}")
            self._pending = None
        else:
            self._encoded[k] = outcome.value
            while len(self._encoded) > RECENT_SLICES:
                self._encoded.popitem(last=False)
            self.status.setText(f"slice {k} encoded")
            if self._pending == k:
                self._pending = None
                self.segment_current(force=True)
        wanted, self._encode_wanted = self._encode_wanted, None
        if wanted is not None:
            self.request_encode(wanted)
