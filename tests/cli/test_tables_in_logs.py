"""Tables printed into a file or a log are not cut, and the eval table's case column names the structure
(issue 27: the NSD column was cut at 120 characters and cases read ``totalseg_abdomen/…``)."""

from __future__ import annotations

import io

from rich.console import Console

from gmiseg_edge import cli
from gmiseg_edge.cli.render import eval_table
from gmiseg_edge.jobs.evaluate import CaseResult, EvalResult
from gmiseg_edge.metrics import SegmentationScores


def test_the_eval_table_is_whole_in_a_log(monkeypatch):
    names = [f"totalseg_abdomen/{organ}_k{k}" for organ in ("liver", "spleen", "kidney_left", "gallbladder")
             for k in (12, 27)]
    cases = [CaseResult(name, "totalseg_abdomen", "box", "box", SegmentationScores(0.91, 0.84, 0.52, 1.73),
                        nsd=0.9876, note="propagation stopped at slice 30: the structure ended") for name in names]
    summary = {"all": {"n": len(cases)} | {m: {"mean": 0.5, "std": 0.1} for m in ("dice", "jaccard", "asd",
                                                                                 "hd95", "nsd")}}
    result = EvalResult("lite_medsam", "ort", {"nsd_tolerance_mm": 2.0}, cases, summary)
    log = io.StringIO()
    monkeypatch.setattr(cli, "console", Console(file=log, width=120))  # as a file or a log: not a terminal
    cli.show(eval_table(result, "lite_medsam fp32, box prompts (seed 0)", reference=True))
    text = log.getvalue()
    assert "…" not in text, text  # nothing cut
    for name in names:
        assert name in text, text  # the organ is in the case column, on one line
    assert "0.9876" in text and "NSD" in text and "the structure ended" in text
