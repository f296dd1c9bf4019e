"""LoRA and Loose LoRA bypasses, and the Linear wrapper that adds them to chosen output rows.

Each bypass maps ``x`` (…, d_in) to ``ΔW x`` (…, d_out) and exposes :meth:`delta_weight`, the exact
(d_out × d_in) matrix it computes. The delta formulas are plain functions of the tensors so that the
functional merge (:func:`gmiseg_edge.adapters.merge.merge_state_dict`) computes bit-for-bit the same ΔW.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch
from torch import nn
from torch.nn import functional as F

from gmiseg_edge.adapters.config import AdapterConfig


def average_pool(u: torch.Tensor, rank: int, dim: int = -1) -> torch.Tensor:
    """``P u``: the mean over consecutive groups of ``width / rank`` channels along ``dim``."""
    dim = dim % u.dim()
    width = u.shape[dim]
    return u.unflatten(dim, (rank, width // rank)).mean(dim + 1)


def lora_delta(a: torch.Tensor, b: torch.Tensor, scale: float) -> torch.Tensor:
    """``s · B · A`` computed in float64 (A: r × d_in, B: d_out × r)."""
    return scale * (b.double() @ a.double())


def loose_lora_delta(a: Sequence[torch.Tensor], b: torch.Tensor, rank: int, scale: float) -> torch.Tensor:
    """``s · B · [P_1 A_1; P_2 A_2 A_1; ...; P_L A_L ⋯ A_1]`` computed in float64."""
    product = torch.eye(a[0].shape[1], dtype=torch.float64, device=a[0].device)
    pooled = []
    for a_l in a:
        product = a_l.double() @ product
        pooled.append(average_pool(product, rank, dim=0))
    return scale * (b.double() @ torch.cat(pooled, dim=0))


class LoRA(nn.Module):
    """Standard LoRA bypass ``x ↦ s · B A x`` with A Kaiming-uniform and B zero-initialised."""

    def __init__(
        self,
        d_in: int,
        d_out: int,
        rank: int,
        alpha: float,
        dropout: float = 0.0,
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
    ) -> None:
        super().__init__()
        self.rank = rank
        self.scale = alpha / rank
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.A = nn.Parameter(torch.empty(rank, d_in, dtype=dtype, device=device))
        self.B = nn.Parameter(torch.zeros(d_out, rank, dtype=dtype, device=device))
        nn.init.kaiming_uniform_(self.A, a=math.sqrt(5))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.scale * F.linear(F.linear(self.dropout(x), self.A), self.B)

    def delta_weight(self, dtype: torch.dtype | None = None) -> torch.Tensor:
        """The exact ΔW (d_out × d_in), in ``dtype`` (default: the parameters' dtype)."""
        return lora_delta(self.A, self.B, self.scale).to(dtype or self.B.dtype)


class LooseLoRA(nn.Module):
    """Loose LoRA bypass (DESIGN §4): ``u_l = A_l u_{l-1}``, ``z = concat_l(P_l u_l)``, ``x ↦ s · B z``.

    ``A.0`` is h_1 × d_in, ``A.l`` is h_{l+1} × h_l (Kaiming-uniform); P_l average-pools h_l channels to
    ``rank`` (fixed, not a parameter); ``B`` is d_out × (L·rank), zero-initialised.
    """

    def __init__(
        self,
        d_in: int,
        d_out: int,
        rank: int,
        alpha: float,
        widths: Sequence[int],
        dropout: float = 0.0,
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
    ) -> None:
        super().__init__()
        self.rank = rank
        self.scale = alpha / rank
        self.widths = tuple(widths)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        ins = (d_in, *self.widths[:-1])
        self.A = nn.ParameterList(
            nn.Parameter(torch.empty(h, h_prev, dtype=dtype, device=device))
            for h, h_prev in zip(self.widths, ins, strict=True)
        )
        for a_l in self.A:
            nn.init.kaiming_uniform_(a_l, a=math.sqrt(5))
        self.B = nn.Parameter(torch.zeros(d_out, rank * len(self.widths), dtype=dtype, device=device))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        u = self.dropout(x)
        codes = []
        for a_l in self.A:
            u = F.linear(u, a_l)
            codes.append(average_pool(u, self.rank))
        return self.scale * F.linear(torch.cat(codes, dim=-1), self.B)

    def delta_weight(self, dtype: torch.dtype | None = None) -> torch.Tensor:
        """The exact ΔW (d_out × d_in), in ``dtype`` (default: the parameters' dtype)."""
        return loose_lora_delta(list(self.A), self.B, self.rank, self.scale).to(dtype or self.B.dtype)


def make_adapter(
    config: AdapterConfig, d_in: int, d_out: int, dtype: torch.dtype | None = None, device: torch.device | None = None
) -> LoRA | LooseLoRA:
    """A fresh bypass of ``config.kind`` from d_in inputs to d_out outputs."""
    assert config.alpha is not None and config.widths is not None
    if config.kind == "lora":
        return LoRA(d_in, d_out, config.rank, config.alpha, config.dropout, dtype, device)
    return LooseLoRA(d_in, d_out, config.rank, config.alpha, config.widths, config.dropout, dtype, device)


def delta_from_tensors(config: AdapterConfig, tensors: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """ΔW (float64) of one bypass from its tensors named as in the module (``A``/``A.<l>`` and ``B``)."""
    assert config.alpha is not None
    if config.kind == "lora":
        return lora_delta(tensors["A"], tensors["B"], config.scale)
    a = [tensors[f"A.{i}"] for i in range(config.num_layers)]
    return loose_lora_delta(a, tensors["B"], config.rank, config.scale)


class AdaptedLinear(nn.Linear):
    """A frozen Linear plus one bypass per target, each added to its own output rows.

    It shares the wrapped Linear's ``weight`` and ``bias`` Parameters, so the base keys of the state dict are
    unchanged (``<name>.weight``, ``<name>.bias``) and the bypass parameters live under
    ``<name>.adapters.<target>.*``. :meth:`merge` folds ΔW into ``weight`` (the bypass is then skipped);
    :meth:`unmerge` restores the weight saved at merge time, bit for bit.
    """

    def __init__(self, base: nn.Linear, rows: Mapping[str, torch.Tensor], config: AdapterConfig) -> None:
        super().__init__(base.in_features, base.out_features, bias=base.bias is not None, device="meta")
        self.weight = base.weight
        self.bias = base.bias
        self.config = config
        self.merged = False
        self._saved_weight: torch.Tensor | None = None
        self.adapters = nn.ModuleDict()
        self.targets = tuple(rows)
        for target, idx in rows.items():
            idx = torch.as_tensor(idx, dtype=torch.long, device=base.weight.device)
            if idx.numel() == 0 or int(idx.min()) < 0 or int(idx.max()) >= base.out_features:
                raise ValueError(f"rows for {target!r} out of range for a Linear with {base.out_features} outputs")
            self.register_buffer(f"rows_{target}", idx, persistent=False)
            self.adapters[target] = make_adapter(
                config, base.in_features, idx.numel(), dtype=base.weight.dtype, device=base.weight.device
            )

    def rows(self, target: str) -> torch.Tensor:
        """Output rows of ``weight`` that the ``target`` bypass adds to."""
        return getattr(self, f"rows_{target}")

    def delta_weight(self, dtype: torch.dtype | None = None) -> torch.Tensor:
        """ΔW of the whole layer (out_features × in_features): zero outside the adapted rows."""
        out = torch.zeros(self.out_features, self.in_features, dtype=torch.float64, device=self.weight.device)
        for target in self.targets:
            out[self.rows(target)] += self.adapters[target].delta_weight(torch.float64)
        return out.to(dtype or self.weight.dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.linear(x, self.weight, self.bias)
        if self.merged:
            return y
        for target in self.targets:
            y = y.index_add(-1, self.rows(target), self.adapters[target](x))
        return y

    @torch.no_grad()
    def merge(self) -> None:
        """Fold ΔW into ``weight`` in place (keeping the original to restore); no-op when merged."""
        if self.merged:
            return
        self._saved_weight = self.weight.detach().clone()
        self.weight.copy_(merged_weight(self.weight, {t: self.rows(t) for t in self.targets}, self._deltas()))
        self.merged = True

    @torch.no_grad()
    def unmerge(self) -> None:
        """Restore the weight saved by :meth:`merge`; no-op when not merged."""
        if not self.merged:
            return
        assert self._saved_weight is not None
        self.weight.copy_(self._saved_weight)
        self._saved_weight = None
        self.merged = False

    def _deltas(self) -> dict[str, torch.Tensor]:
        return {t: self.adapters[t].delta_weight(torch.float64) for t in self.targets}

    def base_weight(self) -> torch.Tensor:
        """The weight without ΔW, whether merged or not."""
        return self._saved_weight if self.merged and self._saved_weight is not None else self.weight

    def to_linear(self) -> nn.Linear:
        """A plain Linear with the merged weight (W + ΔW on the adapted rows) and the same bias."""
        weight = (
            self.weight.detach()
            if self.merged
            else merged_weight(self.weight, {t: self.rows(t) for t in self.targets}, self._deltas())
        )
        linear = nn.Linear(self.in_features, self.out_features, bias=self.bias is not None, device="meta")
        linear.weight = nn.Parameter(weight.detach().clone())
        if self.bias is not None:
            linear.bias = nn.Parameter(self.bias.detach().clone())
        return linear

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, targets={self.targets}, kind={self.config.kind}, merged={self.merged}"


def merged_weight(
    weight: torch.Tensor, rows: Mapping[str, torch.Tensor], deltas: Mapping[str, torch.Tensor]
) -> torch.Tensor:
    """``W + ΔW`` on the given rows, added in float64 and rounded once to W's dtype (a new tensor)."""
    out = weight.detach().double().clone()
    for target, idx in rows.items():
        out[idx.to(out.device)] += deltas[target].to(out.device)
    return out.to(weight.dtype)
