"""Training samples from dataset folders, and the model-ready examples made from them at each step.

A sample is one 2D image (uint8) and its bool mask: a 2D file pair, or one slice of a volume that holds
the label (every such slice along ``axis``). Intensities that are not uint8 are mapped to uint8 by a window
(:func:`gmiseg_edge.data.apply_window`: a CT preset, (low, high) or percentile scaling), slice by slice; uint8
images are kept.

An example is a sample after augmentation, with a simulated prompt, preprocessed by the model's own
:func:`gmiseg_edge.core.transforms.preprocess`, and its ground truth in the decoder's low-res frame.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from gmiseg_edge.core.transforms import PreprocessConfig, preprocess, resized_shape
from gmiseg_edge.data import DataError, Image2D, find_pairs, volume_slices
from gmiseg_edge.data.intensity import Window, to_uint8
from gmiseg_edge.data.support_sets import read_support_set
from gmiseg_edge.train.augment import AugmentConfig, augment
from gmiseg_edge.train.prompts import Prompt, PromptConfig, simulate_prompt, to_input_frame

LOW_RES = 256  # side of the mask decoder's low-res logits



@dataclass(frozen=True, eq=False)
class TrainSample:
    """One 2D training sample: ``image`` uint8 (H, W) or (H, W, 3), ``mask`` bool (H, W), from ``source``."""

    name: str
    image: np.ndarray
    mask: np.ndarray
    source: Path


@dataclass(frozen=True, eq=False)
class Example:
    """A model-ready example: ``image`` float32 (3, S, S), ``target`` float32 (1, 256, 256), ``prompt`` in
    the S x S frame, and the geometry to map the prediction back (``original_size``, ``resized_size``)."""

    image: np.ndarray
    target: np.ndarray
    prompt: Prompt
    original_size: tuple[int, int]
    resized_size: tuple[int, int]


def load_samples(
    folder: str | Path, *, window: Window = "percentile", axis: int = 2, label: int | None = None,
) -> list[TrainSample]:
    """Every usable 2D sample of a dataset folder (``images/`` + ``masks/`` or ``dataset.json``).

    ``label``: the label of interest (None: every non-zero label), unless a ``dataset.json`` entry names its
    own. Cases whose mask holds no foreground are skipped; a folder left with no sample is an error naming it.
    """
    folder = Path(folder)
    samples: list[TrainSample] = []
    empty: list[str] = []
    for pair in find_pairs(folder):
        image, labels = pair.read()
        value = pair.label if pair.label is not None else label
        mask = labels.array != 0 if value is None else labels.array == value
        if not mask.any():
            empty.append(labels.path.name)
            continue
        if isinstance(image, Image2D):
            pixels = to_uint8(image.array, window, image.path)
            samples.append(TrainSample(pair.name, pixels, mask, image.path))
            continue
        for piece in volume_slices(image, labels, value, mode="labelled", axis=axis):
            pixels = to_uint8(piece.image, window, image.path)
            samples.append(TrainSample(f"{pair.name}[{piece.axis}:{piece.index}]", pixels, piece.mask, image.path))
    if not samples:
        what = f"label {label}" if label is not None else "any label"
        raise DataError(
            f"no usable training sample: every mask is empty (no pixel of {what}): {', '.join(empty[:5])}"
            + (f" and {len(empty) - 5} more" if len(empty) > 5 else ""),
            folder,
        )
    return samples


def load_support_samples(
    folder: str | Path, *, window: Window = "percentile", axis: int = 2, label: int | None = None,
) -> list[TrainSample]:
    """A support set's 2D samples, read by :func:`gmiseg_edge.data.support_sets.read_support_set` (its rules for
    which label counts and for empty masks, the same as ``segment``'s, ``serve``'s and ``evaluate``'s): each 2D
    example, and every labelled slice along ``axis`` of each example volume. Unlike :func:`load_samples` (a
    training set, whose empty cases are skipped), an example without the structure is a DataError."""
    samples: list[TrainSample] = []
    for example in read_support_set(folder, label):
        for piece in example.slices(axis):
            pixels = to_uint8(piece.image, window, example.image.path)
            name = example.name if not example.is_volume else f"{example.name}[{piece.axis}:{piece.index}]"
            samples.append(TrainSample(name, pixels, piece.mask, example.image.path))
    return samples


def lowres_target(mask: np.ndarray, config: PreprocessConfig, grid: int = LOW_RES) -> np.ndarray:
    """The ground truth in the decoder's low-res frame: placed in the padded S x S input frame exactly as the
    image is (resized so its long side is S with the image's filter, padded bottom-right), then area-resized
    to ``grid`` x ``grid`` and thresholded at ½. Returns bool (grid, grid)."""
    mask = np.asarray(mask, dtype=bool)
    height, width = mask.shape
    size = config.input_size
    new_h, new_w = resized_shape(height, width, size)
    soft = mask.astype(np.float32)
    if config.normalization == "sam":  # the image is resized by Pillow's bilinear filter
        resized = np.asarray(Image.fromarray(soft, mode="F").resize((new_w, new_h), Image.BILINEAR))
    else:  # OpenCV's area filter, as the image
        resized = cv2.resize(soft, (new_w, new_h), interpolation=cv2.INTER_AREA)
    frame = np.zeros((size, size), dtype=np.float32)
    frame[:new_h, :new_w] = resized
    if size != grid:
        frame = cv2.resize(frame, (grid, grid), interpolation=cv2.INTER_AREA)
    return frame >= 0.5


def make_example(
    sample: TrainSample,
    config: PreprocessConfig,
    rng: np.random.Generator,
    augmentation: AugmentConfig,
    prompts: PromptConfig,
    prompt_mode: str | None = None,
) -> Example:
    """Augment ``sample`` (flips on image and mask together, noise), simulate a prompt from the augmented
    mask, preprocess the image as at inference, and place the ground truth in the low-res frame."""
    image, mask = augment(sample.image, sample.mask, rng, augmentation)
    prompt = simulate_prompt(mask, rng, prompts, mode=prompt_mode)
    prepared = preprocess(image, config, name=sample.name)
    return Example(
        image=prepared.tensor[0],
        target=lowres_target(mask, config)[None].astype(np.float32),
        prompt=to_input_frame(prompt, prepared.original_size, config.input_size),
        original_size=prepared.original_size,
        resized_size=prepared.resized_size,
    )
