"""Flags renamed for one word per idea keep their old names for one release, hidden, with a warning:
``train --normalisation`` (now ``--window``) and ``serve --task NAME=DIR`` (now ``--support NAME=DIR``)."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from gmiseg_edge.cli import app

runner = CliRunner()


def test_serve_support_and_its_deprecated_task_alias(tmp_path):
    # a bad NAME=DIR is refused before any server starts (no PyTriton needed), naming the flag given
    new = runner.invoke(app, ["serve", "--model-dir", str(tmp_path), "--support", "liver"])
    assert new.exit_code == 1 and "--support must be NAME=DIR, got 'liver'" in new.output, new.output
    assert "deprecated" not in new.output
    old = runner.invoke(app, ["serve", "--model-dir", str(tmp_path), "--task", "liver"])
    assert old.exit_code == 1, old.output
    assert "--task NAME=DIR is deprecated" in old.output and "use --support NAME=DIR" in old.output
    assert "--task must be NAME=DIR, got 'liver'" in old.output
    help_text = runner.invoke(app, ["serve", "--help"]).output
    assert "--support" in help_text and "--task" not in help_text  # the alias is hidden


def test_train_window_and_its_deprecated_normalisation_alias(tmp_path):
    pytest.importorskip("torch")  # train imports the training side first
    args = ["train", "--data", str(tmp_path / "none"), "--out", str(tmp_path / "a.safetensors")]
    # a bad window is refused before any data is read: the alias reaches the same check
    old = runner.invoke(app, [*args, "--normalisation", "1,2,3"])
    assert old.exit_code == 1 and "--normalisation is deprecated" in old.output and "use --window" in old.output
    assert "'1,2,3'" in old.output, old.output
    new = runner.invoke(app, [*args, "--window", "1,2,3"])
    assert new.exit_code == 1 and "'1,2,3'" in new.output and "deprecated" not in new.output, new.output
    both = runner.invoke(app, [*args, "--window", "lung", "--normalisation", "abdomen"])
    assert both.exit_code == 2 and "give --window only" in both.output, both.output
    help_text = runner.invoke(app, ["train", "--help"]).output
    assert "--window" in help_text and "--normalisation" not in help_text
