"""Accuracy of an exported model folder on labelled 2D cases (DESIGN §8): Dice, Jaccard, ASD and HD95 (mm), and
NSD (normalised surface Dice: the share of both surfaces within ``nsd_tolerance_mm`` of the other, 2 mm by
default as in the CVPR 2024 "MedSAM on laptop" challenge).

Prompts follow the paper, seeded per case (``numpy.random.default_rng([seed, case index])``, so a case gets
the same prompt whatever else is evaluated): ``box`` the mask's extent pushed out by 0..``box_offset`` pixels
per side; ``points`` ``n_points`` random foreground pixels; ``support`` no prompt at all, the runtime's
:class:`~gmiseg_edge.runtime.SupportSetSegmenter` with up to ``supports`` other cases of the same dataset and
label as examples (leave-one-case-out: never the query's own scan; for instance masks, other instances);
``propagate`` whole volumes instead of 2D cases: a seeded box on each structure's slice of largest area,
carried through the volume and scored in 3D (:mod:`gmiseg_edge.jobs.evaluate_volumes`).

A folder of challenge cases (``.npz`` with ``gts``, :mod:`gmiseg_edge.data.challenge`) is evaluated as the
challenge does (``box`` prompts only): the case's own boxes (or, without them, each label's extent), box n
against label n, one row per case and label, 2D cases at 1 mm spacing, 3D ones at the case's ``spacing``.

Instance maps (the nuclei): each instance is one case with its own seeded prompt, scored against its own mask
(the per-instance rows; the dataset's mean is over instances). The instances of one image are decoded together
in batched decoder calls (``Predictor.predict_objects``: the same masks as one call each), and their label map
is also scored as one mask against the union of the instances: one ``<scan>/all_instances`` row per image in
the dataset ``<dataset> union``, which shows what the per-instance mean cannot (background painted between
objects, or objects missed). Union rows are kept out of the ``all`` summary, which stays per structure.

Spacing comes from the file header (slice spacing for volumes; 1 mm for microscopy without one). Statistics
per dataset and overall are :func:`gmiseg_edge.metrics.summarise` (finite values; infinite ones counted).
``reference="torch"`` adds each case's agreement (Dice) with the FP32 PyTorch model given the same prompt.
Torch-free unless the reference is asked for.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from gmiseg_edge.core.files import atomic_path
from gmiseg_edge.core.manifest import Manifest
from gmiseg_edge.core.prompts import simulate_box, simulate_points
from gmiseg_edge.data import to_uint8
from gmiseg_edge.data.challenge import CHALLENGE_SUFFIX, read_challenge_case
from gmiseg_edge.data.samples import load_sample_cases
from gmiseg_edge.data.support_sets import read_support_set
from gmiseg_edge.jobs.challenge import boxes_from_labels, segment_case
from gmiseg_edge.jobs.evaluate_volumes import evaluate_propagation, folder_volume_cases, sample_volume_cases
from gmiseg_edge.metrics import (
    SegmentationScores,
    dice,
    normalized_surface_dice,
    score,
    summarise,
    summarise_values,
)
from gmiseg_edge.runtime import EmbeddingCache, check_precision, load
from gmiseg_edge.runtime.support.segmenter import SupportSetSegmenter

PROMPT_MODES = ("box", "points", "support", "propagate")
REFERENCES = ("torch",)
ALL = "all"


@dataclass(frozen=True, eq=False)
class EvalCase:
    """One 2D case: uint8 image, bool mask, (row, col) spacing in mm, its dataset and support group."""

    name: str
    image: np.ndarray
    mask: np.ndarray
    spacing: tuple[float, float]
    dataset: str
    group: str  # cases that may support each other (same dataset and label)
    scan: str  # the source scan: leave-one-case-out never uses the query's own scan
    instance: bool = False  # one instance of an instance map (supports are other instances of the scan)


@dataclass(frozen=True)
class EvalConfig:
    """What to evaluate and how (see the module docstring)."""

    model_dir: str | Path
    data: str | Path = "samples"
    prompt: str = "box"
    backend: str = "auto"
    precision: str = "fp32"
    seed: int = 0
    threads: int | None = None
    reference: str | None = None
    n_points: int = 3
    box_offset: int = 5
    supports: int = 3
    window: str | tuple[float, float] = "percentile"
    cases: tuple[str, ...] | None = None  # keep only these scans (sample case names or dataset case names)
    nsd_tolerance_mm: float = 2.0
    task: str | None = None  # decode with this task decoder of the folder (DESIGN §11)
    cache_dir: str | Path | None = None  # a disk embedding cache folder (shared with `segment --cache-dir`)

    def __post_init__(self) -> None:
        if self.task is not None and self.reference is not None:
            raise ValueError("--reference torch checks the base decoder against PyTorch; a task decoder was "
                             "validated when it was added: evaluate it without --reference")
        if self.prompt not in PROMPT_MODES:
            raise ValueError(f"prompt must be one of {', '.join(PROMPT_MODES)}, got {self.prompt!r}")
        if self.reference is not None and self.reference not in REFERENCES:
            raise ValueError(f"reference must be one of {', '.join(REFERENCES)}, got {self.reference!r}")
        if self.n_points < 1 or self.box_offset < 0 or self.supports < 1:
            raise ValueError("need n_points >= 1, box_offset >= 0 and supports >= 1")
        if not (math.isfinite(self.nsd_tolerance_mm) and self.nsd_tolerance_mm >= 0):
            raise ValueError(f"NSD tolerance must be >= 0 mm, got {self.nsd_tolerance_mm}")


@dataclass
class CaseResult:
    """One case's scores (None when it could not be evaluated, with ``note``) and its prompt."""

    name: str
    dataset: str
    prompt: str
    prompt_detail: str
    scores: SegmentationScores | None
    agreement: float | None = None
    note: str = ""
    union: bool = False  # the label map of an image's instances scored as one mask (not in the "all" summary)
    nsd: float | None = None  # at the configuration's nsd_tolerance_mm

    def row(self) -> dict[str, Any]:
        values = self.scores.as_dict() if self.scores else dict.fromkeys(("dice", "jaccard", "asd", "hd95"))
        return {"case": self.name, "dataset": self.dataset, "prompt": self.prompt, **values, "nsd": self.nsd,
                "agreement_torch": self.agreement, "prompt_detail": self.prompt_detail, "note": self.note}


