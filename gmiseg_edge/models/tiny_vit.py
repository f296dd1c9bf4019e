"""TinyViT image encoder as used by MobileSAM (1024 input) and LiteMedSAM (256 input).

A four-stage hierarchical encoder: a convolutional stem, one stage of inverted-residual convolutions, then
three stages of windowed self-attention with a learned relative-position bias, ending in SAM's 256-channel
neck on a 64x64 grid. Module and parameter names follow the released checkpoints so that their state dicts
load strictly, key for key.

The two released variants differ only in the stem: MobileSAM downsamples 1024 -> 256 with two 3x3 stride-2
convolutions, LiteMedSAM keeps its 256 input with two 1x1 convolutions. MobileSAM's checkpoint also carries
the ImageNet classifier head of TinyViT's pre-training (``norm_head``, ``head``); it is kept as an unused
module so that the checkpoint loads strictly, and never runs.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from segment_anything.modeling.common import LayerNorm2d
from torch import nn
from torch.nn import functional as F


@dataclass(frozen=True)
class TinyViTConfig:
    """Hyper-parameters of a TinyViT encoder (defaults: the 5M variant used by MobileSAM and LiteMedSAM)."""

    img_size: int = 1024
    stem: str = "conv3x3_s2"  # "conv3x3_s2" (1024 -> 256) or "conv1x1" (256 -> 256)
    embed_dims: tuple[int, ...] = (64, 128, 160, 320)
    depths: tuple[int, ...] = (2, 2, 6, 2)
    num_heads: tuple[int, ...] = (2, 4, 5, 10)
    window_sizes: tuple[int, ...] = (7, 7, 14, 7)
    mlp_ratio: float = 4.0
    mbconv_expand_ratio: float = 4.0
    out_chans: int = 256
    classifier_classes: int = 0  # >0 keeps an (unused) ImageNet head for strict checkpoint loading

    @property
    def stem_stride(self) -> int:
        return 4 if self.stem == "conv3x3_s2" else 1


class Conv2dBN(nn.Sequential):
    """Bias-free convolution followed by batch norm (children ``c`` and ``bn``, as in the checkpoints)."""

    def __init__(self, in_ch: int, out_ch: int, kernel: int = 1, stride: int = 1, groups: int = 1) -> None:
        super().__init__()
        self.c = nn.Conv2d(in_ch, out_ch, kernel, stride, kernel // 2, groups=groups, bias=False)
        self.bn = nn.BatchNorm2d(out_ch)


class PatchEmbed(nn.Module):
    """Stem: two conv-BN layers with a GELU between them."""

    def __init__(self, in_chans: int, embed_dim: int, stem: str) -> None:
        super().__init__()
        if stem == "conv3x3_s2":
            kernel, stride = 3, 2
        elif stem == "conv1x1":
            kernel, stride = 1, 1
        else:
            raise ValueError(f"unknown TinyViT stem {stem!r}")
        self.seq = nn.Sequential(
            Conv2dBN(in_chans, embed_dim // 2, kernel, stride),
            nn.GELU(),
            Conv2dBN(embed_dim // 2, embed_dim, kernel, stride),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.seq(x)


class MBConv(nn.Module):
    """Inverted residual block: 1x1 expand, 3x3 depthwise, 1x1 project, residual, GELU after each."""

    def __init__(self, dim: int, expand_ratio: float) -> None:
        super().__init__()
        hidden = int(dim * expand_ratio)
        self.conv1 = Conv2dBN(dim, hidden, 1)
        self.act1 = nn.GELU()
        self.conv2 = Conv2dBN(hidden, hidden, 3, groups=hidden)
        self.act2 = nn.GELU()
        self.conv3 = Conv2dBN(hidden, dim, 1)
        self.act3 = nn.GELU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.act1(self.conv1(x))
        y = self.act2(self.conv2(y))
        return self.act3(self.conv3(y) + x)


class PatchMerging(nn.Module):
    """Downsampling between stages; takes (B, C, H, W) or tokens (B, H*W, C), returns tokens."""

    def __init__(self, resolution: int, dim: int, out_dim: int, stride: int) -> None:
        super().__init__()
        self.resolution = resolution
        self.act = nn.GELU()
        self.conv1 = Conv2dBN(dim, out_dim, 1)
        self.conv2 = Conv2dBN(out_dim, out_dim, 3, stride=stride, groups=out_dim)
        self.conv3 = Conv2dBN(out_dim, out_dim, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 3:
            x = tokens_to_map(x, self.resolution)
        x = self.act(self.conv1(x))
        x = self.act(self.conv2(x))
        x = self.conv3(x)
        return x.flatten(2).transpose(1, 2)


def tokens_to_map(x: torch.Tensor, resolution: int) -> torch.Tensor:
    """(B, H*W, C) tokens to a (B, C, H, W) map."""
    batch, _, chans = x.shape
    return x.transpose(1, 2).reshape(batch, chans, resolution, resolution)


def relative_offset_index(window: int) -> tuple[int, torch.Tensor]:
    """Number of distinct |dy|,|dx| offsets in a window and the (N, N) index of each token pair's offset.

    Offsets are numbered in order of first appearance when pairs are visited row-major, the order the
    released checkpoints' ``attention_biases`` tables were trained with.
    """
    cells = list(itertools.product(range(window), range(window)))
    numbering: dict[tuple[int, int], int] = {}
    index = [
        numbering.setdefault((abs(a[0] - b[0]), abs(a[1] - b[1])), len(numbering))
        for a in cells
        for b in cells
    ]
    n = len(cells)
    return len(numbering), torch.tensor(index, dtype=torch.long).view(n, n)


class Attention(nn.Module):
    """Multi-head self-attention with a pre-norm and a learned bias per relative offset.

    ``qkv`` projects to per-head interleaved blocks ``[q_h, k_h, v_h]`` for each head h (not to three
    contiguous Q, K, V blocks as in SAM's ViT): see :meth:`qkv_rows`.
    """

    def __init__(self, dim: int, num_heads: int, window: int) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim {dim} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.scale = self.head_dim**-0.5
        self.norm = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        num_offsets, index = relative_offset_index(window)
        self.attention_biases = nn.Parameter(torch.zeros(num_heads, num_offsets))
        self.register_buffer("attention_bias_idxs", index, persistent=False)

    def qkv_rows(self, which: str) -> torch.Tensor:
        """Row indices of ``qkv.weight`` that produce the queries (``"q"``), keys or values."""
        part = "qkv".index(which)
        d = self.head_dim
        starts = torch.arange(self.num_heads) * 3 * d + part * d
        return (starts[:, None] + torch.arange(d)[None, :]).reshape(-1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, tokens, _ = x.shape
        qkv = self.qkv(self.norm(x)).view(batch, tokens, self.num_heads, 3 * self.head_dim)
        q, k, v = qkv.permute(0, 2, 1, 3).split(self.head_dim, dim=3)
        bias = self.attention_biases[:, self.attention_bias_idxs]
        attn = (q @ k.transpose(-2, -1)) * self.scale + bias
        out = attn.softmax(dim=-1) @ v
        return self.proj(out.transpose(1, 2).reshape(batch, tokens, -1))


class TinyViTBlock(nn.Module):
    """Windowed attention (zero-padded to whole windows), a depthwise 3x3 conv-BN, then an MLP."""

    def __init__(self, dim: int, resolution: int, num_heads: int, window: int, mlp_ratio: float) -> None:
        super().__init__()
        self.resolution = resolution
        self.window = window
        self.attn = Attention(dim, num_heads, window)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self.local_conv = Conv2dBN(dim, dim, 3, groups=dim)

    def _windowed_attention(self, x: torch.Tensor) -> torch.Tensor:
        batch, tokens, chans = x.shape
        res, win = self.resolution, self.window
        if res == win:
            return self.attn(x)
        pad = (win - res % win) % win
        grid = F.pad(x.view(batch, res, res, chans), (0, 0, 0, pad, 0, pad))
        n = (res + pad) // win
        windows = grid.view(batch, n, win, n, win, chans).transpose(2, 3).reshape(-1, win * win, chans)
        windows = self.attn(windows)
        grid = windows.view(batch, n, n, win, win, chans).transpose(2, 3).reshape(batch, n * win, n * win, chans)
        return grid[:, :res, :res].reshape(batch, tokens, chans)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self._windowed_attention(x)
        x = self.local_conv(tokens_to_map(x, self.resolution)).flatten(2).transpose(1, 2)
        return x + self.mlp(x)


class Mlp(nn.Module):
    """Pre-norm two-layer perceptron with GELU."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(self.norm(x))))


class Stage(nn.Module):
    """A stage: its blocks, then an optional :class:`PatchMerging` into the next stage."""

    def __init__(self, blocks: Sequence[nn.Module], downsample: nn.Module | None) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(blocks)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block(x)
        return x if self.downsample is None else self.downsample(x)


class TinyViT(nn.Module):
    """TinyViT encoder producing SAM image embeddings (B, 256, 64, 64)."""

    def __init__(self, config: TinyViTConfig) -> None:
        super().__init__()
        self.config = config
        self.img_size = config.img_size  # read by segment_anything's Sam.preprocess
        dims = config.embed_dims
        self.patch_embed = PatchEmbed(3, dims[0], config.stem)
        resolution = config.img_size // config.stem_stride
        self.layers = nn.ModuleList()
        last = len(dims) - 1
        for i, dim in enumerate(dims):
            if i == 0:
                blocks: list[nn.Module] = [MBConv(dim, config.mbconv_expand_ratio) for _ in range(config.depths[i])]
            else:
                blocks = [
                    TinyViTBlock(dim, resolution, config.num_heads[i], config.window_sizes[i], config.mlp_ratio)
                    for _ in range(config.depths[i])
                ]
            downsample = None
            if i < last:
                # The merge into the last stage keeps the resolution (the 64x64 grid SAM's decoder expects).
                stride = 1 if i + 1 == last else 2
                downsample = PatchMerging(resolution, dim, dims[i + 1], stride)
                resolution //= stride
            self.layers.append(Stage(blocks, downsample))
        self.grid = resolution
        if config.classifier_classes:
            self.norm_head = nn.LayerNorm(dims[-1])
            self.head = nn.Linear(dims[-1], config.classifier_classes)
        out = config.out_chans
        self.neck = nn.Sequential(
            nn.Conv2d(dims[-1], out, kernel_size=1, bias=False),
            LayerNorm2d(out),
            nn.Conv2d(out, out, kernel_size=3, padding=1, bias=False),
            LayerNorm2d(out),
        )

    def attention_layers(self) -> list[Attention]:
        """Every :class:`Attention` module, in forward order (where adapters attach)."""
        return [m for m in self.modules() if isinstance(m, Attention)]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(x)
        for stage in self.layers:
            x = stage(x)
        return self.neck(tokens_to_map(x, self.grid))
