"""``gmiseg-edge segment``: its flags become one prompt source (:mod:`gmiseg_edge.jobs.segment.prompts`), bad
combinations refused with the flags named, then the job runs and its results are rendered.

Registered on the main app by :mod:`gmiseg_edge.cli`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Annotated

import typer
from rich.text import Text

from gmiseg_edge.cli import _user_errors, app, console, errors, say, usable_cache_dir
from gmiseg_edge.cli.parse import parse_boxes, parse_points, parse_support_options
from gmiseg_edge.cli.progress import file_progress
from gmiseg_edge.cli.render import failures_table
from gmiseg_edge.core.errors import InputError
from gmiseg_edge.data.formats import describe_formats, volume_mask_formats
from gmiseg_edge.data.intensity import parse_window
from gmiseg_edge.jobs.segment import (
    REPORT_NAME,
    BoxesPrompt,
    BoxPrompt,
    InstancesPrompt,
    LabelPrompt,
    PointsPrompt,
    Prompt,
    SegmentOptions,
    SupportSetPrompt,
    check_output_format,
    collect_inputs,
    inputs_bring_prompts,
    output_names,
    prepare_output_folder,
    segment_files,
)
from gmiseg_edge.jobs.segment.prompts import Box, Point
from gmiseg_edge.runtime import load


def prompt_from_flags(box: Box | None = None, boxes: Sequence[Box] = (), points: Sequence[Point] = (),
                      support: Path | None = None, label: int | None = None, instances: bool = False,
                      slice_index: int | None = None, propagate: bool = False, uncertainty: bool = False,
                      prompts_in_inputs: bool = False, prior: bool = False,
                      strategies: tuple[tuple[str, str | int], ...] = ()) -> Prompt | None:
    """The one prompt source the flags give (None when every input brings its own, ``prompts_in_inputs``); an
    InputError naming the flags for a combination that is not one source. ``box``/``boxes``: as
    :func:`~gmiseg_edge.cli.parse.parse_boxes` splits them (one object, or one object per box)."""
    prompted = box is not None or bool(points) or bool(boxes)
    if prompts_in_inputs:
        if prompted or support is not None or label is not None or propagate:
            raise InputError("challenge cases (.npz) bring their own boxes: give no --box/--point/--support/"
                             "--label/--propagate")
        return None
    if prompted and (support is not None or label is not None):
        raise InputError("give one prompt source: --box/--point, or --support, or --label (not several)")
    if instances and (prompted or support is not None or propagate):
        raise InputError("--instances prompts each instance of the label map (--mask) with its own box: it goes "
                         "without --box/--point/--support/--propagate")
    if not prompted and support is None and label is None and not instances:
        raise InputError("no prompt: give --box/--point, --support DIR, or --label K with a label map")
    if boxes and (box is not None or points):
        raise InputError("several boxes are one object each: give them all as --box (or --boxes FILE), without "
                         "--point (points prompt one object: give them with a single --box)")
    if boxes and propagate:
        raise InputError("--propagate carries one structure: give one --box")
    if slice_index is not None and not prompted:
        raise InputError("--slice only applies to --box/--point prompts on a volume")
    if uncertainty and support is None:
        raise InputError("--uncertainty is the disagreement of a support set's examples: it needs --support")
    if strategies and support is None:
        raise InputError("--support-option chooses how a support set is used: it needs --support")
    if prior and support is None:
        raise InputError("--prior is where a support set's example volumes locate the structure: it needs --support")
    if propagate and support is not None:
        raise InputError("--propagate starts from --box/--point with --slice K, or from --label (its largest "
                         "labelled slice); not from --support: a volume with --support is segmented slice by "
                         "slice and kept where connected (propagating from the supports' best slice scored "
                         "lower, BENCHMARKS.md)")
    if instances:
        return InstancesPrompt(label)
    if support is not None:
        return SupportSetPrompt(support, label, uncertainty=uncertainty, prior=prior, strategies=strategies)
    if boxes:
        return BoxesPrompt(tuple(boxes), slice_index)
    if points:
        return PointsPrompt(tuple(points), box, slice_index, propagate)
    if box is not None:
        return BoxPrompt(box, slice_index, propagate)
    assert label is not None
    return LabelPrompt(label, propagate)


@app.command()
def segment(
    model_dir: Annotated[Path, typer.Option(help="model folder written by `gmiseg-edge export`")],
    out: Annotated[Path, typer.Option(help="output folder: <stem>_mask.<ext> per input (+ overlays)")],
    image: Annotated[Path | None, typer.Option(help=f"one image or volume: {describe_formats()}")] = None,
    input_dir: Annotated[
        Path | None, typer.Option("--input", help="a folder: dataset (images/ + masks/) or plain images")
    ] = None,
    mask: Annotated[Path | None, typer.Option(help="label map of --image (for --label prompts and Dice)")] = None,
    box: Annotated[list[str] | None, typer.Option(
        help="box prompt x0,y0,x1,y1 (pixels); repeat it for several objects (a label map, object k -> k)")] = None,
    boxes: Annotated[Path | None, typer.Option(
        help="several objects: a file of boxes, one x0,y0,x1,y1 per line (or a JSON list); a label map")] = None,
    point: Annotated[list[str] | None, typer.Option(help="point prompt x,y,label (1 fg, 0 bg); repeatable")] = None,
    slice_index: Annotated[
        int | None, typer.Option("--slice", help="volumes with --box/--point: the slice along the last axis")
    ] = None,
    support: Annotated[Path | None, typer.Option(help="support set: a dataset folder of example image/masks")] = None,
    support_option: Annotated[list[str] | None, typer.Option(
        help="with --support: STEP=NAME chooses a strategy (locate, fusion, choice, appearance; select=N keeps the "
        "N supports most like the query; example volumes on a volume take locate and fusion); repeatable, "
        "defaults otherwise")] = None,
    label: Annotated[int | None, typer.Option(help="label K: prompts from its extent in the label map")] = None,
    window: Annotated[str, typer.Option(help="non-uint8: percentile, minmax, a CT preset, or low,high")] = "percentile",
    overlay: Annotated[bool, typer.Option("--overlay", help="also write overlay PNGs")] = False,
    instances: Annotated[bool, typer.Option(
        "--instances", help="with a label map: one object (box) per instance id, or per connected component of "
        "--label K; decoded together, a label map out")] = False,
    uncertainty: Annotated[bool, typer.Option(
        "--uncertainty", help="with --support: also write <stem>_uncertainty (the examples' disagreement, "
        "0..255 for 0..0.5)")] = False,
    prior: Annotated[bool, typer.Option(
        "--prior", help="with --support of example volumes on a volume: also write <stem>_prior (where the "
        "registered examples put the structure, 0..255 for 0..1)")] = False,
    propagate: Annotated[bool, typer.Option(
        "--propagate", help="volumes: carry the structure from the --slice prompt (or the largest --label slice) "
        "through its neighbours until it ends")] = False,
    backend: Annotated[str, typer.Option(help="auto, trt, ort or torch")] = "auto",
    precision: Annotated[str, typer.Option(help="fp32, fp16 or int8")] = "fp32",
    threads: Annotated[int | None, typer.Option(help="CPU threads per run")] = None,
    cache_dir: Annotated[Path | None, typer.Option(help="disk embedding cache folder (shared across runs)")] = None,
    cache_max_gb: Annotated[float, typer.Option(help="--cache-dir bound: least recently used entries go")] = 4.0,
    series: Annotated[str | None, typer.Option(help="DICOM folder with several series: SeriesInstanceUID, "
                                               "SeriesNumber or part of the SeriesDescription")] = None,
    output_format: Annotated[str, typer.Option("--format", help="volumes: auto (as the input; DICOM gives "
                                               f"DICOM-SEG) or {', '.join(volume_mask_formats())}")] = "auto",
    structure: Annotated[str | None, typer.Option(help="the structure's name (DICOM-SEG segment label)")] = None,
    task: Annotated[str | None, typer.Option(help="decode with this task decoder (see `gmiseg-edge adapt`)")] = None,
) -> None:
    """Segment images or volumes with a box/points, a support set, or label-derived boxes; masks keep the
    input's format and geometry."""
    with _user_errors():
        single_box, several_boxes = parse_boxes(box, boxes)
        points, window_value = parse_points(point), parse_window(window)
        inputs = collect_inputs(image, input_dir, mask)
        in_inputs = inputs_bring_prompts(inputs)
        check_output_format(output_format)
        prompt = prompt_from_flags(single_box, several_boxes, points, support, label, instances, slice_index,
                                   propagate, uncertainty, in_inputs, prior, parse_support_options(support_option))
        options = SegmentOptions(prompt=prompt, window=window_value, overlay=overlay, series=series,
                                 format=output_format, structure=structure)
        options.check(prompts_in_inputs=in_inputs)
        output_names(inputs, options.format)  # colliding outputs are refused before the model loads
        prepare_output_folder(out)
        cache_dir = usable_cache_dir(cache_dir)
        predictor = load(model_dir, backend=backend, precision=precision, threads=threads, cache=cache_dir,
                         cache_max_gb=None if cache_dir is None else cache_max_gb, task=task)
        say(f"{predictor.model_name} {precision} on {predictor.backend.detail}" + (f", task {task}" if task else ""))
        with file_progress(console) as progress:
            results = segment_files(predictor, inputs, out, options, progress)
    for r in results:
        if not r.ok:
            continue
        score = "" if r.dice is None else f", Dice {r.dice:.4f} on {r.dice_on}"
        say(f"{r.output} ({r.slices} slice(s), {r.seconds:.1f} s{score})")
        if r.note:
            say(f"  {r.note}")
    stats = predictor.stats
    console.print(f"encoder runs {stats.encoder_runs}, cache hits {stats.hits} ({stats.disk_hits} from disk)")
    failed = [r for r in results if not r.ok]
    if len(results) > 1:
        say(f"{len(results) - len(failed)} of {len(results)} written; report: {Path(out) / REPORT_NAME}")
    if failed:
        if len(results) == 1:
            errors.print(Text.assemble(("error:", "bold red"), " ", failed[0].error), highlight=False,
                         soft_wrap=True)
        else:
            errors.print(failures_table(failed))
        raise typer.Exit(1)
