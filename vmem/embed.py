"""Embedders: text to unit vectors for the page index.

Interface:

- :class:`Embedder` -- the base class: ``dim``, ``name`` and
  ``embed(texts) -> (n, dim) float32`` with every row L2-normalised, and
  ``embed_query(texts)`` for search queries (by default the same). Subclass it
  to plug in your own model; ``name`` is stored beside an index so that an index
  built by one embedder is never queried with another's vectors.
- :class:`HashEmbedder` -- the built-in default: feature hashing of words, word
  pairs and character n-grams. No model file, no network, deterministic across
  processes and machines.
- :class:`OpenAIEmbedder` -- any OpenAI-compatible ``/embeddings`` endpoint
  (OpenAI, vLLM, llama.cpp server, Ollama, LM Studio) through the ``openai`` package.
- :func:`default_embedder` -- what the stores use when given none.

Exceptions::

    EmbedderError(RuntimeError)     misconfiguration (no API key) or a bad reply
"""

from __future__ import annotations

import abc
import functools
import math
import os
from collections import Counter
from collections.abc import Sequence
from typing import Any

import numpy as np

from vmem._fhash import blake2b64_many
from vmem.errors import VmemError

from vmem.text import STOP_WORDS, tokenize

__all__ = ["Embedder", "EmbedderError", "HashEmbedder", "OpenAIEmbedder", "default_embedder"]


class EmbedderError(VmemError, RuntimeError):
    """An embedder cannot produce vectors (misconfigured, or the backend answered badly)."""


def _check_texts(texts: Sequence[str], who: str) -> list[str]:
    if isinstance(texts, str):
        raise TypeError(f"{who}.embed: expected a sequence of str, got a single str (wrap it in a list)")
    out = list(texts)
    for i, t in enumerate(out):
        if not isinstance(t, str):
            raise TypeError(f"{who}.embed: texts[{i}] is {type(t).__name__}, not str")
    return out


class Embedder(abc.ABC):
    """Turns texts into L2-normalised float32 vectors of a fixed dimension.

    Subclasses set :attr:`dim` and :attr:`name` and implement :meth:`embed`.
    ``name`` identifies the model *and* every parameter that changes the vectors;
    two embedders with equal names must give the same vector for the same text.
    """

    dim: int
    name: str

    @abc.abstractmethod
    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Return an ``(len(texts), dim)`` float32 array whose rows have unit L2 norm."""

    def embed_one(self, text: str) -> np.ndarray:
        """Return the ``(dim,)`` vector of a single text."""
        return self.embed([text])[0]

    def embed_query(self, texts: Sequence[str]) -> np.ndarray:
        """Embed search queries (what the stores call for a query, :meth:`embed` for
        what they store). The same as :meth:`embed` unless the model was trained with
        different inputs for the two (e5's ``query: `` / ``passage: ``)."""
        return self.embed(texts)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name} dim={self.dim}>"


def _normalise_rows(m: np.ndarray, fallback: np.ndarray | None = None) -> np.ndarray:
    """L2-normalise rows in place; zero rows become ``fallback`` (or stay zero)."""
    norms = np.linalg.norm(m, axis=1)
    zero = norms == 0
    if zero.any():
        norms[zero] = 1.0
        if fallback is not None:
            m[zero] = fallback
    m /= norms[:, None]
    return m


# ---------------------------------------------------------------- hashing


@functools.lru_cache(maxsize=1 << 16)
def _light_stem(word: str) -> str:
    """Strip the commonest English inflections so that word features of
    "paint", "paints", "painted" and "painting" coincide. Crude on purpose:
    the same function runs on queries and on pages, so consistency matters,
    not linguistic truth; character n-grams cover what it misses."""
    n = len(word)
    if n <= 3 or not word.isalpha():
        return word
    if word.endswith("ies") and n > 4:
        return word[:-3] + "y"
    if word.endswith("sses"):
        return word[:-2]
    if word.endswith("ing") and n > 5:
        word = word[:-3]
    elif word.endswith("ed") and n > 4:
        word = word[:-2]
    elif word.endswith("s") and not word.endswith(("ss", "us", "is")):
        word = word[:-1]
    if len(word) > 3 and word[-1] == word[-2] and word[-1] not in "lsz":
        word = word[:-1]  # "running" -> "runn" -> "run"
    return word


