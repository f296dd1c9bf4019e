"""``segment``'s flags become one prompt source (a value of the union ``Prompt``); combinations that are not one
source are refused naming the flags. No model needed."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from gmiseg_edge.cli.segment import prompt_from_flags
from gmiseg_edge.core.errors import InputError
from gmiseg_edge.jobs.segment import (
    BoxesPrompt,
    BoxPrompt,
    InstancesPrompt,
    LabelPrompt,
    PointsPrompt,
    SupportSetPrompt,
)

BOX = (1.0, 2.0, 30.0, 40.0)


def test_each_flag_combination_gives_one_prompt_source():
    assert prompt_from_flags(box=BOX, slice_index=3) == BoxPrompt(BOX, 3)
    assert prompt_from_flags(box=BOX, points=((5.0, 6.0, 1),)) == PointsPrompt(((5.0, 6.0, 1),), BOX)
    assert prompt_from_flags(boxes=(BOX, BOX)) == BoxesPrompt((BOX, BOX))
    assert prompt_from_flags(label=2, instances=True) == InstancesPrompt(2)
    assert prompt_from_flags(support=Path("ex"), label=5, uncertainty=True) == SupportSetPrompt(Path("ex"), 5,
                                                                                               uncertainty=True)
    assert prompt_from_flags(label=2, propagate=True) == LabelPrompt(2, propagate=True)
    assert prompt_from_flags(prompts_in_inputs=True) is None  # challenge cases bring their own boxes


@pytest.mark.parametrize(("flags", "message"), [
    ({}, "no prompt"),
    ({"propagate": True}, "no prompt"),
    ({"box": BOX, "support": Path("ex")}, "give one prompt source"),
    ({"box": BOX, "label": 5}, "give one prompt source"),
    ({"instances": True, "box": BOX}, "--instances prompts each instance"),
    ({"boxes": (BOX, BOX), "points": ((1.0, 1.0, 1),)}, "several boxes are one object each"),
    ({"boxes": (BOX, BOX), "propagate": True}, "--propagate carries one structure"),
    ({"label": 5, "slice_index": 2}, "--slice only applies"),
    ({"box": BOX, "uncertainty": True}, "needs --support"),
    ({"support": Path("ex"), "propagate": True}, "not from --support"),
    ({"box": BOX, "prompts_in_inputs": True}, "challenge cases (.npz) bring their own boxes"),
    ({"propagate": True, "prompts_in_inputs": True}, "challenge cases (.npz) bring their own boxes"),
])
def test_combinations_that_are_not_one_source_are_refused_naming_the_flags(flags, message):
    with pytest.raises(InputError, match=re.escape(message)):
        prompt_from_flags(**flags)


def test_support_options_name_registered_strategies():
    from gmiseg_edge.cli.parse import parse_support_options

    pairs = parse_support_options(["locate=affine", "fusion=prior", "select=2"])
    assert pairs == (("locate", "affine"), ("fusion", "prior"), ("select", 2))
    assert prompt_from_flags(support=Path("ex"), strategies=pairs) == SupportSetPrompt(Path("ex"), strategies=pairs)
    assert parse_support_options(None) == ()
    for text, message in (("fusion=nope", "fusion= must be one of"), ("speed=fast", "STEP one of"),
                          ("locate", "STEP=NAME"), ("select=0", "positive number"),
                          ("select=two", "positive number")):
        with pytest.raises(InputError, match=re.escape(message)):
            parse_support_options([text])
    with pytest.raises(InputError, match="given twice"):
        parse_support_options(["choice=auto", "choice=anatomy"])
    with pytest.raises(InputError, match="it needs --support"):
        prompt_from_flags(box=BOX, strategies=pairs)
