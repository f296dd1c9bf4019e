"""Training losses on the decoder's low-res logits: sigmoid focal loss + soft Dice loss (GMISeg: 1 and 1)."""

from __future__ import annotations

import torch
from torch.nn import functional as F


def focal_loss(logits: torch.Tensor, target: torch.Tensor, alpha: float = 0.25, gamma: float = 2.0) -> torch.Tensor:
    """Sigmoid focal loss (Lin et al.), mean over all pixels.

    Per pixel: ``-α_t (1 - p_t)^γ log p_t`` with ``p = σ(logit)``, ``p_t = p`` on foreground and ``1 - p``
    on background, ``α_t = α`` on foreground and ``1 - α`` on background (``alpha < 0``: no weighting).
    """
    target = target.to(logits.dtype)
    prob = torch.sigmoid(logits)
    ce = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
    p_t = prob * target + (1 - prob) * (1 - target)
    loss = ce * (1 - p_t) ** gamma
    if alpha >= 0:
        loss = (alpha * target + (1 - alpha) * (1 - target)) * loss
    return loss.mean()


def dice_loss(logits: torch.Tensor, target: torch.Tensor, smooth: float = 1e-5) -> torch.Tensor:
    """Soft Dice loss ``1 - (2 Σ p·t + smooth) / (Σ p + Σ t + smooth)`` per sample (all dims but the first),
    averaged over the batch; ``p = σ(logit)``."""
    target = target.to(logits.dtype)
    prob = torch.sigmoid(logits).flatten(1)
    target = target.flatten(1)
    inter = (prob * target).sum(1)
    total = prob.sum(1) + target.sum(1)
    return (1 - (2 * inter + smooth) / (total + smooth)).mean()


def segmentation_loss(
    logits: torch.Tensor, target: torch.Tensor, focal_weight: float = 1.0, dice_weight: float = 1.0
) -> torch.Tensor:
    """``focal_weight · focal + dice_weight · Dice`` on (B, 1, h, w) logits and a binary target of that shape."""
    if logits.shape != target.shape:
        raise ValueError(f"logits {tuple(logits.shape)} and target {tuple(target.shape)} differ in shape")
    return focal_weight * focal_loss(logits, target) + dice_weight * dice_loss(logits, target)