class HashEmbedder(Embedder):
    """Feature-hashing embedder: the built-in default (no model file, no network).

    A text is tokenized like the FTS5 side (:func:`vmem.text.tokenize`), English
    stop words are dropped (unless nothing else is left), and three kinds of
    feature are hashed into ``dim`` signed buckets:

    - each *word*, lightly stemmed, together with its *character n-grams*
      (``n`` in ``ngram_range``, of the word wrapped in boundary markers
      ``<word>``): the word's own vector is the unit-normalised mix of its
      identity (weight ``word_weight``) and its spelling (total weight
      ``char_weight``), so inflections and typos still land near each other
      (the fastText idea, without training);
    - each pair of adjacent content words (weight ``bigram_weight``), so that
      "support group" is closer to "support group" than to "group support".

    Word vectors are summed with sublinear term frequency ``1 + ln(tf)`` and the
    sum is L2-normalised. Each feature is hashed with keyed BLAKE2b (``seed``)
    to a bucket and a sign (signed feature hashing: collisions cancel in
    expectation, so unrelated texts have cosine near 0). Hashing never uses
    Python's per-process salted ``hash()``, so vectors are identical in every
    process. The hashed features of each distinct word are cached, which makes
    repeated vocabulary cheap.

    An empty text (or one with no word) maps to a fixed unit vector, the same
    for every such text.
    """

    def __init__(
        self,
        dim: int = 384,
        *,
        ngram_range: tuple[int, int] = (3, 5),
        word_weight: float = 1.0,
        char_weight: float = 1.0,
        bigram_weight: float = 0.5,
        stem: bool = True,
        stop_words: bool = True,
        seed: int = 0,
        cache_size: int = 65536,
    ) -> None:
        if not isinstance(dim, int) or dim < 8:
            raise ValueError(f"HashEmbedder: dim must be an int >= 8, got {dim!r}")
        lo, hi = ngram_range
        if not (1 <= lo <= hi):
            raise ValueError(f"HashEmbedder: bad ngram_range {ngram_range!r}")
        for label, w in (("word_weight", word_weight), ("char_weight", char_weight), ("bigram_weight", bigram_weight)):
            if not (w >= 0 and math.isfinite(w)):
                raise ValueError(f"HashEmbedder: {label} must be finite and >= 0, got {w!r}")
        if word_weight == 0 and char_weight == 0:
            raise ValueError("HashEmbedder: word_weight and char_weight cannot both be 0")
        self.dim = dim
        self.ngram_range = (lo, hi)
        self.word_weight = float(word_weight)
        self.char_weight = float(char_weight)
        self.bigram_weight = float(bigram_weight)
        self.stem = bool(stem)
        self.stop_words = bool(stop_words)
        self.seed = int(seed)
        self._cache_size = int(cache_size)
        self._key = self.seed.to_bytes(8, "little", signed=False)
        self._pairs: dict[tuple[str, str], tuple[int, float]] = {}
        self._reset_vocab()
        self.name = (
            f"hash-v1/d{dim}/c{lo}-{hi}/w{self.word_weight:g}/ch{self.char_weight:g}"
            f"/b{self.bigram_weight:g}/st{int(self.stem)}/sw{int(self.stop_words)}/s{self.seed}"
        )
        idx, val = self._features(["\x00empty"], [1.0])
        self._empty = np.zeros(dim, dtype=np.float32)
        np.add.at(self._empty, idx, val)

    # -- features

    def _features(self, feats: list[str], weights: list[float]) -> tuple[np.ndarray, np.ndarray]:
        """Hash features to (bucket indices, signed weights)."""
        hv = blake2b64_many(self._key, feats)  # keyed BLAKE2b-64 in C, one call for them all
        idx = ((hv >> np.uint64(1)) % np.uint64(self.dim)).astype(np.int64)
        w = np.asarray(weights, dtype=np.float32)
        return idx, np.where((hv & np.uint64(1)).astype(bool), -w, w)

    def _reset_vocab(self) -> None:
        """Forget every cached word (their features live in flat, growable arrays)."""
        self._vocab: dict[str, int] = {}
        self._fstart = np.zeros(1024, dtype=np.int64)  # per word id: first feature slot
        self._flen = np.zeros(1024, dtype=np.int64)  # per word id: number of features
        self._fcols = np.zeros(16384, dtype=np.int64)  # feature slots: bucket
        self._fvals = np.zeros(16384, dtype=np.float32)  # feature slots: signed weight
        self._fused = 0

    def _word_features(self, token: str) -> tuple[np.ndarray, np.ndarray]:
        """The unit-norm sparse vector of one word: identity plus spelling."""
        feats: list[str] = []
        weights: list[float] = []
        if self.word_weight > 0:
            feats.append("w\x1f" + (_light_stem(token) if self.stem else token))
            weights.append(self.word_weight)
        if self.char_weight > 0:
            marked = f"<{token}>"
            lo, hi = self.ngram_range
            grams = [marked[i : i + n] for n in range(lo, hi + 1) for i in range(len(marked) - n + 1)]
            if not grams:  # shorter than the smallest n: the whole marked word
                grams = [marked]
            w = self.char_weight / math.sqrt(len(grams))
            feats.extend("c\x1f" + g for g in grams)
            weights.extend([w] * len(grams))
        idx, val = self._features(feats, weights)
        # merge colliding buckets, then normalise so every word weighs the same
        uniq, inv = np.unique(idx, return_inverse=True)
        merged = np.zeros(len(uniq), dtype=np.float32)
        np.add.at(merged, inv, val)
        norm = float(np.linalg.norm(merged))
        if norm > 0:
            merged /= norm
        return uniq, merged

    def _learn_words(self, tokens: list[str]) -> None:
        """Cache the features of ``tokens`` (distinct, none cached yet) at once: what
        :meth:`_word_features` computes word by word, with one hashing call and one merge for
        them all (a question's new words cost ~25 us each instead of ~100). Bit for bit the
        same vectors: each word's colliding buckets are summed in the same order (``add.at``
        is sequential), and its norm is taken by the same call on the same float32 values."""
        feats: list[str] = []
        weights: list[float] = []
        owner: list[int] = []
        lo, hi = self.ngram_range
        for n_word, token in enumerate(tokens):
            start = len(feats)
            if self.word_weight > 0:
                feats.append("w\x1f" + (_light_stem(token) if self.stem else token))
                weights.append(self.word_weight)
            if self.char_weight > 0:
                marked = f"<{token}>"
                grams = [marked[i : i + n] for n in range(lo, hi + 1) for i in range(len(marked) - n + 1)]
                if not grams:
                    grams = [marked]
                w = self.char_weight / math.sqrt(len(grams))
                feats.extend("c\x1f" + g for g in grams)
                weights.extend([w] * len(grams))
            owner.extend([n_word] * (len(feats) - start))
        idx, val = self._features(feats, weights)
        # (word, bucket) keys sort by word, then bucket: each word's np.unique, side by side
        keys, inv = np.unique(np.asarray(owner, dtype=np.int64) * self.dim + idx, return_inverse=True)
        merged = np.zeros(len(keys), dtype=np.float32)
        np.add.at(merged, inv, val)
        word_of = keys // self.dim
        cuts = np.flatnonzero(np.diff(word_of)) + 1
        bounds = [0, *cuts.tolist(), len(keys)]
        norms = np.ones(len(tokens), dtype=np.float32)
        for n_word in range(len(tokens)):
            norm = float(np.linalg.norm(merged[bounds[n_word] : bounds[n_word + 1]]))
            if norm > 0:
                norms[n_word] = norm
        merged /= norms[word_of]
        self._store_words(tokens, keys - word_of * self.dim, merged, np.asarray(bounds, dtype=np.int64))

    def _store_words(self, tokens: list[str], cols: np.ndarray, vals: np.ndarray, bounds: np.ndarray) -> None:
        """Put words' features in the cache: word i's are ``cols``/``vals[bounds[i]:bounds[i + 1]]``."""
        first = len(self._vocab)
        need = first + len(tokens)
        if need > len(self._fstart):
            grow = max(need, 2 * len(self._fstart)) - len(self._fstart)
            self._fstart = np.concatenate([self._fstart, np.zeros(grow, dtype=np.int64)])
            self._flen = np.concatenate([self._flen, np.zeros(grow, dtype=np.int64)])
        end = self._fused + len(cols)
        if end > len(self._fcols):
            grow = max(end, 2 * len(self._fcols)) - len(self._fcols)
            self._fcols = np.concatenate([self._fcols, np.zeros(grow, dtype=np.int64)])
            self._fvals = np.concatenate([self._fvals, np.zeros(grow, dtype=np.float32)])
        self._fcols[self._fused : end] = cols
        self._fvals[self._fused : end] = vals
        self._fstart[first:need] = self._fused + bounds[:-1]
        self._flen[first:need] = np.diff(bounds)
        self._fused = end
        self._vocab.update(zip(tokens, range(first, need)))

    def _word_id(self, token: str) -> int:
        """The cache slot of ``token``, computing its features on first sight."""
        wid = self._vocab.get(token)
        if wid is not None:
            return wid
        cols, vals = self._word_features(token)
        self._store_words([token], cols, vals, np.array([0, len(cols)], dtype=np.int64))
        return self._vocab[token]

    def _pairs_of(self, keys: list[tuple[str, str]]) -> dict[tuple[str, str], tuple[int, float]]:
        """(bucket, sign) of each word pair, from the cache or hashed in one batch."""
        cache = self._pairs
        found = {k: cache[k] for k in keys if k in cache}
        new = [k for k in dict.fromkeys(keys) if k not in found]
        if new:
            stem = _light_stem if self.stem else (lambda w: w)
            idx, val = self._features(["b\x1f" + stem(a) + " " + stem(b) for a, b in new], [1.0] * len(new))
            if len(cache) + len(new) > self._cache_size:
                cache.clear()
            for k, i, v in zip(new, idx.tolist(), val.tolist()):
                found[k] = cache[k] = (i, v)
        return found

    def _terms(self, text: str) -> list[str]:
        tokens = tokenize(text)
        if self.stop_words:
            kept = [t for t in tokens if t not in STOP_WORDS]
            return kept or tokens
        return tokens

    # -- public

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Embed ``texts``: an ``(n, dim)`` float32 array of unit rows."""
        texts = _check_texts(texts, "HashEmbedder")
        n, dim = len(texts), self.dim
        if len(self._vocab) > self._cache_size:
            self._reset_vocab()
        # pass 1 (Python): per text, its distinct words with tf, and its hashed word pairs
        rows: list[int] = []
        words: list[int] = []
        tfs: list[int] = []
        prow: list[int] = []
        pcol: list[int] = []
        pval: list[float] = []
        word_id, bw = self._word_id, self.bigram_weight
        pkeys: list[tuple[str, str]] = []
        ptf: list[int] = []
        all_terms = [self._terms(text) for text in texts]
        vocab = self._vocab
        new = [t for t in dict.fromkeys(t for terms in all_terms for t in terms) if t not in vocab]
        if new:
            self._learn_words(new)
        for r, terms in enumerate(all_terms):
            if not terms:
                continue
            for token, tf in Counter(terms).items():
                rows.append(r)
                words.append(word_id(token))
                tfs.append(tf)
            if bw > 0 and len(terms) > 1:
                for pair_key, tf in Counter(zip(terms, terms[1:])).items():
                    prow.append(r)
                    pkeys.append(pair_key)
                    ptf.append(tf)
        if pkeys:
            entries = self._pairs_of(pkeys)
            for pair_key, tf in zip(pkeys, ptf):
                col, sign = entries[pair_key]
                pcol.append(col)
                pval.append(sign * bw * (1.0 + math.log(tf)))
        # pass 2 (numpy): expand every (text, word) entry into the word's feature slots
        out = np.zeros(n * dim, dtype=np.float64)
        if words:
            wid = np.asarray(words, dtype=np.int64)
            lens = self._flen[wid]
            entry = np.repeat(np.arange(len(wid)), lens)
            first = np.cumsum(lens) - lens
            slots = self._fstart[wid][entry] + (np.arange(len(entry)) - first[entry])
            weight = 1.0 + np.log(np.asarray(tfs, dtype=np.float64))
            flat = np.asarray(rows, dtype=np.int64)[entry] * dim + self._fcols[slots]
            out += np.bincount(flat, weights=self._fvals[slots] * weight[entry], minlength=n * dim)
        if pcol:
            flat = np.asarray(prow, dtype=np.int64) * dim + np.asarray(pcol, dtype=np.int64)
            out += np.bincount(flat, weights=np.asarray(pval), minlength=n * dim)
        return _normalise_rows(out.reshape(n, dim).astype(np.float32), self._empty)


# ---------------------------------------------------------------- OpenAI

#: Output sizes of well-known OpenAI embedding models (others are probed once).
_KNOWN_DIMS = {"text-embedding-3-small": 1536, "text-embedding-3-large": 3072, "text-embedding-ada-002": 1536}


class OpenAIEmbedder(Embedder):
    """Embeddings from any OpenAI-compatible ``/embeddings`` endpoint.

    ``api_key`` defaults to ``$OPENAI_API_KEY`` and ``base_url`` to the
    ``openai`` package's default (``$OPENAI_BASE_URL`` or OpenAI itself). A
    local server that needs no key still needs a non-empty placeholder
    (``api_key="local"``), because the ``openai`` client insists on one.
    Texts are sent in batches of ``batch_size``; the reply's vectors are put
    back in input order (by their ``index``) and L2-normalised. ``dimensions``
    is passed to the API (models that support shortening, such as
    text-embedding-3-*); ``dim`` is then known without a call, otherwise it is
    probed with one request on first use for models not known here.
    """

    def __init__(
        self,
        model: str = "text-embedding-3-small",
        *,
        api_key: str | None = None,
        base_url: str | None = None,
        dimensions: int | None = None,
        batch_size: int = 256,
        timeout: float = 60.0,
        max_retries: int = 2,
        client: Any = None,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"OpenAIEmbedder: batch_size must be >= 1, got {batch_size}")
        if dimensions is not None and dimensions < 1:
            raise ValueError(f"OpenAIEmbedder: dimensions must be >= 1, got {dimensions}")
        self.model = model
        self.dimensions = dimensions
        self.batch_size = batch_size
        if client is None:
            key = api_key if api_key is not None else os.environ.get("OPENAI_API_KEY")
            if not key:
                raise EmbedderError(
                    "OpenAIEmbedder: no API key: pass api_key=... or set OPENAI_API_KEY "
                    "(a local server without auth still needs a placeholder such as api_key='local')"
                )
            import openai  # imported here: the package is only needed for this embedder

            client = openai.OpenAI(api_key=key, base_url=base_url, timeout=timeout, max_retries=max_retries)
        self._client = client
        self._dim: int | None = dimensions if dimensions is not None else _KNOWN_DIMS.get(model)

    @property
    def dim(self) -> int:  # type: ignore[override]
        """Vector size (probed with one request when the model is unknown)."""
        if self._dim is None:
            self._dim = int(self._request(["dimension probe"]).shape[1])
        return self._dim

    @property
    def name(self) -> str:  # type: ignore[override]
        return f"openai/{self.model}/d{self.dim}"

    def _request(self, batch: list[str]) -> np.ndarray:
        kwargs: dict[str, Any] = {"model": self.model, "input": batch, "encoding_format": "float"}
        if self.dimensions is not None:
            kwargs["dimensions"] = self.dimensions
        try:
            reply = self._client.embeddings.create(**kwargs)
        except Exception as e:  # openai.APIError and friends, connection errors
            raise EmbedderError(f"OpenAIEmbedder: embeddings request for model {self.model!r} failed: {e}") from e
        data = sorted(reply.data, key=lambda d: d.index)
        if len(data) != len(batch):
            raise EmbedderError(f"OpenAIEmbedder: asked for {len(batch)} embeddings, got {len(data)}")
        try:
            m = np.asarray([d.embedding for d in data], dtype=np.float32)
        except (TypeError, ValueError) as e:
            raise EmbedderError(f"OpenAIEmbedder: malformed embeddings in reply: {e}") from e
        if m.ndim != 2 or not np.isfinite(m).all():
            raise EmbedderError("OpenAIEmbedder: malformed embeddings in reply (ragged or non-finite)")
        return m

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Embed ``texts`` with the remote model: ``(n, dim)`` float32 unit rows."""
        texts = _check_texts(texts, "OpenAIEmbedder")
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        # the API rejects empty strings; a blank embeds like a single space
        texts = [t if t.strip() else " " for t in texts]
        parts = [self._request(texts[i : i + self.batch_size]) for i in range(0, len(texts), self.batch_size)]
        m = np.concatenate(parts, axis=0)
        if self._dim is None:
            self._dim = int(m.shape[1])
        if m.shape[1] != self._dim:
            raise EmbedderError(f"OpenAIEmbedder: expected vectors of size {self._dim}, got {m.shape[1]}")
        if (np.linalg.norm(m, axis=1) == 0).any():
            raise EmbedderError("OpenAIEmbedder: the server returned an all-zero embedding")
        return _normalise_rows(m)


def default_embedder() -> Embedder:
    """The embedder used when none is given: a :class:`HashEmbedder` of dimension 384."""
    return HashEmbedder()
