"""The main job on the built-in model and the shipped sample data: export -> segment -> eval -> bench.

1. export the model to ONNX (validated against PyTorch; fp16 and int8 variants by default),
2. segment every sample case with the torch-free runtime (a box from each label's extent) and write overlay PNGs;
   an instance map (the nuclei) is segmented one object per instance (one box each, decoded together in
   batched decoder calls), written as a label map (``labels/<case>.png``) and drawn with a colour per object,
3. evaluate Dice, Jaccard, ASD and HD95 with the paper's seeded box prompts,
4. benchmark every precision side by side with PyTorch eager;

and writes ``eval.json`` and ``bench.json`` into ``out``.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from gmiseg_edge.core.files import write_json_atomic
from gmiseg_edge.core.prompts import box_from_mask, boxes_from_labels
from gmiseg_edge.data.images import Volume
from gmiseg_edge.data.samples import SampleCase, load_sample_cases, load_sample_pair, sample_index
from gmiseg_edge.data.writers import write_png
from gmiseg_edge.jobs.bench import BenchConfig, run_bench
from gmiseg_edge.jobs.evaluate import EvalConfig, evaluate
from gmiseg_edge.jobs.overlays import View, image_view, volume_view, write_label_overlay, write_overlay
from gmiseg_edge.metrics import dice
from gmiseg_edge.models.weights import resolve_weights
from gmiseg_edge.runtime import EmbeddingCache, load

Log = Callable[[str], None]
#: a step's progress, called as each unit of a step ends: ``(step, done, total, detail)``; ``step`` is one of
#: :data:`STEPS`, ``detail`` names the unit just done (a case, a benchmark round, an export phase)
StepProgress = Callable[[str, int, int, str], None]
STEPS = ("export", "segment", "evaluate", "benchmark")
#: the sample scans the main job validates its export on: a CT slice and the RGB microscopy image (its five nuclei
#: share one encoder run), neither in the int8 calibration set; ``gmiseg-edge export`` validates on every sample case
DEMO_VALIDATION = ("lung1", "dsb_nuclei")
#: timed benchmark rounds in the main job (``gmiseg-edge bench`` runs 10)
DEMO_RUNS = 2
#: calibration slices for the TensorRT int8 graph in the main job (``gmiseg-edge export`` takes 16; the CPU int8
#: graph is dynamically quantised and does not use them unless it misses its accuracy gate)
DEMO_CALIBRATION = 4


def export_phases(precisions: Sequence[str]) -> int:
    """How many lines the export logs for ``precisions`` (its phases: build, PyTorch reference, export, per precision
    its conversion and validation, write): the export step's progress counts them."""
    phases = 3 + 2 + 1  # building, the reference, exporting; fp32's validation (2 lines); wrote
    if "fp16" in precisions:
        phases += 2 + 2  # two graphs converted, then validated
    if "int8" in precisions:
        phases += 3 + 2  # calibrating, the CPU graph, the TensorRT graph; then validated
    return phases


def _counting(step: str, total: int, progress: StepProgress, say: Log) -> Log:
    """``say`` that also advances ``step`` by one per message (at most to ``total - 1``: the step's last call
    completes it)."""
    done = 0

    def log(message: str) -> None:
        nonlocal done
        say(message)
        done = min(done + 1, total - 1)
        progress(step, done, total, message)

    return log


@dataclass
class MainJobResult:
    """What each step produced (the objects of the library calls)."""

    model_dir: Path
    export: object
    overlays: list[Path] = field(default_factory=list)
    label_maps: list[Path] = field(default_factory=list)  # instance cases: predicted label maps
    evaluation: object = None
    bench: object = None
    reports: list[Path] = field(default_factory=list)  # eval.json, bench.json


def segment_instances(predictor, image: np.ndarray, instances: np.ndarray) -> np.ndarray:
    """Segment each instance of an instance map on ``image`` from its own box, all in batched decoder calls:
    the predicted label map (instance k of ascending id -> label k + 1; see ``ObjectPredictions.label_map``)."""
    _, boxes = boxes_from_labels(instances)
    return predictor.predict(image, boxes=boxes).label_map()


@functools.lru_cache(maxsize=16)
def _sample_view(name: str, axis: int) -> View:
    volume = load_sample_pair(name)[0]
    assert isinstance(volume, Volume)
    return volume_view(volume, axis)


def case_view(case: SampleCase) -> View:
    """How a sample case's overlay is shown: a volume's slice in the radiological view from the volume's affine, a
    2D image as it is."""
    return image_view(case.spacing) if case.axis is None else _sample_view(case.case, case.axis)


