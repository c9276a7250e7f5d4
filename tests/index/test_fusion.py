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


def test_score_fusion_keeps_the_margin_rrf_loses():
    from medrag.index.fusion import score_fusion

    # dense is sure of "a" (0.9 vs 0.3); BM25 slightly prefers "b": score fusion keeps "a" first,
    # equal-weight RRF makes it a tie broken by id.
    dense, lexical = [("a", 0.9), ("b", 0.3)], [("b", 10.0), ("a", 9.0)]
    fused = score_fusion([dense, lexical], weights=[0.75, 0.25])
    assert [i for i, _ in fused] == ["a", "b"]
    assert fused[0][1] == pytest.approx(0.75 * 1.0 + 0.25 * 0.9)
    assert fused[1][1] == pytest.approx(0.75 * 0.3 / 0.9 + 0.25 * 1.0)
    assert reciprocal_rank_fusion([["a", "b"], ["b", "a"]])[0][1] == reciprocal_rank_fusion([["a", "b"], ["b", "a"]])[1][1]


def test_score_fusion_missing_ids_and_edge_cases():
    from medrag.index.fusion import max_scaled, score_fusion

    fused = dict(score_fusion([[("a", 2.0)], [("b", 4.0), ("b", 1.0)]], weights=[0.5, 0.5]))
    assert fused == {"a": 0.5, "b": 0.5}  # each top of its own list; a repeated id counts at its best
    assert score_fusion([[], []]) == []
    assert max_scaled([]) == [] and max_scaled([-1.0, -3.0]) == [1.0, 0.0] and max_scaled([0.0, 0.0]) == [1.0, 1.0]
    with pytest.raises(InputError):
        score_fusion([[("a", 1.0)]], weights=[0.5, 0.5])
