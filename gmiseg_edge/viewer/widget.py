"""The plugin's widget: prompts (a Shapes layer of boxes, a Points layer of clicks) into a Labels layer, one label
per object, through the runtime or a served model.

The interactive loop: the current slice is encoded in a worker thread (a progress bar runs meanwhile; the
embedding stays in the engine's cache and in the widget's handles of recent slices); every change of the prompts
on an encoded slice re-runs the decoder only, on the UI thread, with the object's previous low-res mask as
``mask_input`` (while its box is unchanged). Propagation through the volume and support-set runs are worker
jobs with progress and cancel (:mod:`gmiseg_edge.viewer.tasks`). Every problem is a napari notification (and
the widget's status line): the Labels layer is only written after a result is complete.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from napari.layers import Image, Labels, Points, Shapes
from napari.qt.threading import create_worker
from napari.utils.notifications import show_error, show_info, show_warning
from qtpy.QtCore import QEvent, QObject, Signal, Slot
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QFileDialog,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QProgressBar,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from gmiseg_edge.core.errors import GmisegError, InputError
from gmiseg_edge.data.intensity import parse_window
from gmiseg_edge.viewer.engines import BACKENDS, Engine, LocalEngine, RemoteEngine
from gmiseg_edge.viewer.image import WINDOW_CHOICES, SourceImage
from gmiseg_edge.viewer.labels import next_label, paste
from gmiseg_edge.viewer.prompts import SlicePrompt, slice_prompt
from gmiseg_edge.viewer.reader import SOURCE_KEY
from gmiseg_edge.viewer.save import save_labels
from gmiseg_edge.viewer.tasks import Outcome, propagate_job, run_job, support_volume_job

log = logging.getLogger(__name__)
RECENT_SLICES = 16  # embedding handles the widget keeps (the engine's cache keeps more)
BASE_TASK = "(base decoder)"


class _CloseWatcher(QObject):
    """Calls ``on_close`` when the viewer's window closes (jobs are cancelled before the layers go away)."""

    def __init__(self, on_close: Callable[[], None]) -> None:
        super().__init__()
        self._on_close = on_close

    def eventFilter(self, watched: QObject, event: QEvent) -> bool:  # noqa: N802 - Qt's name
        if event.type() == QEvent.Close:
            self._on_close()
        return False