def run_main_job(
    model: str = "lite_medsam",
    out: Path = Path("runs/demo"),
    precisions: Sequence[str] = ("fp32", "fp16", "int8"),
    runs: int = DEMO_RUNS,
    torch_reference: bool = True,
    log: Log | None = None,
    progress: StepProgress | None = None,
    validation: Sequence[str] | None = DEMO_VALIDATION,
) -> MainJobResult:
    """Run the four steps; the model folder is ``out/<model>`` (replaced on every run). ``log`` gets the step
    headlines and the export's lines, ``progress`` each step's advance (:data:`StepProgress`); ``validation``:
    the sample scans the export is validated on (None: all of them, as ``gmiseg-edge export``). The segment and
    evaluate steps share one embedding cache: each sample image is encoded once."""

    # torch: export needs it, and the rest of the main job does not (the torch-free runtime runs the result)
    from gmiseg_edge.export.pipeline import ExportOptions, export_model

    say = log or (lambda message: None)
    advance = progress or (lambda step, done, total, detail: None)
    model_dir = Path(out) / model
    resolve_weights(model, log=say)  # the first run fetches the weights: say so, rather than seem to hang
    on = f" on {', '.join(validation)}" if validation is not None else ""
    say(f"[1/4] export {model} to {model_dir} ({', '.join(precisions)}), validated against PyTorch{on}")
    phases = export_phases(precisions)
    advance("export", 0, phases, "")
    exported = export_model(ExportOptions(
        model=model, out=model_dir, fp16="fp16" in precisions, int8="int8" in precisions,
        calib="samples" if "int8" in precisions else None, force=True,
        validation_cases=list(validation) if validation is not None else None,
        calib_limit=DEMO_CALIBRATION,
    ), log=_counting("export", phases, advance, say))
    advance("export", phases, phases, f"wrote {model_dir}")
    result = MainJobResult(model_dir=model_dir, export=exported)

    say("[2/4] segment the sample cases with the torch-free runtime (ONNX Runtime, fp32), overlays")
    cache = EmbeddingCache()  # the evaluate step decodes on the embeddings this step computes
    predictor = load(model_dir, backend="auto", precision="fp32", cache=cache)
    overlay_dir = Path(out) / "overlays"
    overlay_dir.mkdir(parents=True, exist_ok=True)
    instance_maps = {e["name"] for e in sample_index() if e.get("mask_type") == "instances"}
    cases = load_sample_cases()
    advance("segment", 0, len(cases), "")
    for done, case in enumerate(cases, 1):
        path = overlay_dir / f"{case.name.replace('/', '_')}.png"
        if case.case in instance_maps:  # one box per instance, decoded together; a colour per object
            truth = load_sample_pair(case.case)[1].array
            labels = segment_instances(predictor, case.image, truth)
            result.label_maps.append(write_png(Path(out) / "labels" / path.name, labels))
            result.overlays.append(write_label_overlay(path, case.image, labels, case_view(case), case.label,
                                                       dice(labels != 0, truth != 0), "foreground"))
        else:
            prediction = predictor.predict(case.image, box=box_from_mask(case.mask))
            result.overlays.append(write_overlay(path, case.image, prediction.mask, case_view(case), case.label,
                                                 dice(prediction.mask, case.mask),
                                                 "this slice" if case.axis is not None else "the image"))
        advance("segment", done, len(cases), case.name)

    say("[3/4] evaluate: box prompts from each label's extent plus a seeded random offset")
    eval_cases = len(load_sample_cases(instances=True))  # the cases evaluate() scores (each instance its own)
    advance("evaluate", 0, eval_cases, "")
    evaluated = 0

    def case_done(name: str) -> None:
        nonlocal evaluated
        evaluated = min(evaluated + 1, eval_cases)
        advance("evaluate", evaluated, eval_cases, name)

    result.evaluation = evaluate(EvalConfig(model_dir=model_dir, data="samples", prompt="box", seed=0),
                                 progress=case_done, cache=cache)
    predictor.close()
    advance("evaluate", eval_cases, eval_cases, "")

    say(f"[4/4] benchmark {', '.join(precisions)} side by side" + (" with PyTorch eager" if torch_reference else ""))
    result.bench = run_main_job_bench(model_dir, precisions, runs, torch_reference, advance)
    result.reports = [write_json_atomic(Path(out) / "eval.json", result.evaluation.to_dict()),
                      write_json_atomic(Path(out) / "bench.json", result.bench.to_dict())]
    return result


def run_main_job_bench(model_dir: Path, precisions: Sequence[str], runs: int, torch_reference: bool,
                       progress: StepProgress, warmup: int = 1):
    """The main job's benchmark step: every precision side by side, ``progress("benchmark", round, rounds, ...)``
    after each interleaved round (the task decoders, when the folder has any, are the last unit)."""
    rounds = warmup + runs + 1  # + the task decoders (or nothing), then the step ends
    progress("benchmark", 0, rounds, "")
    done = 0

    def round_done(detail: str) -> None:
        nonlocal done
        done = min(done + 1, rounds - 1)
        progress("benchmark", done, rounds, detail)

    bench = run_bench(BenchConfig(model_dir=model_dir, precisions=tuple(precisions), warmup=warmup, runs=runs,
                                  torch_reference=torch_reference), progress=round_done)
    progress("benchmark", rounds, rounds, "done")
    return bench
