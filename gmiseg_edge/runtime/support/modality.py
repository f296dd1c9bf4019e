"""Which kind of intensities an image holds, so that CT supports are not used on an MR query (or the reverse).

Only raw intensities tell: a CT in Hounsfield units holds air (about -1000 HU; anything at or below
:data:`AIR_HU` counts), while MR, PET and microscopy intensities are never that negative. An image given as
uint8 (already windowed or normalised) no longer says where it came from: it is ``None`` here and is not
checked (a caller who knows can pass ``modality=``).
"""

from __future__ import annotations

import numpy as np

from gmiseg_edge.core.errors import InputError

AIR_HU = -500.0  # CT: values at or below this are air or lung in Hounsfield units
CT = "CT"
NOT_CT = "not CT"


def intensity_kind(image: np.ndarray) -> str | None:
    """``"CT"`` for raw intensities down to air (min <= AIR_HU), ``"not CT"`` for raw intensities that are never
    negative, ``None`` when it cannot be told (uint8, or negative values above AIR_HU: a normalised image)."""
    array = np.asarray(image)
    if array.dtype == np.uint8 or array.dtype == bool or array.size == 0:
        return None
    low = float(np.min(array))
    if low <= AIR_HU:
        return CT
    return NOT_CT if low >= 0 else None


def stated_kind(modality: str | None) -> str | None:
    """A caller's ``modality=`` as the kind of :func:`intensity_kind`: ``"CT"`` or ``"not CT"`` (MR, PET, ...)."""
    if modality is None:
        return None
    return CT if modality.strip().upper() == CT else NOT_CT


def check_same_kind(query: str | None, supports: list[tuple[str, str | None]], name: str = "query image") -> None:
    """An :class:`InputError` when the query's kind is known and a support's known kind differs from it
    (``supports``: (name, kind) pairs)."""
    if query is None:
        return
    odd = [support for support, kind in supports if kind is not None and kind != query]
    if odd:
        raise InputError(
            f"{name} holds {_describe(query)} but support(s) {', '.join(odd[:3])}{' ...' if len(odd) > 3 else ''} "
            f"hold {_describe(CT if query == NOT_CT else NOT_CT)}: a support set only locates a structure in "
            "images of its own modality; use supports from scans like the query")


def _describe(kind: str) -> str:
    return "CT intensities (Hounsfield units down to air)" if kind == CT else "non-CT intensities (never below 0)"
