"""Every command's --help, as a user sees it: no ``<bool>`` type beside on/off flags, no reST markup."""

from __future__ import annotations

import pytest
import typer.main
from typer.testing import CliRunner

from gmiseg_edge.cli import app

runner = CliRunner()
COMMANDS = sorted(typer.main.get_command(app).commands)


def test_every_command_is_checked():
    assert {"segment", "serve", "bench", "train", "samples", "adapt"} <= set(COMMANDS)


@pytest.mark.parametrize("command", [[], *([name] for name in COMMANDS)], ids=lambda c: " ".join(c) or "top")
def test_help_shows_no_bool_type_and_no_rst_markup(command):
    result = runner.invoke(app, [*command, "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "Usage:" in result.output
    for bad in ("<bool>", "``", ":func:", ":mod:", ":class:"):
        assert bad not in result.output, f"{' '.join(command) or 'gmiseg-edge'} --help shows {bad!r}"
