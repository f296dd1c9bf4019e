"""Decoding a candidate (step 6 of :mod:`.segmenter`): prompts from its prior, SAM's answer, fused with the prior
by the chosen :class:`.fusion.Fusion`.

The connected component of ``P >= 0.5`` holding most prior mass (or of ``P >= max(P) / 2`` when nothing reaches
0.5) gives the box (its extent) and a positive point (its most interior pixel); for the anatomy candidate a
negative point goes on the strongest look-alike outside the near region (``E * (1 - near) >= 0.5``) when there is
one; with ``mask_prompt`` the prior goes in as ``mask_input`` (logits ``MASK_LOGIT * (2 P - 1)`` on the
256 x 256 low-res padded frame). The single-mask output is taken.
"""

from __future__ import annotations

from dataclasses import replace

import cv2
import numpy as np

from gmiseg_edge.core.graph_io import LOW_RES
from gmiseg_edge.core.prompts import Prompt, make_prompt
from gmiseg_edge.core.transforms import postprocess_logits
from gmiseg_edge.runtime.predictor import EncodedImage, Predictor
from gmiseg_edge.runtime.support.appearance import likeness, sigmoid
from gmiseg_edge.runtime.support.fusion import Fusion
from gmiseg_edge.runtime.support.locate import Candidate, SupportMatch, best_component, reach
from gmiseg_edge.runtime.support.supports import grid_weights

MASK_LOGIT = 8.0  # the prior's logit scale as the decoder's mask_input


def interior_point(region: np.ndarray) -> tuple[int, int]:
    """(x, y) of the pixel of ``region`` farthest from its border."""
    distance = cv2.distanceTransform(np.pad(region, 1).astype(np.uint8), cv2.DIST_L2, 3)[1:-1, 1:-1]
    row, col = np.unravel_index(int(np.argmax(distance)), distance.shape)
    return int(col), int(row)


def candidate_prompt(query: EncodedImage, match: SupportMatch, candidate: Candidate, input_size: int,
                     mask_prompt: bool) -> tuple[Prompt, np.ndarray, np.ndarray]:
    """The decoder prompt of ``candidate`` (module docstring), its box (x0, y0, x1, y1) and the prior's component
    the box and the positive point come from."""
    prior = candidate.prior
    component = best_component(prior)
    rows, cols = np.nonzero(component)
    height, width = query.size
    box = np.array([cols.min(), rows.min(), min(cols.max() + 1, width), min(rows.max() + 1, height)], np.float32)
    points = [interior_point(component)]
    labels = [1]
    if candidate.kind == "anatomy" and match.anatomy is not None:
        core = match.anatomy >= 0.5
        radius, distance = reach(core, match.spacing)
        lookalike = match.appearance * (distance > 2 * radius)
        if lookalike.max() >= 0.5:
            row, col = np.unravel_index(int(np.argmax(lookalike)), lookalike.shape)
            points.append((int(col), int(row)))
            labels.append(0)
    mask_input = None
    if mask_prompt:
        low = grid_weights(prior, query.prepared, input_size, LOW_RES)
        mask_input = (MASK_LOGIT * (2 * low - 1)).astype(np.float32)
    prompt = make_prompt(np.asarray(points, np.float32), np.asarray(labels, np.float32), box, mask_input,
                         image_size=query.size)
    return prompt, box, component


def decode_candidate(predictor: Predictor, query: EncodedImage, match: SupportMatch, candidate: Candidate,
                     fusion: Fusion, mask_prompt: bool) -> Candidate:
    """Step 6 for one candidate: prompts from its prior, SAM's output, fused with the prior; with its likeness
    (:func:`.appearance.likeness`) for the choice."""
    prior = candidate.prior
    prompt, box, component = candidate_prompt(query, match, candidate, predictor.input_size, mask_prompt)
    if not fusion.decodes:  # no decoder
        probability = fusion.fuse(None, prior)
        return replace(candidate, **likeness(match.similarity, match.intensity, match.query_gray, probability,
                                             component, match.look_weights), probability=probability, box=box)
    low_res, iou = predictor.decode(query, prompt)
    sam = sigmoid(postprocess_logits(low_res[:1], query.prepared, predictor.input_size)[0])
    probability = fusion.fuse(sam, prior)
    return replace(candidate, **likeness(match.similarity, match.intensity, match.query_gray, probability, component,
                                         match.look_weights),
                   probability=probability.astype(np.float32), sam_probability=sam, iou=float(iou[0]), box=box)
