"""Adapter configuration (torch-free): what kind of bypass, its sizes, and where it goes."""

from __future__ import annotations

import itertools
import json
from dataclasses import asdict, dataclass, fields
from typing import Any

from gmiseg_edge.core.errors import AdapterError

KINDS = ("lora", "loose_lora")
ALIASES = {"loose": "loose_lora"}  # what users type
TARGETS = ("q", "k", "v")


@dataclass(frozen=True)
class AdapterConfig:
    """Hyper-parameters of the adapters injected into a SAM-family model.

    ``kind``: ``"lora"`` (``ΔW = s·B·A``) or ``"loose_lora"`` (DESIGN §4). ``alpha`` defaults to ``rank``
    (``s = alpha / rank``). ``num_layers`` and ``widths`` (strictly decreasing multiples of ``rank``, default
    ``(2^(L-1)·r, ..., 2r, r)``) describe the Loose LoRA chain and are ignored by ``"lora"``. ``targets``: which
    of the q/k/v projections get an adapter each. ``include_decoder`` also adapts the mask decoder's attention
    projections; ``train_decoder`` unfreezes the whole mask decoder (its weights are then saved with the adapter).
    ``include_encoder=False`` (with ``include_decoder``) leaves the image encoder alone: a *task adapter*
    (DESIGN §11) that changes only the mask decoder, so one encoder and its embeddings serve every task.
    """

    kind: str = "loose_lora"
    rank: int = 4
    alpha: float | None = None
    num_layers: int = 3
    widths: tuple[int, ...] | None = None
    targets: tuple[str, ...] = ("q", "v")
    include_decoder: bool = False
    train_decoder: bool = False
    dropout: float = 0.0
    include_encoder: bool = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "kind", ALIASES.get(self.kind, self.kind))
        if self.kind not in KINDS:
            raise AdapterError(f"adapter kind must be one of {', '.join((*KINDS, *ALIASES))}, got {self.kind!r}")
        if isinstance(self.rank, bool) or not isinstance(self.rank, int) or self.rank < 1:
            raise AdapterError(f"adapter rank must be a positive integer, got {self.rank!r}")
        alpha = float(self.rank if self.alpha is None else self.alpha)
        object.__setattr__(self, "alpha", alpha)
        if not 0.0 <= self.dropout < 1.0:
            raise AdapterError(f"adapter dropout must be in [0, 1), got {self.dropout!r}")
        targets = tuple(self.targets)
        if not targets or len(set(targets)) != len(targets) or any(t not in TARGETS for t in targets):
            raise AdapterError(f"adapter targets must be distinct names among {TARGETS}, got {self.targets!r}")
        object.__setattr__(self, "targets", targets)
        if not self.include_encoder and not self.include_decoder:
            raise AdapterError("an adapter with include_encoder=False needs include_decoder=True (it adapts nothing)")
        if isinstance(self.num_layers, bool) or not isinstance(self.num_layers, int) or self.num_layers < 1:
            raise AdapterError(f"num_layers must be a positive integer, got {self.num_layers!r}")
        r = self.rank
        widths = (
            tuple(r * 2 ** (self.num_layers - 1 - i) for i in range(self.num_layers))
            if self.widths is None
            else tuple(int(w) for w in self.widths)
        )
        if len(widths) != self.num_layers:
            raise AdapterError(f"widths {widths} must have num_layers={self.num_layers} entries")
        if any(w < r or w % r for w in widths):
            raise AdapterError(f"each width must be a multiple of rank {r} (average pooling to {r}), got {widths}")
        if any(a <= b for a, b in itertools.pairwise(widths)):
            raise AdapterError(f"widths must be strictly decreasing (h_1 > h_2 > ...), got {widths}")
        object.__setattr__(self, "widths", widths)

    @property
    def scale(self) -> float:
        """``s = alpha / rank``."""
        assert self.alpha is not None
        return self.alpha / self.rank

    @property
    def decoder_only(self) -> bool:
        """True for a task adapter: the image encoder (and so its embeddings) untouched."""
        return not self.include_encoder and not self.train_decoder

    @property
    def code_size(self) -> int:
        """Columns of B: ``rank`` for LoRA, ``num_layers · rank`` for Loose LoRA."""
        return self.rank if self.kind == "lora" else self.num_layers * self.rank

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["widths"] = list(data["widths"])
        data["targets"] = list(data["targets"])
        if data["include_encoder"]:  # the default: encoder-side adapters keep the JSON they had before tasks
            del data["include_encoder"]
        return data

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> AdapterConfig:
        """Inverse of :meth:`to_dict`; unknown keys are an error."""
        if not isinstance(data, dict):
            raise AdapterError(f"adapter config must be a JSON object, got {type(data).__name__}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise AdapterError(f"unknown adapter config keys {unknown}")
        values = dict(data)
        for key in ("widths", "targets"):
            if values.get(key) is not None:
                values[key] = tuple(values[key])
        return cls(**values)

    @classmethod
    def from_json(cls, text: str) -> AdapterConfig:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise AdapterError(f"adapter config is not valid JSON: {exc}") from None
        return cls.from_dict(data)