@dataclass
class EvalResult:
    """Per-case rows and per-dataset (plus ``all``) summaries."""

    model: str
    backend: str
    config: dict[str, Any]
    cases: list[CaseResult]
    summary: dict[str, dict[str, Any]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"model": self.model, "backend": self.backend, "config": self.config,
                "cases": [_jsonable(c.row()) for c in self.cases], "summary": _jsonable(self.summary)}

    def rows(self) -> list[dict[str, Any]]:
        return [c.row() for c in self.cases]

    def write_csv(self, path: str | Path) -> Path:
        return write_csv_rows(path, self.rows())


def write_csv_rows(path: str | Path, rows: list[dict[str, Any]]) -> Path:
    """Per-case rows as CSV, atomically."""
    path = Path(path)
    with atomic_path(path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]) if rows else ["case"])
        writer.writeheader()
        writer.writerows(rows)
    return path


def _jsonable(value: Any) -> Any:
    """Non-finite floats as strings ("inf", "nan") so the JSON is standard."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return value


# --------------------------------------------------------------------------- cases


def sample_eval_cases() -> list[EvalCase]:
    """The shipped sample cases, nuclei one case per instance (``load_sample_cases(instances=True)``)."""
    cases = []
    for c in load_sample_cases(instances=True):
        dataset = f"{c.source.split(' (')[0].split('==')[0]} {c.modality}"
        instance = c.label.startswith("instance_")
        group = f"{dataset}/{'instances' if instance else c.label}"
        cases.append(EvalCase(c.name, c.image, c.mask, c.spacing, dataset, group, c.case, instance))
    return cases


def folder_eval_cases(root: str | Path, window: str | tuple[float, float] = "percentile") -> list[EvalCase]:
    """A dataset folder, read as a support set (:func:`gmiseg_edge.data.support_sets.read_support_set`: its rules
    for which label counts and for empty masks, since every case may support the others): 2D pairs as they are,
    volumes by their largest labelled slice."""
    cases = []
    dataset = Path(root).name
    for example in read_support_set(root):
        piece = example.slices(mode="largest")[0]
        pixels = to_uint8(piece.image, window, example.image.path)
        cases.append(EvalCase(example.name, pixels, piece.mask.astype(bool), piece.spacing, dataset, dataset,
                              example.name))
    return cases


def load_eval_cases(data: str | Path, window: str | tuple[float, float] = "percentile") -> list[EvalCase]:
    """``"samples"`` for the shipped cases, else a dataset folder or ``dataset.json``."""
    return sample_eval_cases() if str(data) == "samples" else folder_eval_cases(data, window)


# --------------------------------------------------------------------------- prompts


def case_prompt(case: EvalCase, index: int, config: EvalConfig) -> dict[str, np.ndarray]:
    """The seeded box or points prompt of case number ``index`` (keyword arguments of ``Predictor.predict``)."""
    rng = np.random.default_rng([config.seed, index])
    if config.prompt == "box":
        return {"box": simulate_box(case.mask, rng, config.box_offset)}
    points = simulate_points(case.mask, config.n_points, rng)
    return {"points": points, "labels": np.ones(len(points), np.float32)}


def support_cases(cases: list[EvalCase], index: int, config: EvalConfig) -> list[EvalCase]:
    """Up to ``config.supports`` other cases of the query's group, never from its own scan (seeded choice)."""
    query = cases[index]
    pool = [c for i, c in enumerate(cases) if i != index and c.group == query.group
            and (c.instance or c.scan != query.scan)]
    if len(pool) <= config.supports:
        return pool
    rng = np.random.default_rng([config.seed, index, 1])
    return [pool[i] for i in sorted(rng.choice(len(pool), config.supports, replace=False))]


