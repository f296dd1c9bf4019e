"""Validate exported graphs in ONNX Runtime against the FP32 PyTorch model on real sample cases.

For each case: the same preprocessed input goes through the PyTorch encoder and the ONNX encoder; the same
box prompt (the label's extent) through both decoders; we record the max abs error of the embeddings, of
the low-res logits and of the IoU scores, and the Dice between the two thresholded full-size masks.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch
from segment_anything.modeling import Sam

from gmiseg_edge.export.graphs import DecoderGraph
from gmiseg_edge.metrics import dice
from gmiseg_edge.runtime.transforms import (
    PreparedImage,
    PreprocessConfig,
    postprocess_logits,
    preprocess,
)


@dataclass(frozen=True)
class Tolerance:
    """What a precision must meet against FP32 PyTorch (None: not checked)."""

    embedding_max_abs: float | None
    mask_dice_min: float


NO_MASK = np.zeros((1, 1, 256, 256), np.float32)
TOLERANCES = {
    "fp32": Tolerance(embedding_max_abs=1e-3, mask_dice_min=0.999),
    "fp16": Tolerance(embedding_max_abs=None, mask_dice_min=0.99),
    "int8": Tolerance(embedding_max_abs=None, mask_dice_min=0.97),
}


@dataclass
class CaseAgreement:
    """ONNX Runtime vs PyTorch on one case."""

    case: str
    embedding_max_abs: float
    logits_max_abs: float
    iou_max_abs: float
    mask_dice: float
    finite: bool


@dataclass
class ValidationReport:
    """All cases of one precision, and whether they meet its tolerance."""

    precision: str
    tolerance: Tolerance
    cases: list[CaseAgreement] = field(default_factory=list)

    @property
    def embedding_max_abs(self) -> float:
        return max(c.embedding_max_abs for c in self.cases)

    @property
    def mask_dice_min(self) -> float:
        return min(c.mask_dice for c in self.cases)

    def failures(self) -> list[str]:
        """Human-readable reasons this report misses its tolerance (empty when it passes)."""
        out = []
        bad = [c.case for c in self.cases if not c.finite]
        if bad:
            out.append(f"non-finite outputs (inf or NaN) on {', '.join(bad)}")
        limit = self.tolerance.embedding_max_abs
        if limit is not None and self.embedding_max_abs > limit:
            out.append(f"embedding max abs error {self.embedding_max_abs:.3g} > {limit:g} "
                       f"(by {self.embedding_max_abs - limit:.3g})")
        if self.mask_dice_min < self.tolerance.mask_dice_min:
            worst = min(self.cases, key=lambda c: c.mask_dice)
            out.append(f"mask Dice {worst.mask_dice:.4f} on {worst.case} < {self.tolerance.mask_dice_min} "
                       f"(short by {self.tolerance.mask_dice_min - worst.mask_dice:.4f})")
        return out

    @property
    def passed(self) -> bool:
        return not self.failures()

    def to_dict(self) -> dict:
        return {
            "passed": self.passed,
            "failures": self.failures(),
            "reference": "PyTorch FP32, box prompt from each sample label's extent",
            "tolerance": asdict(self.tolerance),
            "embedding_max_abs": self.embedding_max_abs,
            "logits_max_abs": max(c.logits_max_abs for c in self.cases),
            "mask_dice_min": self.mask_dice_min,
            "cases": [asdict(c) for c in self.cases],
        }


def cpu_session(path: Path, threads: int = 0) -> ort.InferenceSession:
    """An ONNX Runtime CPU session with full graph optimisation."""
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if threads:
        options.intra_op_num_threads = threads
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


@dataclass(frozen=True)
class TorchReference:
    """The FP32 PyTorch outputs for one case, computed once and shared by every precision's validation."""

    name: str
    prepared: PreparedImage
    coords: np.ndarray
    labels: np.ndarray
    embedding: np.ndarray
    logits: np.ndarray
    iou: np.ndarray
    mask: np.ndarray


def torch_references(model: Sam, preprocess_config: PreprocessConfig, cases: Sequence) -> list[TorchReference]:
    """Run the PyTorch model on ``cases`` (objects with name/image/mask) with a box from each label's extent."""
    from gmiseg_edge.runtime.prompts import box_from_mask, make_prompt

    decoder = DecoderGraph(model).eval()
    size = preprocess_config.input_size
    out = []
    for case in cases:
        prepared = preprocess(case.image, preprocess_config)
        prompt = make_prompt(box=box_from_mask(case.mask), image_size=prepared.original_size)
        coords, labels = prompt.decoder_points(prepared.original_size, size)
        with torch.inference_mode():
            embedding = model.image_encoder(torch.from_numpy(prepared.tensor))
            logits, iou = decoder(embedding, torch.from_numpy(coords), torch.from_numpy(labels),
                                  torch.from_numpy(NO_MASK), torch.zeros(1))
        out.append(TorchReference(
            name=case.name, prepared=prepared, coords=coords, labels=labels,
            embedding=embedding.numpy(), logits=logits.numpy(), iou=iou.numpy(),
            mask=postprocess_logits(logits[0, :1].numpy(), prepared, size)[0] > 0,
        ))
    return out


def validate_graphs(
    references: Sequence[TorchReference],
    input_size: int,
    encoder_path: Path,
    decoder_path: Path,
    precision: str = "fp32",
    progress: Callable[[str], None] | None = None,
) -> ValidationReport:
    """Compare an exported graph pair in ONNX Runtime with the PyTorch outputs in ``references``."""
    encoder, decoder = cpu_session(encoder_path), cpu_session(decoder_path)
    report = ValidationReport(precision, TOLERANCES[precision])
    for ref in references:
        (emb,) = encoder.run(None, {"image": ref.prepared.tensor})
        logits, iou = decoder.run(None, {
            "image_embeddings": emb, "point_coords": ref.coords, "point_labels": ref.labels,
            "mask_input": NO_MASK, "has_mask_input": np.zeros(1, np.float32),
        })
        mask = postprocess_logits(logits[0, :1], ref.prepared, input_size)[0] > 0
        agreement = CaseAgreement(
            case=ref.name,
            embedding_max_abs=float(np.abs(emb - ref.embedding).max()),
            logits_max_abs=float(np.abs(logits - ref.logits).max()),
            iou_max_abs=float(np.abs(iou - ref.iou).max()),
            mask_dice=dice(mask, ref.mask),
            finite=bool(np.isfinite(emb).all() and np.isfinite(logits).all() and np.isfinite(iou).all()),
        )
        report.cases.append(agreement)
        if progress is not None:
            progress(f"{precision} {ref.name}: embedding max abs {agreement.embedding_max_abs:.2e}, "
                     f"mask Dice {agreement.mask_dice:.4f}")
    return report
