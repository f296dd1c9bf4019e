"""Validate exported graphs in ONNX Runtime against the FP32 PyTorch model on real sample cases.

For each case: the same preprocessed input goes through the PyTorch encoder and the ONNX encoder; the same
box prompt (the label's extent) through both decoders; we record the max abs error of the embeddings, of
the low-res logits and of the IoU scores, and the Dice between the two thresholded full-size masks.

The decoder's prompt dimension K (DESIGN §5) is validated the same way: cases that share an image (the
instances of the nuclei case) are decoded again as one K-object call on the ONNX embedding, and each object is
compared with its single-prompt PyTorch reference (rows named ``<case> [K=k]``, under the same tolerance).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
from segment_anything.modeling import Sam

from gmiseg_edge.core.graph_io import DECODER_OUTPUTS, ENCODER_INPUT, DecoderInputs
from gmiseg_edge.core.prompts import box_from_mask, make_prompt
from gmiseg_edge.core.transforms import PreparedImage, PreprocessConfig, postprocess_logits
from gmiseg_edge.metrics import dice
from gmiseg_edge.models.reference import TorchReference
from gmiseg_edge.runtime.backends.onnxrt.session import cpu_session


@dataclass(frozen=True)
class Tolerance:
    """What a precision must meet against FP32 PyTorch (None: not checked)."""

    embedding_max_abs: float | None
    mask_dice_min: float


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


@dataclass(frozen=True)
class TorchReferenceCase:
    """The FP32 PyTorch outputs for one case, computed once and shared by every precision's validation."""

    name: str
    prepared: PreparedImage
    inputs: DecoderInputs  # the box prompt, with the PyTorch embedding
    logits: np.ndarray
    iou: np.ndarray
    mask: np.ndarray

    @property
    def embedding(self) -> np.ndarray:
        return self.inputs.image_embeddings


def torch_references(model: Sam, preprocess_config: PreprocessConfig, cases: Sequence) -> list[TorchReferenceCase]:
    """Run the PyTorch model on ``cases`` (objects with name/image/mask) with a box from each label's extent."""
    reference = TorchReference(model, preprocess_config)
    size = preprocess_config.input_size
    out = []
    encoded: dict[bytes, tuple] = {}  # cases on one image (the nuclei's instances) share its one encoder run
    for case in cases:
        key = _array_key(case.image)
        if key not in encoded:
            encoded[key] = reference.prepare(case.image)
        prepared, embedding = encoded[key]
        prompt = make_prompt(box=box_from_mask(case.mask), image_size=prepared.original_size)
        inputs = prompt.decoder_inputs(embedding, prepared.original_size, size)
        logits, iou = reference.decode(inputs)
        out.append(TorchReferenceCase(
            name=case.name, prepared=prepared, inputs=inputs, logits=logits, iou=iou,
            mask=postprocess_logits(logits[0, :1], prepared, size)[0] > 0,
        ))
    return out


def validate_graphs(
    references: Sequence[TorchReferenceCase],
    input_size: int,
    encoder_path: Path,
    decoder_path: Path,
    precision: str = "fp32",
    progress: Callable[[str], None] | None = None,
) -> ValidationReport:
    """Compare an exported graph pair in ONNX Runtime with the PyTorch outputs in ``references``."""
    encoder, decoder = cpu_session(encoder_path), cpu_session(decoder_path)
    report = ValidationReport(precision, TOLERANCES[precision])
    embeddings: dict[str, np.ndarray] = {}
    by_image: dict[bytes, np.ndarray] = {}  # one encoder run per distinct image
    for ref in references:
        key = _array_key(ref.prepared.tensor)
        if key not in by_image:
            (by_image[key],) = encoder.run(None, {ENCODER_INPUT: ref.prepared.tensor})
        emb = embeddings[ref.name] = by_image[key]
        logits, iou = decoder.run(list(DECODER_OUTPUTS), replace(ref.inputs, image_embeddings=emb).feed())
        agreement = _agreement(ref.name, ref, emb, logits[0], iou[0], input_size)
        report.cases.append(agreement)
        if progress is not None:
            progress(f"{precision} {ref.name}: embedding max abs {agreement.embedding_max_abs:.2e}, "
                     f"mask Dice {agreement.mask_dice:.4f}")
    for group in shared_image_groups(references):
        emb = embeddings[group[0].name]
        inputs = DecoderInputs.stack([replace(ref.inputs, image_embeddings=emb) for ref in group])
        logits, iou = decoder.run(list(DECODER_OUTPUTS), inputs.feed())
        for k, ref in enumerate(group):
            report.cases.append(_agreement(f"{ref.name} [K={len(group)}]", ref, emb, logits[k], iou[k], input_size))
    return report


def shared_image_groups(references: Sequence[TorchReferenceCase]) -> list[list[TorchReferenceCase]]:
    """References of one image with one decoder point count (what one K-object call can take), groups of 2+."""
    groups: dict[tuple[bytes, int], list[TorchReferenceCase]] = {}
    for ref in references:
        key = (_array_key(ref.prepared.tensor), ref.inputs.point_coords.shape[1])
        groups.setdefault(key, []).append(ref)
    return [group for group in groups.values() if len(group) > 1]


def _array_key(array: np.ndarray) -> bytes:
    """Equal for arrays of equal dtype, shape and values."""
    array = np.ascontiguousarray(array)
    return hashlib.sha256(f"{array.dtype.str}{array.shape}".encode() + array.tobytes()).digest()


def _agreement(name: str, ref: TorchReferenceCase, emb: np.ndarray, logits: np.ndarray, iou: np.ndarray,
               input_size: int) -> CaseAgreement:
    """One object's ONNX outputs (logits (4, 256, 256), IoU (4,)) against its PyTorch reference."""
    mask = postprocess_logits(logits[:1], ref.prepared, input_size)[0] > 0
    return CaseAgreement(
        case=name,
        embedding_max_abs=float(np.abs(emb - ref.embedding).max()),
        logits_max_abs=float(np.abs(logits - ref.logits[0]).max()),
        iou_max_abs=float(np.abs(iou - ref.iou[0]).max()),
        mask_dice=dice(mask, ref.mask),
        finite=bool(np.isfinite(emb).all() and np.isfinite(logits).all() and np.isfinite(iou).all()),
    )
