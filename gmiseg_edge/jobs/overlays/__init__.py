"""Overlay pictures: an image with its mask tinted and outlined, or its objects each in a colour of its own, as a
clinician reads them: a volume's slice in the radiological view from its affine (:mod:`.orientation`: axial with the
patient's right on the image's left and anterior up), resampled to square mm and at least 384 px on the short side,
with a legend (structure, Dice when known) and the patient directions at the edges (:mod:`.picture`,
:mod:`.legend`); the tint itself at the image's own size (:mod:`.tint`)."""

from gmiseg_edge.jobs.overlays.legend import LegendEntry, dice_text
from gmiseg_edge.jobs.overlays.orientation import View, image_view, radiological_view, volume_view
from gmiseg_edge.jobs.overlays.picture import (
    MIN_SIDE,
    label_picture,
    mask_picture,
    picture_shape,
    write_label_overlay,
    write_overlay,
)
from gmiseg_edge.jobs.overlays.tint import label_boundaries, label_overlay, overlay, palette

__all__ = [
    "MIN_SIDE",
    "LegendEntry",
    "View",
    "dice_text",
    "image_view",
    "label_boundaries",
    "label_overlay",
    "label_picture",
    "mask_picture",
    "overlay",
    "palette",
    "picture_shape",
    "radiological_view",
    "volume_view",
    "write_label_overlay",
    "write_overlay",
]
