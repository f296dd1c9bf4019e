"""Training of LoRA / Loose LoRA adapters on SAM-family models (torch).

Prompt simulation (:mod:`.prompts`), augmentation (:mod:`.augment`), focal + Dice loss (:mod:`.losses`),
training samples and examples (:mod:`.samples`), the loop with checkpoints, resume, early stopping and DDP
(:mod:`.loop`). Typical use::

    result = train(TrainConfig(data="ds/train", val="ds/val", out="adapter.safetensors", epochs=10))
"""

from gmiseg_edge.data.intensity import parse_window
from gmiseg_edge.train.augment import AugmentConfig, augment, flip, gaussian_noise, random_flip
from gmiseg_edge.train.callbacks import Callback, EpochRecord, StartInfo, StepInfo, TrainResult
from gmiseg_edge.train.checkpoint import CheckpointError, checkpoint_path
from gmiseg_edge.train.loop import TrainConfig, train
from gmiseg_edge.train.losses import dice_loss, focal_loss, segmentation_loss
from gmiseg_edge.train.prompts import (
    Prompt,
    PromptConfig,
    simulate_box,
    simulate_points,
    simulate_prompt,
    to_input_frame,
)
from gmiseg_edge.train.samples import (
    Example,
    TrainSample,
    load_samples,
    lowres_target,
    make_example,
)
from gmiseg_edge.train.segmenter import PromptedSam, decode, validation_dice

__all__ = [
    "AugmentConfig",
    "Callback",
    "CheckpointError",
    "EpochRecord",
    "Example",
    "Prompt",
    "PromptConfig",
    "PromptedSam",
    "StartInfo",
    "StepInfo",
    "TrainConfig",
    "TrainResult",
    "TrainSample",
    "augment",
    "checkpoint_path",
    "decode",
    "dice_loss",
    "flip",
    "focal_loss",
    "gaussian_noise",
    "load_samples",
    "lowres_target",
    "make_example",
    "parse_window",  # re-exported from gmiseg_edge.data.intensity
    "random_flip",
    "segmentation_loss",
    "simulate_box",
    "simulate_points",
    "simulate_prompt",
    "to_input_frame",
    "train",
    "validation_dice",
]