def _describe(prompt: dict[str, np.ndarray]) -> str:
    return "; ".join(f"{k}={np.round(v, 1).tolist()}" for k, v in prompt.items() if k != "labels")


def _segment(predictor, case: EvalCase, prompt: dict[str, np.ndarray] | None, supports: list[EvalCase]):
    if prompt is not None:
        return predictor.predict(case.image, **prompt).mask

    segmenter = SupportSetSegmenter(predictor)
    for support in supports:  # each at its own pixel size: registration and the size rules work in mm
        segmenter.add_support(support.image, support.mask, name=support.name, spacing=support.spacing)
    return segmenter.segment(case.image, spacing=case.spacing).mask


def _instance_groups(cases: list[EvalCase]) -> dict[str, list[int]]:
    """Indices of the instance cases of each scan (an image's instances)."""
    groups: dict[str, list[int]] = {}
    for index, case in enumerate(cases):
        if case.instance:
            groups.setdefault(case.scan, []).append(index)
    return groups


def _decode_instances(predictor, cases: list[EvalCase], config: EvalConfig) -> dict[int, np.ndarray]:
    """Each instance case's mask, an image's instances decoded together (their seeded prompts, one each)."""
    masks = {}
    for indices in _instance_groups(cases).values():
        prompts = [case_prompt(cases[i], i, config) for i in indices]
        objects = predictor.predict_objects(
            cases[indices[0]].image, boxes=[p.get("box") for p in prompts],
            points=[p.get("points") for p in prompts], labels=[p.get("labels") for p in prompts])
        masks.update((i, prediction.mask) for i, prediction in zip(indices, objects, strict=True))
    return masks


