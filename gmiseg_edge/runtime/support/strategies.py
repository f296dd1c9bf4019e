"""Strategies chosen by name: each step of the support-set segmenter that has alternatives keeps them in a
registry (a dict name -> strategy) so benchmarks and the command line can list and choose them."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TypeVar

T = TypeVar("T")


def pick(registry: Mapping[str, T], step: str, name: str) -> T:
    """The strategy ``name`` of ``step``; an unknown name is a ValueError listing the known ones."""
    if not isinstance(name, str) or name not in registry:
        raise ValueError(f"{step} must be one of {', '.join(registry)} (the known {step} strategies), "
                         f"got {name!r}")
    return registry[name]
