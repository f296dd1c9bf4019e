"""A batch of inputs through ``segment``: it never stops at a bad input. Every input is attempted, and one that
fails (unreadable file, bad label map, a prompt outside it, ...) is recorded with its one-line reason while the
others go on; the report lists them all."""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

from gmiseg_edge.jobs.segment.inputs import InputFile, inputs_bring_prompts
from gmiseg_edge.jobs.segment.naming import output_names, output_path
from gmiseg_edge.jobs.segment.options import SegmentOptions
from gmiseg_edge.jobs.segment.prompts import SupportSetPrompt
from gmiseg_edge.jobs.segment.report import FileResult, failure_reason, write_report
from gmiseg_edge.jobs.segment.routes import Progress, segment_file
from gmiseg_edge.jobs.segment.sources import SliceSegmenter, load_supports, support_volumes
from gmiseg_edge.jobs.segment.writing import prepare_output_folder
from gmiseg_edge.runtime.predictor import Predictor


def segment_files(predictor: Predictor, inputs: Sequence[InputFile], out: str | Path, options: SegmentOptions,
                  progress: Progress | None = None) -> list[FileResult]:
    """Segment every input (see :mod:`gmiseg_edge.jobs.segment`); masks go to ``out/<name>_mask.<ext>``. Every
    input is attempted: one that fails has ``error`` set and the rest go on. The report is written to
    ``out/segment_report.json``."""
    options.check(prompts_in_inputs=inputs_bring_prompts(inputs))
    names = output_names(inputs, options.format)
    out = prepare_output_folder(out)
    prompt = options.prompt
    supports = load_supports(predictor, prompt, options.window) if isinstance(prompt, SupportSetPrompt) else None
    volumes = support_volumes(prompt) if isinstance(prompt, SupportSetPrompt) else None
    segmenter = SliceSegmenter(predictor, prompt, supports, volumes)
    results = []
    for item, name in zip(inputs, names, strict=True):
        start = time.perf_counter()
        try:
            results.append(segment_file(item, out, options, segmenter, progress, name))
        except Exception as exc:  # recorded for this input; the batch goes on
            results.append(FileResult(item.image, output_path(out, item.image, name, options.format), 0,
                                      seconds=time.perf_counter() - start, error=failure_reason(item, exc)))
    write_report(out, results)
    return results
