"""Choosing a few items from many."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeVar

import numpy as np

T = TypeVar("T")


def spread(items: Sequence[T], count: int) -> list[T]:
    """At most ``count`` of ``items``, evenly spaced over them, first and last included (all when fewer)."""
    if len(items) <= count:
        return list(items)
    if count <= 0:
        return []
    return [items[i] for i in np.linspace(0, len(items) - 1, count).round().astype(int)]