def _union_rows(cases: list[EvalCase], masks: dict[int, np.ndarray], config: EvalConfig) -> list[CaseResult]:
    """One row per image of instances: the predicted instances' union against the true instances' union."""
    rows = []
    for scan, indices in _instance_groups(cases).items():
        if not all(i in masks for i in indices):
            continue
        first = cases[indices[0]]
        predicted = np.logical_or.reduce([masks[i] for i in indices])
        truth = np.logical_or.reduce([cases[i].mask for i in indices])
        rows.append(CaseResult(f"{scan}/all_instances", f"{first.dataset} union", config.prompt,
                               f"union of the {len(indices)} instances' masks above",
                               score(predicted, truth, first.spacing), union=True,
                               nsd=normalized_surface_dice(predicted, truth, first.spacing, config.nsd_tolerance_mm)))
    return rows


# --------------------------------------------------------------------------- evaluation


def _evaluate_volumes(config: EvalConfig, progress: Callable[[str], None] | None,
                      cache: EmbeddingCache | None) -> EvalResult:
    cases = list(sample_volume_cases() if str(config.data) == "samples"
                 else folder_volume_cases(config.data, config.window))
    if config.cases is not None:
        cases = [c for c in cases if c.name.split("/")[0] in config.cases]
    if not cases:
        raise ValueError(f"{config.data}: no volumes to propagate through")
    predictor = _open(config, cache)
    scored = evaluate_propagation(predictor, cases, config.seed, config.box_offset, config.nsd_tolerance_mm,
                                  progress=progress)
    results = [CaseResult(s.name, s.dataset, "propagate", f"seed slice {s.seed}, box {np.round(s.box, 1).tolist()}",
                          s.scores, note=s.summary, nsd=s.nsd) for s in scored]
    return _result(config, predictor, results)


def is_challenge_folder(data: str | Path) -> bool:
    """A folder of challenge ``.npz`` cases (and no ``images/`` or ``dataset.json``), or one ``.npz`` case."""
    path = Path(data)
    if path.is_file():
        return path.name.endswith(CHALLENGE_SUFFIX)
    return (path.is_dir() and not (path / "images").is_dir() and not (path / "dataset.json").is_file()
            and any(p.name.endswith(CHALLENGE_SUFFIX) for p in path.iterdir()))


def _evaluate_challenge(config: EvalConfig, progress: Callable[[str], None] | None,
                        cache: EmbeddingCache | None) -> EvalResult:
    if config.prompt != "box":
        raise ValueError(f"{config.data}: challenge cases are evaluated with their boxes (--prompt box), "
                         f"not {config.prompt!r}")
    root = Path(config.data)
    paths = [root] if root.is_file() else sorted(p for p in root.iterdir() if p.name.endswith(CHALLENGE_SUFFIX))
    cases = [read_challenge_case(p) for p in paths]
    if config.cases is not None:
        cases = [c for c in cases if c.name in config.cases]
    if not cases:
        raise ValueError(f"{config.data}: no challenge cases to evaluate")
    predictor = _open(config, cache)
    results = []
    for case in cases:
        if case.gts is None:
            raise ValueError(f"{case.path}: no 'gts' (ground truth) to evaluate against")
        boxes = case.boxes if case.boxes is not None else boxes_from_labels(case.gts)
        segs = segment_case(predictor, case, boxes)
        kind = "3D" if case.is_3d else "2D"
        for n in range(1, max(len(boxes), int(case.gts.max(initial=0))) + 1):
            truth, mask = case.gts == n, segs == n
            detail = f"box {np.round(boxes[n - 1], 1).tolist()}" if n <= len(boxes) else "no box"
            results.append(CaseResult(f"{case.name}/{n}", f"challenge {kind}", "box", detail,
                                      score(mask, truth, case.spacing),
                                      nsd=normalized_surface_dice(mask, truth, case.spacing, config.nsd_tolerance_mm)))
        if progress is not None:
            progress(case.name)
    return _result(config, predictor, results)


