"""Training augmentation: random flips of image and mask together, Gaussian intensity noise (seeded).

Augmentation happens on the image as the user gives it (uint8), before the model's own preprocessing, so
a training input is preprocessed exactly like an inference input.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class AugmentConfig:
    """Probabilities of a horizontal and a vertical flip; probability and std of Gaussian noise
    (std in intensity units of the image, e.g. 0..255 for uint8)."""

    hflip: float = 0.5
    vflip: float = 0.5
    noise: float = 0.5
    noise_std: float = 5.0

    def __post_init__(self) -> None:
        for name in ("hflip", "vflip", "noise"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} probability must be in [0, 1], got {getattr(self, name)}")
        if self.noise_std < 0:
            raise ValueError(f"noise_std must be >= 0, got {self.noise_std}")

    @classmethod
    def none(cls) -> AugmentConfig:
        """No augmentation at all."""
        return cls(hflip=0.0, vflip=0.0, noise=0.0, noise_std=0.0)


def flip(image: np.ndarray, mask: np.ndarray, horizontal: bool, vertical: bool) -> tuple[np.ndarray, np.ndarray]:
    """Flip an (H, W[, C]) image and its (H, W) mask the same way (left-right and/or up-down)."""
    if image.shape[:2] != mask.shape[:2]:
        raise ValueError(f"image shape {image.shape} and mask shape {mask.shape} differ")
    if horizontal:
        image, mask = image[:, ::-1], mask[:, ::-1]
    if vertical:
        image, mask = image[::-1], mask[::-1]
    return np.ascontiguousarray(image), np.ascontiguousarray(mask)


def random_flip(
    image: np.ndarray, mask: np.ndarray, rng: np.random.Generator, hflip: float = 0.5, vflip: float = 0.5
) -> tuple[np.ndarray, np.ndarray, tuple[bool, bool]]:
    """Flip image and mask together, left-right with probability ``hflip`` and up-down with ``vflip``.

    Returns the flipped pair and which flips were applied (horizontal, vertical).
    """
    horizontal, vertical = bool(rng.random() < hflip), bool(rng.random() < vflip)
    image, mask = flip(image, mask, horizontal, vertical)
    return image, mask, (horizontal, vertical)


def gaussian_noise(image: np.ndarray, rng: np.random.Generator, std: float) -> np.ndarray:
    """Add N(0, std²) noise; a uint8 image stays uint8 (rounded, clipped to [0, 255]), a float one float."""
    noise = rng.normal(0.0, std, size=image.shape)
    if image.dtype == np.uint8:
        return np.clip(np.rint(image.astype(np.float64) + noise), 0, 255).astype(np.uint8)
    if not np.issubdtype(image.dtype, np.floating):
        raise ValueError(f"gaussian_noise needs a uint8 or float image, got {image.dtype}")
    return (image + noise).astype(image.dtype)


def augment(
    image: np.ndarray, mask: np.ndarray, rng: np.random.Generator, config: AugmentConfig
) -> tuple[np.ndarray, np.ndarray]:
    """Random flips (image and mask together), then Gaussian noise on the image, as ``config`` says."""
    image, mask, _ = random_flip(image, mask, rng, config.hflip, config.vflip)
    if config.noise_std > 0 and rng.random() < config.noise:
        image = gaussian_noise(image, rng, config.noise_std)
    return image, mask
