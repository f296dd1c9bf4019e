"""Which candidate a support answers with (step 7 of :mod:`.segmenter`).

The choice strategies by name (:data:`CHOICES`):

- ``"auto"``: the anatomy candidate is decoded first; only when it clearly does not look like the structure (its
  mean ``z`` *and*, when informative, its grey-level likeness below ``UNLIKE``: no more like the structure than
  like its surroundings) is the appearance candidate decoded, and it is taken when its likeness exceeds the
  anatomy one's by ``MARGIN``. A look-alike organ does not displace an anatomy candidate that looks right; a
  lesion registered onto healthy tissue does.
- ``"local"``: as ``"auto"``, but the anatomy candidate is also kept when it stands out from its own
  surroundings on the query (:func:`stands_out`).
- ``"weighed"`` (not the default; BENCHMARKS.md, issue 24): the embedding z and the grey-level z are weighed by
  how well each splits *the query* into a compact high region and a low background
  (:func:`.appearance.separation`; on the supports both look fine, leave-one-slice-out AUC 0.94-1.00, so only
  the query can say which to trust). E is made from the map that separates better; each map that separates at
  all gives an appearance candidate; a candidate's likeness is the weighed sum of its two looks (weak separation
  shrinks it towards 0, undecided); the anatomy candidate is reconsidered when that is below ``UNLIKE``
  (:func:`looks_unlike_weighed`), and the likeliest appearance candidate taken when it exceeds it by ``MARGIN``.
- ``"anatomy"`` / ``"appearance"``: always that candidate (for measurement; ``"appearance"`` with its own
  presence and weight).

The support's presence and weight stay the first candidate's: the appearance candidate is the best of all
regions, so its own presence is biased high (it would outvote supports whose anatomy holds, and find look-alikes
on queries without the structure).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

import cv2
import numpy as np

from gmiseg_edge.runtime.support.appearance import informative
from gmiseg_edge.runtime.support.locate import Candidate, SupportMatch
from gmiseg_edge.runtime.support.supports import RING_CELLS

LOCAL_CONTRAST = 0.5  # choice="local": z over the anatomy candidate minus z over its ring on the query, at least
# half the support's own structure-vs-ring difference (1 in z units), keeps the anatomy candidate
UNLIKE = 0.0  # the anatomy candidate's mask looks no more like the structure than like its surroundings ...
MARGIN = 0.25  # ... and the appearance candidate's looks more like it by a clear margin: take the appearance one


def looks_unlike(match: SupportMatch, candidate: Candidate) -> bool:
    """Every informative signal puts the decoded candidate below UNLIKE: its embedding z, and its grey-level
    likeness when the support's grey levels are informative (a look-alike organ's position can make z alone
    negative on the right structure; grey levels then still say it is right)."""
    embedding, grey = candidate.looks
    return embedding < UNLIKE and not (informative(match.intensity) and np.isfinite(grey) and grey >= UNLIKE)


def looks_unlike_weighed(match: SupportMatch, candidate: Candidate) -> bool:
    """``choice="weighed"``: the candidate's weighed likeness (:func:`.appearance.likeness` with the match's
    ``look_weights``) is below UNLIKE; :func:`looks_unlike` for a match made without them."""
    if match.look_weights is None or sum(match.look_weights) <= 0:
        return looks_unlike(match, candidate)
    return candidate.likeness < UNLIKE


def stands_out(match: SupportMatch, candidate: Candidate) -> bool:
    """``choice="local"``: the decoded candidate stands out from its own surroundings *on the query* in the
    support's appearance direction: mean z over it minus mean z over its ring (RING_CELLS embedding cells wide)
    is at least LOCAL_CONTRAST. Unlike the likeness, this needs no threshold carried over from the support's
    image, so a shift of every score between two patients' scans does not move it."""
    if match.similarity is None or candidate.probability is None:
        return False
    region = candidate.probability > 0.5
    if not region.any():
        return False
    cell = max(region.shape) / 64
    size = 2 * max(1, round(RING_CELLS * cell)) + 1
    ring = (cv2.dilate(region.astype(np.uint8), np.ones((size, size), np.uint8)) > 0) & ~region
    if not ring.any():
        return False
    return float(match.similarity[region].mean() - match.similarity[ring].mean()) >= LOCAL_CONTRAST


def _unlike_and_plain(match: SupportMatch, candidate: Candidate) -> bool:
    return looks_unlike(match, candidate) and not stands_out(match, candidate)


@dataclass(frozen=True)
class Choice:
    """A choice strategy. ``appearance_candidate``: a registered support also makes its appearance candidate;
    ``appearance_first``: that candidate comes first (is taken); ``reconsider(match, decoded anatomy candidate)``:
    decode the appearance candidates too (None: never); ``weighed``: E and the likeness weigh the embedding and
    the grey levels by how well each separates on the query (:func:`.appearance.weighed_look`), and each map
    gives an appearance candidate."""

    name: str
    appearance_candidate: bool = True
    appearance_first: bool = False
    reconsider: Callable[[SupportMatch, Candidate], bool] | None = None
    weighed: bool = False


#: the choice strategies by name
CHOICES: dict[str, Choice] = {
    "auto": Choice("auto", reconsider=looks_unlike),
    "local": Choice("local", reconsider=_unlike_and_plain),
    "weighed": Choice("weighed", reconsider=looks_unlike_weighed, weighed=True),
    "anatomy": Choice("anatomy", appearance_candidate=False),
    "appearance": Choice("appearance", appearance_first=True),
}


def choose(match: SupportMatch, choice: Choice, decode: Callable[[Candidate], Candidate]) -> SupportMatch:
    """Steps 6-7 for one support: decode its first candidate; decode the appearance candidates too only when
    ``choice`` reconsiders the first, and take the likeliest when its likeness exceeds the first's by
    ``MARGIN`` (it then comes first among them)."""
    first = decode(match.candidates[0])
    decoded = [first]
    chosen = first
    if (choice.reconsider is not None and first.kind == "anatomy" and len(match.candidates) > 1
            and choice.reconsider(match, first)):
        others = [decode(candidate) for candidate in match.candidates[1:]]
        best = max(range(len(others)), key=lambda i: others[i].likeness)
        decoded.append(others.pop(best))
        decoded += others
        if decoded[1].likeness - first.likeness >= MARGIN:
            chosen = decoded[1]
    decoded += list(match.candidates[len(decoded):])
    # presence and weight stay the first candidate's (module docstring)
    return replace(match, prior=chosen.prior, probability=chosen.probability,
                   sam_probability=chosen.sam_probability, iou=chosen.iou, box=chosen.box, chosen=chosen.kind,
                   candidates=tuple(decoded))
