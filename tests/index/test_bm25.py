"""BM25Index and its tokenizer."""

from __future__ import annotations

import json

import pytest

import medrag.index.bm25 as bm25_module
from medrag.errors import EmptyQueryError, IndexCorrupt, IndexMismatch, IndexNotFound, InputError
from medrag.index.bm25 import BM25Index, stem, tokenize

DOCS = {
    "compact": "Compact bone forms the dense outer shell of bones and is organised in osteons.",
    "spongy": "Spongy bone, also called cancellous bone, is found at the ends of long bones.",
    "ossify": "Endochondral ossification replaces a cartilage model with bone tissue.",
    "heart": "The heart pumps blood through the arteries and veins of the body.",
    "kidney": "The kidneys filter blood and produce urine; renal failure raises creatinine.",
    "fracture": "A fractured femur is treated by surgical fixation or traction.",
}
META = {
    "compact": {"chapter": 6, "topic": "bone"},
    "spongy": {"chapter": 6, "topic": "bone"},
    "ossify": {"chapter": 7, "topic": "bone"},
    "heart": {"chapter": 19, "topic": "cardio"},
    "kidney": {"chapter": 25, "topic": "renal"},
    "fracture": {"chapter": 7, "topic": "bone"},
}


def make_index() -> BM25Index:
    index = BM25Index()
    index.add(list(DOCS), list(DOCS.values()), [META[i] for i in DOCS])
    return index


def ids(hits):
    return [h.id for h in hits]


# -- tokenizer -----------------------------------------------------------------------


def test_tokenize_lowercases_splits_and_drops_stopwords():
    assert tokenize("The Heart, and THE lungs!") == ["heart", "lung"]
    assert tokenize("") == []
    assert tokenize("of the and") == []


def test_tokenize_keeps_digits_and_drops_apostrophes():
    assert tokenize("T1-weighted MRI of C5, 12 mm") == ["t1", "weight", "mri", "c5", "12", "mm"]
    assert tokenize("the patient's knee") == ["patient", "knee"]
    assert tokenize("don’t") == ["dont"]
    assert all("'" not in t for t in tokenize("O'Brien's sign isn't"))


@pytest.mark.parametrize(
    "words",
    [
        ("bone", "bones"),
        ("fracture", "fractured", "fractures", "fracturing"),
        ("ossification", "ossified", "ossify", "ossifies"),
        ("calcification", "calcified"),
        ("treat", "treated", "treating", "treatment"),
        ("dislocation", "dislocated", "dislocate"),
        ("inflammation", "inflamed", "inflammatory"),
        ("study", "studies"),
        ("artery", "arteries"),
        ("mass", "masses"),
        ("vertebra", "vertebrae"),
        ("image", "images", "imaging"),
    ],
)
def test_stemming_conflates_related_forms(words):
    assert len({stem(w) for w in words}) == 1, {w: stem(w) for w in words}


@pytest.mark.parametrize("word", ["ear", "leg", "bus", "t12", "c5", "5cm", "virus", "fibrosis", "mass", "early", "knee"])
def test_stemming_leaves_short_and_special_words(word):
    assert stem(word) == word


@pytest.mark.parametrize("a, b", [("early", "ear"), ("family", "fame"), ("plate", "palate"), ("segment", "seg")])
def test_stemming_keeps_unrelated_words_apart(a, b):
    assert stem(a) != stem(b)


# -- search --------------------------------------------------------------------------


def test_ranking_sanity():
    index = make_index()
    assert ids(index.search("compact bone osteons", k=3))[0] == "compact"
    assert ids(index.search("cancellous bone", k=1)) == ["spongy"]
    assert ids(index.search("renal creatinine", k=5)) == ["kidney"]
    assert ids(index.search("blood", k=5)) == ["heart", "kidney"] or ids(index.search("blood", k=5)) == ["kidney", "heart"]


def test_scores_positive_and_descending():
    hits = make_index().search("bone tissue blood", k=10)
    scores = [h.score for h in hits]
    assert scores == sorted(scores, reverse=True)
    assert all(s > 0 for s in scores)


def test_zero_score_documents_not_returned():
    index = make_index()
    assert index.search("pancreas insulin", k=5) == []
    assert set(ids(index.search("heart", k=10))) == {"heart"}


def test_stopword_only_query_returns_nothing():
    assert make_index().search("the and of", k=5) == []


def test_stemming_matches_across_forms():
    index = make_index()
    assert ids(index.search("ossified", k=1)) == ["ossify"]
    assert ids(index.search("fracture treatment", k=1)) == ["fracture"]
    assert ids(index.search("kidney", k=1)) == ["kidney"]  # document says "kidneys"


def test_common_term_has_positive_idf():
    index = BM25Index()
    index.add(["a", "b", "c"], ["bone marrow", "bone cells", "bone"])
    hits = index.search("bone", k=5)
    assert len(hits) == 3 and all(h.score > 0 for h in hits)
    assert hits[0].id == "c"  # shortest document ranks first at equal tf


def test_ties_broken_by_id():
    index = BM25Index()
    index.add(["z", "a", "m"], ["liver", "liver", "liver"])
    assert ids(index.search("liver", k=3)) == ["a", "m", "z"]


def test_k_limits_results():
    assert len(make_index().search("bone", k=2)) == 2


