"""The metadata filter syntax (medrag.index.filters): text -> Where dict, validation, matching."""

from __future__ import annotations

import pytest

from medrag.errors import InputError
from medrag.index.filters import check_where, matches, parse_where


@pytest.mark.parametrize(
    "text, where",
    [
        ("source=ch06.pdf", {"source": "ch06.pdf"}),
        ("book=ch06.pdf", {"source": "ch06.pdf"}),
        ("modality=CT|MR", {"modality": ["CT", "MR"]}),
        ("page=10..20", {"page": {"gte": 10, "lte": 20}}),
        ("page=10..", {"page": {"gte": 10}}),
        ("page>=3; page<=4", {"page": {"gte": 3, "lte": 4}}),
        ("date>=2020-01-01", {"date": {"gte": "2020-01-01"}}),
        ("date=2020-01-01..2020-12-31", {"date": {"gte": "2020-01-01", "lte": "2020-12-31"}}),
        ('report_id="00123"', {"report_id": "00123"}),
        ("score<=0.5", {"score": {"lte": 0.5}}),
        (" source = a b.pdf ; page = 2 ", {"source": "a b.pdf", "page": 2}),
        ('{"page": {"gte": 1}}', {"page": {"gte": 1}}),
    ],
)
def test_parse_where(text, where):
    assert parse_where(text) == where


def test_repeated_conditions_combine():
    assert parse_where(["source=a.pdf", "page=1|2"]) == {"source": "a.pdf", "page": [1, 2]}
    assert parse_where(None) == {} and parse_where([]) == {}


@pytest.mark.parametrize("text", ["page", "page=", "=3", "page=..", "page~3", "{not json"])
def test_unreadable_filters_are_input_errors(text):
    with pytest.raises(InputError):
        parse_where(text)


@pytest.mark.parametrize("where", [{"page": {"gt": 1}}, {"page": {}}, {"page": object()}, {"": 1}, ["page"]])
def test_check_where_refuses_unknown_shapes(where):
    with pytest.raises(InputError):
        check_where(where)


def test_matches():
    meta = {"source": "a.pdf", "page": 12, "date": "2021-05-01", "modality": "CT"}
    assert matches(meta, parse_where("book=a.pdf; page=10..20; date>=2021-01-01; modality=CT|MR"))
    assert not matches(meta, {"page": {"gte": 13}})
    assert not matches(meta, {"missing": {"gte": 1}})
    assert not matches(meta, {"page": {"gte": "10"}})  # a string bound on a number: no match, no crash
    assert matches(meta, None) and matches(meta, {})
