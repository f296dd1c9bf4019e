"""The widget's model: a model folder run in this process, or a ``gmiseg-edge serve`` server when a URL is given
(remote mode: the server encodes and decodes, propagation and support sets need the local model)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from qtpy.QtWidgets import QFileDialog

from gmiseg_edge.core.errors import InputError
from gmiseg_edge.viewer.engines import Engine, LocalEngine, RemoteEngine
from gmiseg_edge.viewer.widget.controls import BASE_TASK
from gmiseg_edge.viewer.widget.state import WidgetState


class ModelMixin(WidgetState):
    """Loading, choosing the task decoder and closing the engine."""

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
        """The chosen task decoder ("" for the base decoder)."""
        text = self.task_combo.currentText()
        return "" if text in ("", BASE_TASK) else text

    def _local_predictor(self, what: str) -> Any:
        if self.engine is None:
            raise InputError("load a model first")
        if not isinstance(self.engine, LocalEngine):
            raise InputError(f"{what} runs the model in this process: load a model folder (not a server URL)")
        return self.engine.predictor

    def _close_engine(self) -> None:
        if self.engine is not None:
            self.engine.close()
            self.engine = None
