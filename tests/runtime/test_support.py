"""Support-set segmentation: errors, accuracy on a real scan, supports encoded once (also across processes),
and the runtime in a process where torch cannot be imported."""

from __future__ import annotations

import json

import numpy as np
import pytest

from gmiseg_edge.runtime import InputError, SupportSetSegmenter, load
from tests.no_torch import run_without_torch


@pytest.fixture(scope="module")
def model_dir(exported_models):
    return exported_models("lite_medsam").folder


def test_support_errors_are_clear(model_dir):
    segmenter = SupportSetSegmenter(load(model_dir, backend="ort"))
    image = np.zeros((64, 64), np.uint8)
    with pytest.raises(InputError, match="no supports"):
        segmenter.segment(image)
    with pytest.raises(InputError, match="liver slice 3 mask is empty"):
        segmenter.add_support(image, np.zeros((64, 64), bool), name="liver slice 3")
    with pytest.raises(InputError, match=r"mask: shape \(32, 32\) differs from its image's \(64, 64\)"):
        segmenter.add_support(image, np.ones((32, 32), bool))
    assert segmenter.predictor.stats.encoder_runs == 0


SUPPORT_RUN = """
import json, sys
from gmiseg_edge.data import load_sample_cases
from gmiseg_edge.core.prompts import box_from_mask
from gmiseg_edge.metrics import dice
from gmiseg_edge.runtime import SupportSetSegmenter, load

predictor = load({model_dir!r}, backend="ort", cache={cache!r})
slices = load_sample_cases(["totalseg_abdomen"], slices="all", labels=["liver"])
query = max(slices, key=lambda c: c.mask.sum())
others = [c for c in slices if c.slice_index != query.slice_index]
segmenter = SupportSetSegmenter(predictor)
for case in others[:: len(others) // 3][:3]:
    segmenter.add_support(case.image, case.mask)
after_supports = predictor.stats.encoder_runs
first = segmenter.segment(query.image)
second = segmenter.segment(others[1].image)
again = segmenter.segment(query.image)
box = predictor.predict(query.image, box=box_from_mask(query.mask))
stats = predictor.stats
print(json.dumps({{
    "after_supports": after_supports, "encoder_runs": stats.encoder_runs, "disk_hits": stats.disk_hits,
    "memory_hits": stats.memory_hits, "dice": dice(first.mask, query.mask), "box_dice": dice(box.mask, query.mask),
    "same": bool((first.mask == again.mask).all()), "torch_loaded": "torch" in sys.modules,
}}))
"""


def test_a_support_set_is_encoded_once_across_queries_and_processes(model_dir, tmp_path):
    code = SUPPORT_RUN.format(model_dir=str(model_dir), cache=str(tmp_path / "embeddings"))
    first = json.loads(run_without_torch(code).stdout.strip().splitlines()[-1])
    # 3 supports + 2 distinct queries; the third query and the box prompt reuse cached embeddings
    assert first["after_supports"] == 3 and first["encoder_runs"] == 5 and first["disk_hits"] == 0
    assert first["same"] and not first["torch_loaded"]
    assert first["dice"] > 0.8, first  # liver from 3 other slices of the same scan (box prompt: see box_dice)
    second = json.loads(run_without_torch(code).stdout.strip().splitlines()[-1])
    assert second["encoder_runs"] == 0 and second["disk_hits"] == 5, second
    assert second["dice"] == first["dice"]


def test_the_runtime_segments_where_torch_cannot_be_imported(model_dir):
    code = f"""
import sys
import numpy as np
from gmiseg_edge.data import load_sample_cases
from gmiseg_edge.core.prompts import box_from_mask
from gmiseg_edge.metrics import dice
from gmiseg_edge.runtime import load

case = load_sample_cases(["lung2"])[0]
prediction = load({str(model_dir)!r}).predict(case.image, box=box_from_mask(case.mask))
assert "torch" not in sys.modules and "segment_anything" not in sys.modules
print("dice", dice(prediction.mask, case.mask))
"""
    out = run_without_torch(code).stdout
    assert float(out.split("dice")[-1]) > 0.8
