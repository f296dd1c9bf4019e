"""The widget's save: the Labels layer written with the source image's geometry (:mod:`gmiseg_edge.viewer.save`)."""

from __future__ import annotations

from pathlib import Path

from qtpy.QtWidgets import QFileDialog

from gmiseg_edge.core.errors import InputError
from gmiseg_edge.viewer.reader import SOURCE_KEY
from gmiseg_edge.viewer.save import save_labels
from gmiseg_edge.viewer.widget.state import WidgetState


class SavingMixin(WidgetState):
    """The save dialog and the save."""

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
