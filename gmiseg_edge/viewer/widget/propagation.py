"""The widget's propagation: the current object carried from the current slice through the volume (a worker job
with progress and cancel; the runtime's ``propagate``)."""

from __future__ import annotations

import numpy as np

from gmiseg_edge.core.errors import InputError
from gmiseg_edge.viewer.image import SourceImage
from gmiseg_edge.viewer.labels import paste
from gmiseg_edge.viewer.tasks import Outcome, correct_job, propagate_job
from gmiseg_edge.viewer.widget.state import WidgetState


class PropagationMixin(WidgetState):
    """Propagation through the volume."""

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
        voxel = image.voxel_spacing  # napari order (D, H, W): the layer's scale, the header's voxel size
        spacing = None if voxel is None else (voxel[2], voxel[1], voxel[0])  # the runtime's (W, H, D) order
        job = propagate_job(predictor, image.file_order, image.window, k, seed, spacing)
        self.status.setText(f"propagating object {label} from slice {k}…")
        self._start_job("propagation", job, lambda outcome: self._propagated(image, label, k, outcome))

    def _propagated(self, image: SourceImage, label: int, seed: int, outcome: Outcome) -> None:
        if self._report_outcome("propagation", outcome) or image is not self.image or self.labels_layer is None:
            return
        result = outcome.value
        self.propagation, self._propagation_of = result, (image, label)
        mask = np.transpose(result.mask, (2, 1, 0))  # (W, H, D) -> napari's (D, H, W)
        kept = [int(k) for k in np.flatnonzero(result.kept) if k != seed]
        for k in kept:
            paste(self.labels_layer.data, mask[k], label, self.overwrite_check.isChecked(), (k,))
        self.labels_layer.refresh()
        self.notify("info", f"object {label} propagated to {len(kept)} slice(s): {result.summary()}")

    def correct_propagation(self) -> None:
        """The current object was fixed on the current slice: re-run its propagation from there, only between this
        slice and the nearest other seeds (worker thread); the other slices keep their masks."""
        if not self._can_start("correcting the propagation"):
            return
        self._guarded(self._start_correction)

    def _start_correction(self) -> None:
        assert self.image is not None
        label, k = self.object_spin.value(), self.current_slice()
        owner = self._propagation_of
        if self.propagation is None or owner is None or owner[0] is not self.image or owner[1] != label:
            raise InputError(f"object {label} has not been propagated in this image: propagate it first, then fix a "
                             "slice and correct from there")
        predictor = self._local_predictor("correcting a propagation")
        assert k is not None
        fixed = self.object_mask(k)
        if not fixed.any():
            raise InputError(f"object {label} has no mask on slice {k}: segment it there first")
        image, before = self.image, self.propagation
        job = correct_job(predictor, image.file_order, image.window, before, k, fixed)
        self.status.setText(f"correcting object {label} from slice {k}…")
        self._start_job("correction", job, lambda outcome: self._corrected(image, label, k, before, outcome))

    def _corrected(self, image: SourceImage, label: int, fixed: int, before, outcome: Outcome) -> None:
        if self._report_outcome("correction", outcome) or image is not self.image or self.labels_layer is None:
            return
        after = outcome.value
        self.propagation, self._propagation_of = after, (image, label)
        old = np.transpose(before.mask, (2, 1, 0))
        new = np.transpose(after.mask, (2, 1, 0))
        changed = [k for k in range(old.shape[0]) if k != fixed and not np.array_equal(old[k], new[k])]
        data = self.labels_layer.data
        for k in changed:  # paste also clears the object's pixels outside the new mask
            paste(data, new[k], label, self.overwrite_check.isChecked(), (k,))
        self.labels_layer.refresh()
        self.notify("info", f"object {label}: {len(changed)} slice(s) changed by the correction on slice {fixed}: "
                    f"{after.summary()}")