def _result(config: EvalConfig, predictor, results: list[CaseResult]) -> EvalResult:
    summary = {}
    for dataset in [*dict.fromkeys(r.dataset for r in results), ALL]:
        scored = [r.scores for r in results if r.scores is not None
                  and (r.dataset == dataset or (dataset == ALL and not r.union))]
        if scored:
            nsd = [r.nsd for r in results if r.scores is not None
                   and (r.dataset == dataset or (dataset == ALL and not r.union))]
            summary[dataset] = {"n": len(scored), **{k: asdict(v) for k, v in summarise(scored).items()},
                                "nsd": asdict(summarise_values(math.nan if v is None else v for v in nsd))}
    settings = {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(config).items()}
    return EvalResult(predictor.model_name, predictor.backend.detail, settings, results, summary)


def _open(config: EvalConfig, cache: EmbeddingCache | None):
    """The predictor that is evaluated: ``cache`` when given (shared with other runs in this process), else a disk
    cache in ``config.cache_dir``, else the default in-memory one."""
    return load(config.model_dir, backend=config.backend, precision=config.precision, threads=config.threads,
                task=config.task, cache=cache if cache is not None else config.cache_dir)


def evaluate(config: EvalConfig, progress: Callable[[str], None] | None = None,
             cache: EmbeddingCache | None = None) -> EvalResult:
    """Evaluate ``config.model_dir`` on ``config.data`` (module docstring). A precision that was not exported
    or failed its validation against PyTorch is refused (``ManifestError`` with the recorded reasons).
    ``cache``: an embedding cache shared with other runs in this process (several prompt kinds on the same
    images, or a job that encoded them already) so no image is encoded twice; the PyTorch reference never uses it."""

    check_precision(Manifest.load(config.model_dir), config.precision)  # refuse before reading any data
    if config.prompt == "propagate":
        return _evaluate_volumes(config, progress, cache)
    if is_challenge_folder(config.data):
        return _evaluate_challenge(config, progress, cache)
    cases = load_eval_cases(config.data, config.window)
    if config.cases is not None:
        unknown = sorted(set(config.cases) - {c.scan for c in cases})
        if unknown:
            raise ValueError(f"{config.data}: no case(s) {unknown}; have {sorted({c.scan for c in cases})}")
        cases = [c for c in cases if c.scan in config.cases]
    if not cases:
        raise ValueError(f"{config.data}: no cases to evaluate")
    predictor = _open(config, cache)
    reference = None
    if config.reference == "torch":
        reference = load(config.model_dir, backend="torch", precision="fp32", threads=config.threads)
    batched = {} if config.prompt == "support" else _decode_instances(predictor, cases, config)
    results = []
    for index, case in enumerate(cases):
        prompt = None if config.prompt == "support" else case_prompt(case, index, config)
        supports = support_cases(cases, index, config) if prompt is None else []
        detail = _describe(prompt) if prompt is not None else "supports: " + ", ".join(s.name for s in supports)
        if prompt is None and not supports:
            results.append(CaseResult(case.name, case.dataset, config.prompt, detail, None,
                                      note="no support: no other case of this dataset and label"))
            continue
        mask = batched[index] if index in batched else _segment(predictor, case, prompt, supports)
        agreement = None
        if reference is not None:
            agreement = dice(mask, _segment(reference, case, prompt, supports))
        results.append(CaseResult(case.name, case.dataset, config.prompt, detail,
                                  score(mask, case.mask, case.spacing), agreement,
                                  nsd=normalized_surface_dice(mask, case.mask, case.spacing, config.nsd_tolerance_mm)))
        if progress is not None:
            progress(case.name)
    results += _union_rows(cases, batched, config)
    return _result(config, predictor, results)