@pytest.mark.parametrize(
    "where, expected",
    [
        ({"topic": "bone"}, {"compact", "spongy", "ossify", "fracture"}),
        ({"chapter": [7, 25]}, {"ossify", "fracture"}),
        ({"chapter": {"gte": 7, "lte": 19}}, {"ossify", "fracture"}),
        ({"topic": "cardio"}, set()),
    ],
)
def test_filters(where, expected):
    hits = make_index().search("bone fixation tissue", k=10, where=where)
    assert set(ids(hits)) == expected
    assert all(h.metadata == META[h.id] for h in hits)


def test_filter_applied_before_k():
    # the only matching document ranks last: filtering must not cut it off
    hits = make_index().search("bone blood", k=1, where={"topic": "renal"})
    assert ids(hits) == ["kidney"]


def test_delete():
    index = make_index()
    assert index.delete(["compact", "missing"]) == 1
    assert len(index) == 5 and "compact" not in index
    assert "compact" not in ids(index.search("compact bone osteons", k=10))
    assert index.delete(["compact"]) == 0


def test_add_after_search_rebuilds():
    index = make_index()
    assert index.search("pancreas", k=1) == []
    index.add(["pancreas"], ["The pancreas secretes insulin."], [{"topic": "endo"}])
    assert ids(index.search("pancreas insulin", k=1)) == ["pancreas"]


def test_upsert_replaces_text():
    index = make_index()
    index.upsert(["heart"], ["The liver stores glycogen."], [{"topic": "hepatic"}])
    assert len(index) == 6
    assert index.search("heart", k=5) == []
    assert ids(index.search("glycogen", k=1)) == ["heart"]
    assert index.get("heart") == {"topic": "hepatic"}


def test_hit_metadata_is_a_copy():
    index = make_index()
    index.search("heart", k=1)[0].metadata["topic"] = "changed"
    assert index.search("heart", k=1)[0].metadata == META["heart"]


def test_empty_index():
    assert BM25Index().search("bone", k=3) == []


@pytest.mark.parametrize(
    "call, error",
    [
        (lambda ix: ix.add(["compact"], ["again"]), InputError),
        (lambda ix: ix.add(["x", "x"], ["a", "b"]), InputError),
        (lambda ix: ix.add(["x"], ["a", "b"]), InputError),
        (lambda ix: ix.add(["x"], [3]), InputError),
        (lambda ix: ix.add("x", "text"), InputError),
        (lambda ix: ix.add(["x"], ["a"], [{"n": float("inf")}]), InputError),
        (lambda ix: ix.search("   ", k=3), EmptyQueryError),
        (lambda ix: ix.search(None, k=3), InputError),
        (lambda ix: ix.search("bone", k=0), InputError),
    ],
)
def test_bad_input_refused(call, error):
    index = make_index()
    with pytest.raises(error):
        call(index)
    assert len(index) == 6


# -- persistence ---------------------------------------------------------------------


def test_save_load_round_trip(tmp_path):
    index = BM25Index(k1=1.2, b=0.6)
    index.add(list(DOCS), list(DOCS.values()), [META[i] for i in DOCS])
    index.delete(["heart"])
    index.save(tmp_path / "lex")

    manifest = json.loads((tmp_path / "lex" / "manifest.json").read_text())
    assert manifest["format"] == "medrag.bm25"
    assert manifest["tokenizer"] == {"name": bm25_module.TOKENIZER_NAME, "version": bm25_module.TOKENIZER_VERSION}
    assert manifest["params"] == {"k1": 1.2, "b": 0.6}
    assert manifest["count"] == 5
    first = json.loads((tmp_path / "lex" / "documents.jsonl").read_text().splitlines()[0])
    assert first == {"id": "compact", "tokens": tokenize(DOCS["compact"]), "metadata": META["compact"]}

    loaded = BM25Index.load(tmp_path / "lex")
    assert (loaded.k1, loaded.b, len(loaded)) == (1.2, 0.6, 5)
    for query in ("bone tissue", "blood", "fixation"):
        a, b = index.search(query, k=5), loaded.search(query, k=5)
        assert [(h.id, h.metadata) for h in a] == [(h.id, h.metadata) for h in b]
        assert [h.score for h in a] == pytest.approx([h.score for h in b])


def test_load_errors(tmp_path):
    with pytest.raises(IndexNotFound):
        BM25Index.load(tmp_path / "missing")
    make_index().save(tmp_path / "lex")
    manifest = tmp_path / "lex" / "manifest.json"
    data = json.loads(manifest.read_text())

    manifest.write_text(json.dumps({**data, "count": 7}))
    with pytest.raises(IndexCorrupt, match=r"documents\.jsonl"):
        BM25Index.load(tmp_path / "lex")

    manifest.write_text(json.dumps({**data, "tokenizer": {"name": "other", "version": 1}}))
    with pytest.raises(IndexMismatch, match="Re-ingest"):
        BM25Index.load(tmp_path / "lex")

    manifest.write_text("{not json")
    with pytest.raises(IndexCorrupt, match=r"manifest\.json"):
        BM25Index.load(tmp_path / "lex")

    manifest.write_text(json.dumps(data))
    (tmp_path / "lex" / "documents.jsonl").unlink()
    with pytest.raises(IndexCorrupt, match=r"documents\.jsonl"):
        BM25Index.load(tmp_path / "lex")


def test_failed_save_keeps_previous(tmp_path, monkeypatch):
    index = make_index()
    index.save(tmp_path / "lex")
    index.delete(["heart"])

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(bm25_module, "write_json", broken)
    with pytest.raises(OSError):
        index.save(tmp_path / "lex")
    assert len(BM25Index.load(tmp_path / "lex")) == 6
    assert sorted(p.name for p in tmp_path.iterdir()) == ["lex"]
