"""Where ``segment``'s prompts come from: one value of the union :data:`Prompt`, so two sources cannot be given at
once. Box and point coordinates are pixels (x, y) of the 2D image, or of slice ``slice`` of a volume as
:func:`~gmiseg_edge.data.slice_2d` shows it (rows = j, columns = i); volumes are sliced along the last axis.

``propagate`` (volumes; DESIGN §10, :mod:`gmiseg_edge.runtime.propagate`) carries one structure from a seed slice
through its neighbours until it ends: the seed is a box/points prompt on ``slice``, or the labelled slice of
largest area of a :class:`LabelPrompt`'s label.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from gmiseg_edge.core.errors import InputError

Box = tuple[float, float, float, float]  # x0, y0, x1, y1
Point = tuple[float, float, int]  # x, y, label (1 foreground, 0 background)


@dataclass(frozen=True)
class BoxPrompt:
    """One object from one box; a volume needs ``slice`` (only that slice is segmented, or with ``propagate`` the
    structure is carried from it)."""

    box: Box
    slice: int | None = None
    propagate: bool = False

    def keywords(self) -> dict[str, object]:
        """The prompt as :meth:`~gmiseg_edge.runtime.Predictor.predict` takes it."""
        return {"box": self.box, "points": None, "labels": None}


@dataclass(frozen=True)
class PointsPrompt:
    """One object from clicks (and optionally the box they refine); ``slice`` and ``propagate`` as for
    :class:`BoxPrompt`."""

    points: tuple[Point, ...]
    box: Box | None = None
    slice: int | None = None
    propagate: bool = False

    def __post_init__(self) -> None:
        if not self.points:
            raise InputError("a points prompt needs at least one point")

    def keywords(self) -> dict[str, object]:
        """The prompt as :meth:`~gmiseg_edge.runtime.Predictor.predict` takes it."""
        return {"box": self.box, "points": [p[:2] for p in self.points], "labels": [p[2] for p in self.points]}


@dataclass(frozen=True)
class BoxesPrompt:
    """Several objects, one box each, decoded together in batched decoder calls
    (:meth:`~gmiseg_edge.runtime.Predictor.predict_objects`): a label map out, object k (the k-th box, from 1) ->
    label k; where masks overlap the pixel goes to the object with the larger logit. Dice (with a label map)
    scores the union of the objects."""

    boxes: tuple[Box, ...]
    slice: int | None = None

    def __post_init__(self) -> None:
        if not self.boxes:
            raise InputError("a boxes prompt needs at least one box")


@dataclass(frozen=True)
class InstancesPrompt:
    """With the input's label map: one object per instance, each prompted with a box from its extent, decoded
    together as :class:`BoxesPrompt`. Without ``label`` every non-zero id of the map is an instance (an instance
    map, such as the nuclei sample's); with ``label`` each connected component of that label is one. Objects are
    numbered 1..K in ascending instance id, per slice."""

    label: int | None = None


@dataclass(frozen=True)
class SupportSetPrompt:
    """A support set (``folder``: a dataset folder of examples): every 2D support, and up to ``slices`` labelled
    slices per support volume spread over the label's extent, form one
    :class:`~gmiseg_edge.runtime.SupportSetSegmenter`. Every slice of a volume is segmented with the presence
    decision, then only the run of slices connected to the most confident one is kept
    (:mod:`gmiseg_edge.runtime.support_volume`); a 2D image is segmented without it. When every example is a
    volume (and it and the input hold at least 8 slices: a thin slab goes slice by slice), a volume input takes
    the 3D path instead (:mod:`gmiseg_edge.runtime.support.segment3d`: each example
    volume registered onto it as a volume). ``label``: the structure in the examples' (and the evaluated inputs')
    label maps; ``uncertainty``: also write the examples' disagreement; ``prior``: also write the 3D path's prior;
    ``strategies``: (step, name) pairs for the 2D path's segmenter (its keyword arguments: locate, fusion, choice,
    appearance, select), the defaults where absent."""

    folder: Path
    label: int | None = None
    slices: int = 3
    uncertainty: bool = False
    prior: bool = False
    strategies: tuple[tuple[str, str | int], ...] = ()


@dataclass(frozen=True)
class LabelPrompt:
    """Evaluation: a box from the extent of ``label`` in the input's label map, on each slice where it is present
    (2D: the whole image); with ``propagate`` the labelled slice of largest area seeds propagation instead."""

    label: int
    propagate: bool = False


Prompt = BoxPrompt | PointsPrompt | BoxesPrompt | InstancesPrompt | SupportSetPrompt | LabelPrompt
ONE_OBJECT = (BoxPrompt, PointsPrompt)  # prompts of one object given by the user (a slice, propagation)
ON_A_SLICE = (BoxPrompt, PointsPrompt, BoxesPrompt)  # coordinates of one slice: a volume needs ``slice``


def seed_slice(prompt: Prompt | None) -> int | None:
    """The slice a box/points prompt belongs to (None for other prompts)."""
    return prompt.slice if isinstance(prompt, ON_A_SLICE) else None


def propagates(prompt: Prompt | None) -> bool:
    """Whether ``prompt`` is carried through a volume from its seed slice."""
    return isinstance(prompt, (*ONE_OBJECT, LabelPrompt)) and prompt.propagate


def structure_label(prompt: Prompt | None) -> int | None:
    """The label the prompt names in the label maps (None: each dataset entry's own, or every non-zero label)."""
    return prompt.label if isinstance(prompt, (InstancesPrompt, SupportSetPrompt, LabelPrompt)) else None


def gives_label_map(prompt: Prompt | None) -> bool:
    """Whether the output is a label map of several objects (else a binary mask)."""
    return isinstance(prompt, (BoxesPrompt, InstancesPrompt))
