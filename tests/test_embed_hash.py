"""The C keyed BLAKE2b-64 (csrc/fhash.c) against hashlib, and the embedder's vectors unchanged by it."""

from __future__ import annotations

import hashlib

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from vmem._fhash import blake2b64_many
from vmem.embed import HashEmbedder


@settings(max_examples=200, deadline=None)
@given(st.lists(st.text(max_size=300), max_size=20), st.binary(min_size=1, max_size=64))
def test_blake2b64_many_equals_hashlib(items: list[str], key: bytes) -> None:
    got = blake2b64_many(key, items)
    want = [int.from_bytes(hashlib.blake2b(s.encode("utf-8", "surrogatepass"), digest_size=8, key=key).digest(),
                           "little") for s in items]
    assert got.tolist() == want


def _reference_features(e: HashEmbedder, feats: list[str], weights: list[float]) -> tuple[np.ndarray, np.ndarray]:
    """The feature hashing as it was written before the C batch (one hashlib call each)."""
    idx = np.empty(len(feats), dtype=np.int64)
    val = np.empty(len(feats), dtype=np.float32)
    for i, (f, w) in enumerate(zip(feats, weights)):
        h = int.from_bytes(hashlib.blake2b(f.encode("utf-8", "surrogatepass"), digest_size=8, key=e._key).digest(),
                           "little")
        idx[i] = (h >> 1) % e.dim
        val[i] = -w if h & 1 else w
    return idx, val


def test_vectors_are_those_of_the_per_feature_hashing(monkeypatch) -> None:
    texts = ["The quick brown fox jumps over the lazy dog.", "Caroline: I went to the LGBTQ support group!",
             "naïve café déjà vu", "", "?!", "running runs ran runner " * 5]
    fast = HashEmbedder(dim=64, seed=7).embed(texts)
    slow_e = HashEmbedder(dim=64, seed=7)
    monkeypatch.setattr(slow_e, "_features", lambda f, w: _reference_features(slow_e, f, w))
    assert np.array_equal(fast, slow_e.embed(texts))


def test_new_words_learnt_together_give_the_vectors_of_one_at_a_time() -> None:
    """embed() learns a batch's new words in one pass (_learn_words): bit for bit the vectors
    of the word-by-word path, for words of every length, colliding buckets (a small dim) and
    words met again in later calls."""
    rng = np.random.default_rng(11)
    letters = list("abcdefghijklmnopqrstuvwxyzéüß") + ["ab", "x"]
    words = ["".join(rng.choice(letters, size=int(rng.integers(1, 14)))) for _ in range(600)]
    texts = [" ".join(rng.choice(words, size=int(rng.integers(0, 12)))) for _ in range(300)]
    texts += ["a", "I am", "the the the", "running runs ran", ""]
    for dim in (16, 384):
        batched = HashEmbedder(dim=dim, seed=3)
        single = HashEmbedder(dim=dim, seed=3)
        single._learn_words = lambda toks, e=single: [e._word_id(t) for t in toks]  # type: ignore[method-assign]
        for lo in range(0, len(texts), 37):  # some words new in each call, some known
            assert np.array_equal(batched.embed(texts[lo : lo + 37]), single.embed(texts[lo : lo + 37]))
        assert batched._vocab.keys() == single._vocab.keys()
        assert np.array_equal(batched.embed(texts), single.embed(texts))
