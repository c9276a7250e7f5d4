"""Text embedders: the hashing fake (fast) and the packaged MiniLM model (slow)."""

from __future__ import annotations

import numpy as np
import pytest

from medrag.embed.base import EmbedderInfo, TextEmbedder
from medrag.embed.text import DEFAULT_TEXT_MODEL, SentenceTransformerEmbedder, make_embedder
from medrag.testing.fakes import HashingEmbedder

TEXTS = [
    "Compact bone is the denser, stronger of the two types of bone tissue.",
    "Spongy bone contains osteocytes housed in lacunae.",
    "The sinoatrial node is the pacemaker of the heart.",
]


def cos(a: np.ndarray, b: np.ndarray) -> float:
    return float(a @ b)


# --- HashingEmbedder ----------------------------------------------------------


def test_hashing_satisfies_the_protocol():
    assert isinstance(HashingEmbedder(32), TextEmbedder)


def test_hashing_shape_dtype_and_unit_norms():
    e = HashingEmbedder(dim=64)
    vectors = e.embed_texts(TEXTS)
    assert vectors.shape == (3, 64)
    assert vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, rtol=1e-5)
    assert e.embed_queries(["one query"]).shape == (1, 64)


def test_hashing_is_deterministic_across_instances():
    a = HashingEmbedder(128).embed_texts(TEXTS)
    b = HashingEmbedder(128).embed_texts(TEXTS)
    np.testing.assert_array_equal(a, b)
    # batching does not matter: each text is embedded on its own
    np.testing.assert_array_equal(HashingEmbedder(128).embed_texts(TEXTS[1:2])[0], a[1])


def test_hashing_known_vector_does_not_drift():
    """sha1 buckets, not Python's salted hash(): the same vector in every process."""
    v = HashingEmbedder(16).embed_texts(["bone"])[0]
    assert np.count_nonzero(v) == 1
    assert abs(v).max() == pytest.approx(1.0)
    assert int(np.flatnonzero(v)[0]) == int.from_bytes(__import__("hashlib").sha1(b"bone").digest()[:4], "little") % 16


def test_hashing_queries_equal_passages():
    e = HashingEmbedder(64)
    np.testing.assert_array_equal(e.embed_queries(TEXTS), e.embed_texts(TEXTS))


def test_hashing_is_case_and_punctuation_insensitive():
    e = HashingEmbedder(64)
    a, b = e.embed_texts(["Heart rate, SLOW!", "heart rate slow"])
    np.testing.assert_allclose(a, b)


def test_hashing_similar_texts_are_closer_than_unrelated_ones():
    e = HashingEmbedder(256)
    query, similar, unrelated = e.embed_texts(
        [
            "compact bone tissue is dense",
            "dense compact bone tissue forms the shaft",
            "the football world cup final was played in paris",
        ]
    )
    assert cos(query, similar) > 0.4
    assert cos(query, similar) > cos(query, unrelated) + 0.3


def test_hashing_empty_inputs():
    e = HashingEmbedder(32)
    assert e.embed_texts([]).shape == (0, 32)
    blank = e.embed_texts([""])
    assert blank.shape == (1, 32)
    assert not blank.any()  # no words, no direction (and no NaN from dividing by zero)


def test_hashing_info_and_name():
    e = HashingEmbedder(64)
    info = e.info()
    assert info == EmbedderInfo(name="hashing:64", fingerprint="hashing-sha1-v1-64", dim=64)
    assert HashingEmbedder(64).info() == info
    assert HashingEmbedder(128).info().fingerprint != info.fingerprint
    assert HashingEmbedder(64, name="custom").info().name == "custom"
    assert EmbedderInfo.from_dict(info.to_dict()) == info


def test_hashing_refuses_tiny_dimensions():
    with pytest.raises(ValueError, match="at least 8"):
        HashingEmbedder(4)


# --- make_embedder --------------------------------------------------------------


def test_make_embedder_hashing_with_dim():
    e = make_embedder("hashing:64")
    assert isinstance(e, HashingEmbedder)
    assert e.dim == 64
    assert e.embed_texts(["x y"]).shape == (1, 64)


def test_make_embedder_hashing_default_dim():
    assert make_embedder("hashing:").dim == 256


