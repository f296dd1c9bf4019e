"""The widget's controls: model, image, objects, volume and examples, progress, save and the status line."""

from __future__ import annotations

from pathlib import Path

from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QProgressBar,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
)

from gmiseg_edge.viewer.engines import BACKENDS
from gmiseg_edge.viewer.image import WINDOW_CHOICES
from gmiseg_edge.viewer.widget.state import WidgetState

BASE_TASK = "(base decoder)"


class ControlsMixin(WidgetState):
    """Builds the controls and connects them to the widget's actions."""

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
        self.correct_button = QPushButton("Correct the propagation from this slice")
        self.correct_button.setToolTip("after fixing the object on this slice (box, clicks or painting): re-run only "
                                       "the slices between this one and the nearest seeds on either side")
        self.correct_button.clicked.connect(self.correct_propagation)
        self.add_slice_button = QPushButton("Add this slice as an example")
        self.add_slice_button.clicked.connect(self.add_example_slice)
        self.add_volume_button = QPushButton("Add this labelled volume as an example")
        self.add_volume_button.clicked.connect(self.add_example_volume)
        self.segment_slice_button = QPushButton("Segment this slice from the examples")
        self.segment_slice_button.clicked.connect(lambda: self.segment_from_examples(volume=False))
        self.segment_volume_button = QPushButton("Segment the volume from the examples")
        self.segment_volume_button.clicked.connect(lambda: self.segment_from_examples(volume=True))
        for button in (self.propagate_button, self.correct_button, self.add_slice_button, self.add_volume_button,
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
