"""``gmiseg-edge samples [--copy DIR]``: list the shipped sample data, or copy it out (with a DICOM series and a
support set written from it). Registered on the main app by :mod:`gmiseg_edge.cli`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table
from rich.text import Text

from gmiseg_edge.cli import _user_errors, app, say, show
from gmiseg_edge.data.samples import sample_data_dir
from gmiseg_edge.jobs.samples import copy_samples, sample_files


@app.command()
def samples(
    copy: Annotated[Path | None, typer.Option(help="copy the samples into this new (or empty) folder")] = None,
) -> None:
    """List the sample data (scans, label maps, a DICOM series, a support set), or copy it out with --copy DIR so
    the README's commands run as written (`gmiseg-edge samples --copy samples`)."""
    with _user_errors():
        if copy is not None:
            written = copy_samples(copy)
            say(f"copied {len(written)} sample files and folders into {copy}")
        table = Table(title=Text(f"sample data (shipped in {sample_data_dir()}; the DICOM series and the support set "
                                 "are written by --copy)" if copy is None else f"sample data in {copy}"))
        table.add_column("path", overflow="fold")
        table.add_column("what")
        for f in sample_files():
            table.add_row(Text(str(f.path) + ("/" if f.path.suffix == "" else "")), Text(f.what))
        show(table)
