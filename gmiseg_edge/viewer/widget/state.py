"""What the widget holds, shared by its parts (the mixins that make up
:class:`~gmiseg_edge.viewer.widget.SegmentWidget`): annotations only, the values are set by ``SegmentWidget``
and its controls (:mod:`.controls`)."""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Any

import numpy as np
from napari.layers import Image, Labels, Points, Shapes
from qtpy.QtWidgets import QCheckBox, QComboBox, QLabel, QLineEdit, QProgressBar, QPushButton, QSpinBox

from gmiseg_edge.viewer.engines import Engine
from gmiseg_edge.viewer.image import SourceImage


class WidgetState:
    """The widget's model, image, layers, prompt and job state, and controls."""

    viewer: Any  # the napari viewer; None once it closed
    engine: Engine | None
    image: SourceImage | None
    image_layer: Image | None
    labels_layer: Labels | None
    boxes_layer: Shapes | None
    clicks_layer: Points | None
    uncertainty_layer: Image | None
    messages: list[tuple[str, str]]  # (level, text), newest last
    last_decode_s: float | None  # the last click's decode and write into the Labels layer
    last_write_s: float | None  # of which the write into the Labels layer
    partial_labels_update: bool  # a click writes and redraws only its changed pixels (False: whole-layer refresh)
    segmenter: Any  # the support set (runtime SupportSetSegmenter), made on the first example
    example_count: int
    propagation: Any  # the last propagation's runtime PropagationResult (stops, spacing), None before one
    _propagation_of: tuple[Any, int] | None  # (image, object label) that ``propagation`` belongs to
    _encoded: OrderedDict[int, Any]  # slice -> embedding handle, for self.image
    _encoding: int | None  # slice being encoded
    _encode_wanted: int | None  # slice to encode next
    _pending: int | None  # slice whose prompt waits for its embedding
    _previous: dict[tuple[int, int], tuple[Any, np.ndarray]]  # (label, k) -> (box key, logits)
    _decoded: dict[tuple[int, int], tuple]  # (label, k) -> prompt key last decoded
    _muted: bool  # prompt events ignored while the widget edits the prompt layers itself
    _cancel: threading.Event
    _jobs: list[Any]  # running napari workers
    _job_name: str | None  # the running cancellable job
    _closed: bool

    # controls (:mod:`.controls`)
    model_edit: QLineEdit
    url_edit: QLineEdit
    backend_combo: QComboBox
    load_button: QPushButton
    task_combo: QComboBox
    image_combo: QComboBox
    window_combo: QComboBox
    object_spin: QSpinBox
    negative_check: QCheckBox
    previous_check: QCheckBox
    overwrite_check: QCheckBox
    propagate_button: QPushButton
    correct_button: QPushButton
    add_slice_button: QPushButton
    add_volume_button: QPushButton
    segment_slice_button: QPushButton
    segment_volume_button: QPushButton
    examples_label: QLabel
    progress_bar: QProgressBar
    cancel_button: QPushButton
    save_button: QPushButton
    status: QLabel