class SegmentWidget(QWidget):
    """Segment the selected image layer with gmiseg-edge (module docstring)."""

    progress_changed = Signal(int, int)

    def __init__(self, napari_viewer: Any, model_dir: str | Path | None = None, url: str = "") -> None:
        super().__init__()
        self.viewer = napari_viewer
        self.engine: Engine | None = None
        self.image: SourceImage | None = None
        self.image_layer: Image | None = None
        self.labels_layer: Labels | None = None
        self.boxes_layer: Shapes | None = None
        self.clicks_layer: Points | None = None
        self.uncertainty_layer: Image | None = None
        self.messages: list[tuple[str, str]] = []  # (level, text), newest last
        self.last_decode_s: float | None = None
        self.segmenter: Any = None  # the support set (runtime SupportSetSegmenter), made on the first example
        self.example_count = 0
        self._encoded: OrderedDict[int, Any] = OrderedDict()  # slice -> embedding handle, for self.image
        self._encoding: int | None = None  # slice being encoded
        self._encode_wanted: int | None = None  # slice to encode next
        self._pending: int | None = None  # slice whose prompt waits for its embedding
        self._previous: dict[tuple[int, int], tuple[Any, np.ndarray]] = {}  # (label, k) -> (box key, logits)
        self._decoded: dict[tuple[int, int], tuple] = {}  # (label, k) -> prompt key last decoded
        self._muted = False  # prompt events ignored while the widget edits the prompt layers itself
        self._cancel = threading.Event()
        self._jobs: list[Any] = []  # running napari workers
        self._job_name: str | None = None
        self._closed = False
        self._build(model_dir, url)
        self.progress_changed.connect(self._show_progress)
        for emitter, callback in self._connections():
            emitter.connect(callback)
        window = getattr(getattr(self.viewer, "window", None), "_qt_window", None)
        if window is not None:
            self._watcher = _CloseWatcher(self.shutdown)
            window.installEventFilter(self._watcher)
        self._refresh_image_choices()

    # ------------------------------------------------------------------ layout

    def _build(self, model_dir: str | Path | None, url: str) -> None:
        layout = QVBoxLayout(self)
        model = QGroupBox("Model")
        form = QFormLayout(model)
        self.model_edit = QLineEdit(str(model_dir or ""))
        browse = QPushButton("…")
        browse.clicked.connect(self._browse_model)
        row = QHBoxLayout()
        row.addWidget(self.model_edit)
        row.addWidget(browse)
        form.addRow("folder", row)
        self.url_edit = QLineEdit(url)
        self.url_edit.setPlaceholderText("grpc://host:8001 (remote mode; empty: this computer)")
        form.addRow("server", self.url_edit)
        self.backend_combo = QComboBox()
        self.backend_combo.addItems(BACKENDS)
        form.addRow("backend", self.backend_combo)
        self.load_button = QPushButton("Load model")
        self.load_button.clicked.connect(lambda: self.load_model())
        form.addRow(self.load_button)
        self.task_combo = QComboBox()
        self.task_combo.addItem(BASE_TASK)
        form.addRow("task decoder", self.task_combo)
        layout.addWidget(model)

        image = QGroupBox("Image")
        form = QFormLayout(image)
        self.image_combo = QComboBox()
        self.image_combo.currentTextChanged.connect(lambda _: self._image_changed())
        form.addRow("layer", self.image_combo)
        self.window_combo = QComboBox()
        self.window_combo.setEditable(True)  # a preset or "low,high"
        self.window_combo.addItems(WINDOW_CHOICES)
        self.window_combo.currentTextChanged.connect(lambda _: self._image_changed())
        form.addRow("window", self.window_combo)
        layout.addWidget(image)

        objects = QGroupBox("Objects")
        form = QFormLayout(objects)
        self.object_spin = QSpinBox()
        self.object_spin.setRange(1, 65535)
        self.object_spin.valueChanged.connect(lambda _: self._clear_prompts())
        new = QPushButton("New object")
        new.clicked.connect(self.new_object)
        row = QHBoxLayout()
        row.addWidget(self.object_spin)
        row.addWidget(new)
        form.addRow("object", row)
        self.negative_check = QCheckBox("negative clicks (background)")
        self.negative_check.toggled.connect(self._click_sign_changed)
        form.addRow(self.negative_check)
        self.previous_check = QCheckBox("refine with the previous mask (mask_input)")
        self.previous_check.setChecked(True)
        form.addRow(self.previous_check)
        self.overwrite_check = QCheckBox("overwrite other objects")
        form.addRow(self.overwrite_check)
        layout.addWidget(objects)

        volume = QGroupBox("Volume and examples")
        box = QVBoxLayout(volume)
        self.propagate_button = QPushButton("Propagate object through the volume")
        self.propagate_button.clicked.connect(self.propagate)
        self.add_slice_button = QPushButton("Add this slice as an example")
        self.add_slice_button.clicked.connect(self.add_example_slice)
        self.add_volume_button = QPushButton("Add this labelled volume as an example")
        self.add_volume_button.clicked.connect(self.add_example_volume)
        self.segment_slice_button = QPushButton("Segment this slice from the examples")
        self.segment_slice_button.clicked.connect(lambda: self.segment_from_examples(volume=False))
        self.segment_volume_button = QPushButton("Segment the volume from the examples")
        self.segment_volume_button.clicked.connect(lambda: self.segment_from_examples(volume=True))
        for button in (self.propagate_button, self.add_slice_button, self.add_volume_button,
                       self.segment_slice_button, self.segment_volume_button):
            box.addWidget(button)
        self.examples_label = QLabel("examples: 0")
        box.addWidget(self.examples_label)
        layout.addWidget(volume)

        self.progress_bar = QProgressBar()
        self.progress_bar.setRange(0, 1)
        self.progress_bar.setValue(0)
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setEnabled(False)
        self.cancel_button.clicked.connect(self.cancel)
        row = QHBoxLayout()
        row.addWidget(self.progress_bar)
        row.addWidget(self.cancel_button)
        layout.addLayout(row)
        self.save_button = QPushButton("Save labels…")
        self.save_button.clicked.connect(self._save_dialog)
        layout.addWidget(self.save_button)
        self.status = QLabel("load a model to start")
        self.status.setWordWrap(True)
        layout.addWidget(self.status)
        layout.addStretch(1)

    # ------------------------------------------------------------------ messages

    def notify(self, level: str, text: str) -> None:
        """A napari notification (and the status line); never a traceback dialog."""
        self.messages.append((level, text))
        self.status.setText(text)
        {"error": show_error, "warning": show_warning}.get(level, show_info)(text)

    def _guarded(self, action: Callable[[], Any]) -> Any:
        """Run a UI action; a problem becomes a notification, nothing half-done is kept."""
        try:
            return action()
        except (GmisegError, ValueError, OSError) as exc:
            self.notify("error", str(exc))
        except Exception as exc:  # a bug: a message for the user, the traceback in the log
            log.exception("viewer action failed")
            self.notify("error", f"{type(exc).__name__}: {exc}")
        return None

    # ------------------------------------------------------------------ model

    def _browse_model(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Model folder (gmiseg-edge export)")
        if folder:
            self.model_edit.setText(folder)

    def load_model(self, model_dir: str | Path | None = None, url: str | None = None, backend: str | None = None,
                   threads: int | None = None, cache_dir: str | Path | None = None) -> bool:
        """Open the model folder (or connect to the server when a URL is given); True when ready."""
        if model_dir is not None:
            self.model_edit.setText(str(model_dir))
        if url is not None:
            self.url_edit.setText(url)
        if backend is not None:
            self.backend_combo.setCurrentText(backend)

        def open_engine() -> Engine:
            server = self.url_edit.text().strip()
            if server:
                return RemoteEngine(server)
            folder = self.model_edit.text().strip()
            if not folder:
                raise InputError("no model folder: choose a folder written by `gmiseg-edge export`")
            return LocalEngine(folder, self.backend_combo.currentText(), threads=threads, cache_dir=cache_dir)

        engine = self._guarded(open_engine)
        if engine is None:
            return False
        self.wait_for_jobs()
        if self.engine is not None:
            self.engine.close()
        self.engine = engine
        self.segmenter = None
        self.example_count = 0
        self.examples_label.setText("examples: 0")
        self.task_combo.clear()
        self.task_combo.addItems([BASE_TASK, *engine.tasks()])
        self._reset_embeddings()
        self.notify("info", f"model ready: {engine.description}")
        self._encode_current()
        return True

    @property
    def task(self) -> str:
        text = self.task_combo.currentText()
        return "" if text in ("", BASE_TASK) else text

    # ------------------------------------------------------------------ image

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
        return parse_window(self.window_combo.currentText().strip())

    def set_window(self, window: str) -> None:
        """Choose the intensity mapping (a preset or ``"low,high"``)."""
        self.window_combo.setCurrentText(window)

    def set_image(self, name: str) -> None:
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

    # ------------------------------------------------------------------ encoding (worker thread)

    def _on_slice_changed(self, *_: Any) -> None:
        if not self._closed:
            self._encode_current()

    def _encode_current(self) -> None:
        if self.engine is not None and self.image is not None:
            k = self.current_slice()
            self.request_encode(0 if k is None else k)

    def is_encoded(self, k: int | None = None) -> bool:
        return (0 if k is None else k) in self._encoded

    def request_encode(self, k: int) -> None:
        """Encode slice ``k`` in a worker thread unless done or under way (the latest request wins the queue)."""
        if k in self._encoded or self._encoding == k or self.engine is None or self.image is None:
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

    # ------------------------------------------------------------------ prompts -> mask (UI thread)

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
        region = None if k is None else (k,)
        kept_out = paste(self.labels_layer.data, result.mask, label, self.overwrite_check.isChecked(), region)
        self.labels_layer.refresh()
        self._previous[(label, slot)] = (box_key, result.logits)
        self._decoded[(label, slot)] = prompt.key()
        self.last_decode_s = time.perf_counter() - start
        note = f"; {kept_out} px left to other objects" if kept_out else ""
        self.status.setText(f"object {label}: {int(result.mask.sum())} px, IoU {result.score:.2f}, "
                            f"{1000 * self.last_decode_s:.0f} ms{note}")
        return True

    # ------------------------------------------------------------------ objects

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

    # ------------------------------------------------------------------ long jobs (worker threads)

    def _start_job(self, name: str, job: Callable, done: Callable[[Outcome], None], cancellable: bool = True) -> None:
        cancel = threading.Event() if not cancellable else self._cancel
        if cancellable:
            self._cancel.clear()
            self._job_name = name
            self.cancel_button.setEnabled(True)
            self.progress_bar.setRange(0, 0)  # busy until the first report
        elif self._job_name is None:
            self.progress_bar.setRange(0, 0)
        worker = create_worker(run_job, job, cancel, self.progress_changed.emit, _start_thread=False)

        results: list[Outcome] = []

        def finished() -> None:
            # `finished` always comes; `returned` not when napari asked the worker to quit (its window closing)
            outcome = results[0] if results else Outcome(cancelled=True)
            if worker in self._jobs:
                self._jobs.remove(worker)
            if self._closed:
                if not self._jobs:
                    self._close_engine()
                return
            if cancellable:
                self._job_name = None
                self.cancel_button.setEnabled(False)
            if self._job_name is None and not any(self._jobs):
                self.progress_bar.setRange(0, 1)
                self.progress_bar.setValue(1 if outcome.error is None and not outcome.cancelled else 0)
            done(outcome)

        worker.returned.connect(results.append)
        worker.finished.connect(finished)
        self._jobs.append(worker)
        worker.start()

    def busy(self) -> bool:
        """Whether a worker job is running."""
        return bool(self._jobs)

    @Slot(int, int)
    def _show_progress(self, done: int, total: int) -> None:
        if self._job_name is not None and total > 0:
            self.progress_bar.setRange(0, total)
            self.progress_bar.setValue(done)

    def cancel(self) -> None:
        """Stop the running propagation or support-set job at its next slice (the Labels layer is unchanged)."""
        self._cancel.set()

    def wait_for_jobs(self, timeout_s: float = 120.0) -> None:
        """Let the running jobs end (for a change of model or image, and on close)."""
        from qtpy.QtWidgets import QApplication

        deadline = time.monotonic() + timeout_s
        while self._jobs and time.monotonic() < deadline:
            QApplication.processEvents()
            time.sleep(0.005)

    def shutdown(self) -> None:
        """The viewer is closing: cancel the jobs (a running one stops at its next slice and then closes the
        engine), drop every reference to the viewer and its layers. No event processing here: this runs inside
        the window's close."""
        if self._closed:
            return
        self.cancel()
        self._closed = True
        for emitter, callback in self._connections():
            with contextlib.suppress(TypeError, ValueError, RuntimeError):
                emitter.disconnect(callback)
        # the viewer and its layers are going away: hold none of them (napari checks that no QtViewer outlives it)
        self.viewer = None
        self.image = self.image_layer = self.labels_layer = self.boxes_layer = self.clicks_layer = None
        self.uncertainty_layer = self.segmenter = None
        self._encoded.clear()
        if not self._jobs:
            self._close_engine()

    def _close_engine(self) -> None:
        if self.engine is not None:
            self.engine.close()
            self.engine = None

    def _connections(self) -> list[tuple[Any, Callable]]:
        """The viewer events the widget listens to."""
        pairs: list[tuple[Any, Callable]] = []
        if self.viewer is not None:
            pairs += [(self.viewer.layers.events.inserted, self._refresh_image_choices),
                      (self.viewer.layers.events.removed, self._refresh_image_choices),
                      (self.viewer.dims.events.current_step, self._on_slice_changed)]
        pairs += [(layer.events.data, self._on_prompts_changed) for layer in (self.boxes_layer, self.clicks_layer)
                  if layer is not None]
        return pairs

    def _local_predictor(self, what: str) -> Any:
        if self.engine is None:
            raise InputError("load a model first")
        if not isinstance(self.engine, LocalEngine):
            raise InputError(f"{what} runs the model in this process: load a model folder (not a server URL)")
        return self.engine.predictor

    def _can_start(self, what: str) -> bool:
        if self._job_name is not None:
            self.notify("warning", f"{self._job_name} is running: wait for it or cancel it before {what}")
            return False
        if self.image is None or self.labels_layer is None:
            self.notify("warning", f"no image: open one before {what}")
            return False
        return True

    def propagate(self) -> None:
        """Carry the current object from the current slice through the volume (worker thread)."""
        if not self._can_start("propagating"):
            return
        self._guarded(self._start_propagation)

    def _start_propagation(self) -> None:
        assert self.image is not None
        if not self.image.is_volume:
            raise InputError("propagation needs a volume; this image is 2D")
        predictor = self._local_predictor("propagation")
        k, label = self.current_slice(), self.object_spin.value()
        assert k is not None
        seed = self.object_mask(k)
        if not seed.any():
            raise InputError(f"object {label} has no mask on slice {k}: segment it there first")
        image = self.image
        job = propagate_job(predictor, image.file_order, image.window, k, seed)
        self.status.setText(f"propagating object {label} from slice {k}…")
        self._start_job("propagation", job, lambda outcome: self._propagated(image, label, k, outcome))

    def _propagated(self, image: SourceImage, label: int, seed: int, outcome: Outcome) -> None:
        if self._report_outcome("propagation", outcome) or image is not self.image or self.labels_layer is None:
            return
        result = outcome.value
        mask = np.transpose(result.mask, (2, 1, 0))  # (W, H, D) -> napari's (D, H, W)
        kept = [int(k) for k in np.flatnonzero(result.kept) if k != seed]
        for k in kept:
            paste(self.labels_layer.data, mask[k], label, self.overwrite_check.isChecked(), (k,))
        self.labels_layer.refresh()
        self.notify("info", f"object {label} propagated to {len(kept)} slice(s): {result.summary()}")

    def _report_outcome(self, what: str, outcome: Outcome) -> bool:
        """Notify a failed or cancelled job; True when there is no result to use."""
        if outcome.cancelled:
            self.notify("info", f"{what} cancelled; the Labels layer is unchanged")
            return True
        if outcome.error is not None:
            self.notify("error", f"{what} failed: {outcome.error}")
            return True
        return False

    # ------------------------------------------------------------------ support set

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
            self._support_set().add_support(self.image.slice(k or 0), mask, name=name)
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
            added = self._support_set().add_support(pixels, mask, name=self.image.name, axis=0)
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
            job = support_volume_job(segmenter, image.slice, image.depth)
            self._start_job("support-set volume", job, lambda outcome: self._support_volume_done(image, label,
                                                                                                  outcome))
            return
        k = self.current_slice()
        pixels = image.slice(k or 0)
        self._start_job("support-set slice", lambda _progress: segmenter.segment(pixels),
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

    # ------------------------------------------------------------------ save

    def _save_dialog(self) -> None:
        path, _ = QFileDialog.getSaveFileName(self, "Save labels", "", "NIfTI (*.nii.gz);;NRRD (*.nrrd);;"
                                              "DICOM-SEG (*.dcm);;PNG (*.png)")
        if path:
            self.save(path)

    def save(self, path: str | Path) -> Path | None:
        """Write the Labels layer with the source image's geometry (NIfTI/NRRD, DICOM-SEG for a DICOM source)."""
        def write() -> Path:
            if self.labels_layer is None or self.image_layer is None:
                raise InputError("nothing to save: no image and Labels layer")
            source = self.image_layer.metadata.get(SOURCE_KEY)
            model = getattr(getattr(self.engine, "predictor", None), "model_name", "")
            return save_labels(self.labels_layer.data, source, path, model=model)
        written = self._guarded(write)
        if written is not None:
            self.notify("info", f"labels saved to {written}")
        return written
