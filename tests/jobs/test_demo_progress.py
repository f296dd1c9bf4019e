"""The main job's progress (issue 27 item 2): every step reports its advance, the benchmark included, and the CLI
shows it as bars with elapsed and remaining time, or nothing with --quiet."""

from __future__ import annotations

import io

from rich.console import Console

from gmiseg_edge.cli.progress import step_progress
from gmiseg_edge.jobs.demo import _counting, export_phases, run_main_job_bench


def test_the_benchmark_step_reports_each_round_then_completes(exported_models):
    folder = exported_models("lite_medsam").folder
    calls: list[tuple[str, int, int, str]] = []
    bench = run_main_job_bench(folder, ("fp32",), runs=2, torch_reference=False,
                               progress=lambda *call: calls.append(call), warmup=1)
    assert bench.rows, "nothing was benchmarked"
    assert {step for step, *_ in calls} == {"benchmark"}
    done = [d for _, d, _, _ in calls]
    assert done[0] == 0 and done == sorted(done), calls
    assert calls[-1][1] == calls[-1][2] == 1 + 2 + 1, calls  # warmup + runs + the task decoders' unit
    assert [detail for *_, detail in calls if detail.startswith("round")] == ["round 1/3", "round 2/3", "round 3/3"]


def test_the_export_step_counts_its_lines_and_never_completes_early():
    calls, said = [], []
    log = _counting("export", 3, lambda *call: calls.append(call), said.append)
    for line in ("building", "reference", "exporting", "validating", "fp32: ..."):
        log(line)
    assert said == ["building", "reference", "exporting", "validating", "fp32: ..."]
    assert [d for _, d, _, _ in calls] == [1, 2, 2, 2, 2]  # held below the total until the step ends
    assert export_phases(("fp32",)) < export_phases(("fp32", "fp16")) < export_phases(("fp32", "fp16", "int8"))


def _console() -> Console:
    return Console(file=io.StringIO(), width=200, force_terminal=False, color_system=None)


def test_step_bars_show_elapsed_and_remaining_time_and_the_unit_verbatim():
    console = _console()
    with step_progress(console) as progress:
        progress("export", 0, 4, "")
        progress("export", 4, 4, "wrote runs/[bold]x")
        progress("benchmark", 2, 3, "round 2/3")
    text = console.file.getvalue()
    assert "export" in text and "4/4" in text and "wrote runs/[bold]x" in text, text
    assert "benchmark" in text and "2/3" in text and "round 2/3" in text, text
    assert text.count("elapsed") == 2 and text.count("remaining") == 2, text


def test_quiet_shows_no_progress():
    console = _console()
    with step_progress(console, quiet=True) as progress:
        progress("export", 1, 4, "building")
    assert console.file.getvalue() == ""
