"""Reciprocal rank fusion."""

from __future__ import annotations

import pytest

from medrag.errors import InputError
from medrag.index.fusion import reciprocal_rank_fusion


def test_single_ranking_keeps_order_and_scores():
    fused = reciprocal_rank_fusion([["a", "b", "c"]], k=60)
    assert [i for i, _ in fused] == ["a", "b", "c"]
    assert fused[0][1] == pytest.approx(1 / 61)
    assert fused[2][1] == pytest.approx(1 / 63)


def test_agreement_wins():
    fused = reciprocal_rank_fusion([["a", "b", "c"], ["b", "d", "a"]])
    assert [i for i, _ in fused][:2] == ["b", "a"]
    assert dict(fused)["b"] == pytest.approx(1 / 62 + 1 / 61)
    assert {i for i, _ in fused} == {"a", "b", "c", "d"}


def test_scores_descending_and_ties_by_id():
    fused = reciprocal_rank_fusion([["x", "y"], ["y", "x"], ["q"], ["p"]])
    assert [i for i, _ in fused] == ["x", "y", "p", "q"]
    scores = [s for _, s in fused]
    assert scores == sorted(scores, reverse=True)


def test_weights():
    fused = reciprocal_rank_fusion([["a", "b"], ["b", "a"]], weights=[1.0, 3.0])
    assert [i for i, _ in fused] == ["b", "a"]
    assert dict(fused)["b"] == pytest.approx(1 / 62 + 3 / 61)
    zero = reciprocal_rank_fusion([["a"], ["b"]], weights=[1.0, 0.0])
    assert zero[0] == ("a", pytest.approx(1 / 61))


def test_small_k_sharpens():
    fused = reciprocal_rank_fusion([["a", "b"]], k=0)
    assert dict(fused) == {"a": pytest.approx(1.0), "b": pytest.approx(0.5)}


def test_duplicates_within_a_ranking_count_once():
    assert dict(reciprocal_rank_fusion([["a", "b", "a"]]))["a"] == pytest.approx(1 / 61)


def test_empty_inputs():
    assert reciprocal_rank_fusion([]) == []
    assert reciprocal_rank_fusion([[], []]) == []


@pytest.mark.parametrize(
    "kwargs",
    [
        {"rankings": [["a"]], "weights": [1.0, 2.0]},
        {"rankings": [["a"]], "k": -1},
        {"rankings": "abc"},
        {"rankings": ["abc"]},
    ],
)
def test_bad_input(kwargs):
    with pytest.raises(InputError):
        reciprocal_rank_fusion(**kwargs)