def test_hashing_name_round_trips_through_make_embedder():
    """An index stores the embedder's name; make_embedder(name) must rebuild the same embedder."""
    original = HashingEmbedder(96)
    again = make_embedder(original.info().name)
    assert again.info() == original.info()


def test_make_embedder_model_spec_is_lazy_sentence_transformer(tmp_path):
    e = make_embedder("sentence-transformers:" + str(tmp_path), device="cpu")
    assert isinstance(e, SentenceTransformerEmbedder)
    assert e.model_spec == str(tmp_path)
    assert e.device_request == "cpu"
    assert e._model is None

    default = make_embedder(DEFAULT_TEXT_MODEL)
    assert isinstance(default, SentenceTransformerEmbedder)
    assert default.model_spec == "all-MiniLM-L6-v2"
    assert default._model is None

    by_path = make_embedder(str(tmp_path))  # "/..." never names a registry entry
    assert isinstance(by_path, SentenceTransformerEmbedder) and by_path.model_spec == str(tmp_path)


def test_sentence_transformer_construction_loads_nothing():
    e = SentenceTransformerEmbedder(device="cpu", query_prefix="query: ", passage_prefix="passage: ")
    assert e._model is None
    assert e._resolved is None  # not even resolved
    assert e.name == DEFAULT_TEXT_MODEL
    assert "all-MiniLM-L6-v2" in repr(e) and "cpu" in repr(e)


def test_sentence_transformer_resolves_packaged_default_without_loading():
    e = SentenceTransformerEmbedder()
    assert e.resolved.origin == "package"
    assert e._model is None


# --- the real packaged MiniLM (slow) ----------------------------------------------


@pytest.fixture(scope="module")
def minilm():
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HF_HUB_OFFLINE", "1")
        embedder = SentenceTransformerEmbedder()
        assert embedder._model is None  # lazy: nothing loaded by the constructor
        embedder.setup()
        yield embedder


@pytest.mark.slow
def test_minilm_is_lazy_until_first_use(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    e = SentenceTransformerEmbedder()
    assert e._model is None
    e.embed_texts(["bradycardia"])
    assert e._model is not None


@pytest.mark.slow
def test_minilm_dim_shape_and_unit_norms(minilm):
    assert minilm.dim == 384
    vectors = minilm.embed_texts(TEXTS)
    assert vectors.shape == (3, 384)
    assert vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, rtol=1e-4)
    assert minilm.embed_queries(["What is compact bone?"]).shape == (1, 384)


@pytest.mark.slow
def test_minilm_medical_paraphrase_is_closer_than_unrelated(minilm):
    heart_attack, mi, football = minilm.embed_texts(["heart attack", "myocardial infarction", "football world cup"])
    assert cos(heart_attack, mi) > 0.45
    assert cos(heart_attack, mi) > cos(heart_attack, football) + 0.2


@pytest.mark.slow
def test_minilm_is_deterministic(minilm):
    a = minilm.embed_texts(TEXTS)
    b = minilm.embed_texts(list(reversed(TEXTS)))[::-1]
    np.testing.assert_allclose(a, b, atol=1e-5)


@pytest.mark.slow
def test_minilm_info_fingerprint_is_stable_across_instances(minilm, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    info = minilm.info()
    assert info.name == "all-MiniLM-L6-v2"
    assert info.dim == 384
    assert len(info.fingerprint) == 16 and not info.fingerprint.startswith("hub:")
    assert SentenceTransformerEmbedder().info() == info


@pytest.mark.slow
def test_minilm_embeds_empty_list(minilm):
    out = minilm.embed_texts([])
    assert out.shape == (0, 384)
    assert out.dtype == np.float32


@pytest.mark.slow
def test_minilm_query_prefix_changes_query_vectors_only(minilm, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    prefixed = SentenceTransformerEmbedder(query_prefix="query: ")
    prefixed._model = minilm._model  # share the loaded weights
    text = ["slow heart rate"]
    np.testing.assert_allclose(prefixed.embed_texts(text), minilm.embed_texts(text), atol=1e-5)
    assert not np.allclose(prefixed.embed_queries(text), minilm.embed_queries(text), atol=1e-3)


@pytest.mark.slow
def test_minilm_max_words(minilm):
    assert 100 < minilm.max_words < 400
