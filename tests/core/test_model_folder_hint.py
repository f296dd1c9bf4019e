"""A model folder that does not exist is named as such, with the folder the main job made (issue 27)."""

from __future__ import annotations

import pytest

from gmiseg_edge.core.errors import ManifestError
from gmiseg_edge.core.manifest import MANIFEST, Manifest


def test_a_missing_model_folder_does_not_exist_and_points_at_the_main_jobs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ManifestError, match="models/lite_medsam: model folder does not exist; run `gmiseg-edge demo`"):
        Manifest.load("models/lite_medsam")
    made = tmp_path / "runs" / "demo" / "lite_medsam"
    made.mkdir(parents=True)
    (made / MANIFEST).write_text("{}")
    with pytest.raises(ManifestError, match=r"the main job \(`gmiseg-edge demo`\) made runs/demo/lite_medsam: give "
                                            r"--model-dir runs/demo/lite_medsam"):
        Manifest.load("models/lite_medsam")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ManifestError, match="not a gmiseg-edge model folder"):  # exists, but no manifest
        Manifest.load("empty")
