"""``python -m gmiseg_edge.cli``: the command (what torchrun starts for several training processes)."""

from gmiseg_edge.cli import app

app()
