"""Synthetic scenes shared by the support-set tests."""

from __future__ import annotations

import cv2
import numpy as np


def disc_scene(centre: tuple[int, int], seed: int, texture: float) -> tuple[np.ndarray, np.ndarray]:
    """A 96 x 96 noisy phantom (grey 70, texture ``texture``) with a bright disc (grey 190) at ``centre``."""
    rng = np.random.default_rng(seed)
    image = cv2.GaussianBlur(rng.normal(70, texture, (96, 96)).astype(np.float32), (0, 0), 1.5)
    mask = np.zeros((96, 96), np.uint8)
    cv2.circle(mask, centre, 11, 1, -1)
    image[mask > 0] = 190 + rng.normal(0, 6, int(mask.sum()))
    return np.clip(image, 0, 255).astype(np.uint8), mask.astype(bool)
