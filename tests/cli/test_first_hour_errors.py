"""Mistakes of a first hour with the tool, answered with the right form (issue 27)."""

from __future__ import annotations

import cv2
import numpy as np
from typer.testing import CliRunner

from gmiseg_edge.cli import app

runner = CliRunner()


def test_a_box_given_with_spaces_gets_the_comma_form(tmp_path):
    result = runner.invoke(app, ["segment", "--model-dir", str(tmp_path), "--image", "a.png", "--out",
                                 str(tmp_path / "o"), "--box", "44", "27", "104", "81"])
    assert result.exit_code == 2, result.output
    text = " ".join(result.output.replace("│", " ").split())
    assert "unexpected extra argument" in text and "--box 44,27,104,81" in text, result.output


def test_a_ct_window_on_a_photo_is_refused(exported_models, tmp_path):
    photo = tmp_path / "photo.jpg"
    cv2.imwrite(str(photo), np.random.default_rng(0).integers(0, 255, (64, 80, 3), dtype=np.uint8))
    folder = str(exported_models("lite_medsam").folder)
    result = runner.invoke(app, ["segment", "--model-dir", folder, "--image", str(photo), "--box", "10,10,40,40",
                                 "--window", "abdomen", "--out", str(tmp_path / "o")])
    assert result.exit_code == 1, result.output
    assert "--window abdomen maps scanner intensities" in result.output and "refused" in result.output
    assert not (tmp_path / "o" / "photo_mask.png").exists()
    result = runner.invoke(app, ["segment", "--model-dir", folder, "--image", str(photo), "--box", "10,10,40,40",
                                 "--out", str(tmp_path / "o")])  # the default window adapts: no refusal
    assert result.exit_code == 0, result.output
