"""core.selection.spread: evenly spaced picks, ends included."""

from gmiseg_edge.core.selection import spread


def test_spread_keeps_the_ends_and_spaces_evenly():
    assert spread(list(range(11)), 3) == [0, 5, 10]
    assert spread(list(range(10)), 4) == [0, 3, 6, 9]
    assert spread("abcdefg", 2) == ["a", "g"]


def test_spread_returns_everything_when_there_are_few_and_nothing_for_zero():
    assert spread([4, 5], 3) == [4, 5]
    assert spread((1, 2, 3), 3) == [1, 2, 3]
    assert spread(list(range(5)), 0) == []
    assert spread([], 2) == []
