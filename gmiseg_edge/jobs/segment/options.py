"""What ``segment`` is asked to do: one prompt source (:mod:`.prompts`) and what to write."""

from __future__ import annotations

from dataclasses import dataclass

from gmiseg_edge.core.errors import InputError
from gmiseg_edge.data.formats import volume_mask_formats
from gmiseg_edge.data.intensity import Window
from gmiseg_edge.jobs.segment.prompts import Prompt

OUTPUT_FORMATS = ("auto", *volume_mask_formats())  # volumes: the input's own, or a row of the format table


def check_output_format(fmt: str) -> None:
    """InputError unless ``fmt`` is one of :data:`OUTPUT_FORMATS`."""
    if fmt not in OUTPUT_FORMATS:
        raise InputError(f"--format {fmt!r}: expected one of {', '.join(OUTPUT_FORMATS)}")


@dataclass(frozen=True)
class SegmentOptions:
    """The prompt source (None: every input brings its own, as challenge cases do) and what to write.

    ``window`` maps non-uint8 intensities to uint8 per slice (``percentile`` by default, ``minmax``, a CT preset
    or ``(low, high)``); with propagation the whole volume is mapped once."""

    prompt: Prompt | None = None
    window: Window = "percentile"
    overlay: bool = False
    series: str | None = None  # DICOM folders holding several series: SeriesInstanceUID, number or description
    format: str = "auto"  # volumes: auto (the input's own; DICOM -> dicom-seg), nifti, nrrd, dicom-seg
    structure: str | None = None  # the structure's name (DICOM-SEG segment label)

    def check(self, prompts_in_inputs: bool = False) -> None:
        """A known output format, and a prompt unless every input brings its own (``prompts_in_inputs``), in
        which case none."""
        check_output_format(self.format)
        if prompts_in_inputs and self.prompt is not None:
            raise InputError("challenge cases (.npz) bring their own boxes: give no --box/--point/--support/"
                             "--label/--propagate")
        if not prompts_in_inputs and self.prompt is None:
            raise InputError("no prompt: give --box/--point, --support DIR, or --label K with a label map")
