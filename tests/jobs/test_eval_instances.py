"""Eval of instance data: an image's instances are decoded together (the same masks as one call each), each
instance is scored on its own, and their union is one extra row kept out of the ``all`` summary."""

from __future__ import annotations

import numpy as np
import pytest

from gmiseg_edge.jobs.evaluate import (
    CaseResult,
    EvalConfig,
    _decode_instances,
    _result,
    _segment,
    _union_rows,
    case_prompt,
    sample_eval_cases,
)
from gmiseg_edge.metrics import dice, score
from gmiseg_edge.runtime import load


@pytest.fixture(scope="module")
def predictor(exported_models):
    return load(exported_models("lite_medsam").folder, backend="ort", threads=2)


def test_instances_are_decoded_together_and_their_union_is_one_extra_row(predictor, exported_models, monkeypatch):
    all_cases = sample_eval_cases()
    nuclei = [c for c in all_cases if c.instance][:: 25][:5]
    lung = next(c for c in all_cases if c.scan == "lung2")
    cases = [lung, *nuclei]
    config = EvalConfig(exported_models("lite_medsam").folder, prompt="box", seed=0)
    runs = []
    decode = predictor.backend.decode  # the real decoder runs; the K of each run is recorded
    monkeypatch.setattr(predictor.backend, "decode", lambda inputs: runs.append(inputs.objects) or decode(inputs))
    masks = _decode_instances(predictor, cases, config)
    assert runs == [5] and sorted(masks) == [1, 2, 3, 4, 5]  # the five instances in one run; lung2 not batched
    for index in (1, 5):
        alone = _segment(predictor, cases[index], case_prompt(cases[index], index, config), [])
        assert dice(masks[index], alone) >= 0.999

    (union,) = _union_rows(cases, masks, config)
    assert union.union and union.name == "dsb_nuclei/all_instances" and union.dataset.endswith(" union")
    truth = np.logical_or.reduce([c.mask for c in nuclei])
    predicted = np.logical_or.reduce([masks[i] for i in range(1, 6)])
    assert union.scores.dice == pytest.approx(score(predicted, truth, nuclei[0].spacing).dice)

    rows = [CaseResult(c.name, c.dataset, "box", "", score(masks.get(i, c.mask), c.mask, c.spacing))
            for i, c in enumerate(cases)]
    result = _result(config, predictor, [*rows, union])
    assert result.summary["all"]["n"] == 6  # per structure: lung2 and the five instances, not the union row
    assert result.summary[union.dataset]["n"] == 1
