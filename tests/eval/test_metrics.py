"""Evaluation metrics: ranking, choice parsing, token F1, bootstrap intervals."""

from __future__ import annotations

import pytest

from medrag.eval.metrics import bootstrap_ci, exact_match, paired_bootstrap_delta, parse_choice, ranking_metrics, token_f1

OPTIONS = {"A": "Aspirin", "B": "Warfarin", "C": "Heparin", "D": "Clopidogrel"}


def test_ranking_metrics() -> None:
    m = ranking_metrics(["x", "gold", "y"], {"gold"})
    assert m["recall@1"] == 0.0 and m["recall@5"] == 1.0 and m["mrr@10"] == 0.5
    assert 0.0 < m["ndcg@10"] < 1.0
    assert ranking_metrics(["gold"], {"gold"})["ndcg@10"] == 1.0
    assert ranking_metrics(["x"], {"gold"}) == {"recall@1": 0.0, "recall@5": 0.0, "recall@10": 0.0, "mrr@10": 0.0, "ndcg@10": 0.0}


@pytest.mark.parametrize(
    "text, letter",
    [
        ("The answer is B.", "B"),
        ("Answer: (c)", "C"),
        ("D) Clopidogrel", "D"),
        ("I would choose option A because ...", "A"),
        ("Warfarin is the vitamin K antagonist.", "B"),
        ("It could be aspirin or heparin.", None),  # two options quoted: ambiguous
        ("I am not sure.", None),
        ("The answer is E.", None),  # not an option
    ],
)
def test_parse_choice(text: str, letter: str | None) -> None:
    assert parse_choice(text, OPTIONS) == letter


def test_token_f1_and_exact_match() -> None:
    assert token_f1("left temporal lobe", "Left temporal lobe.") == 1.0
    assert 0.0 < token_f1("the left lobe", "left temporal lobe") < 1.0
    assert token_f1("yes", "no") == 0.0
    assert exact_match("Yes", "yes") == 1.0 and exact_match("yes it is", "yes") == 0.0


def test_bootstrap_intervals_contain_the_mean_and_are_deterministic() -> None:
    values = [1, 0, 1, 1, 0, 1, 1, 1, 0, 1]
    low, high = bootstrap_ci(values, seed=3)
    assert low <= 0.7 <= high and (low, high) == bootstrap_ci(values, seed=3)
    delta, low, high = paired_bootstrap_delta([0, 0, 1, 0], [1, 1, 1, 0])
    assert delta == 0.5 and low <= delta <= high


def test_option_text_must_match_whole_words() -> None:
    yes_no = {"A": "yes", "B": "no", "C": "maybe"}
    assert parse_choice("I do not know.", yes_no) is None  # "no" inside "not" is not an answer
    assert parse_choice("No, it is not.", yes_no) == "B"
