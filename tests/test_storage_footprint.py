"""The archival store's footprint (issue 21): embeddings stored as float16 (schema 5), the
migration of older stores, and what it must not change (search results, checksums, verify)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import numpy as np
import pytest

from old_schema import float32_embeddings
from vmem.embed import HashEmbedder
from vmem.storage import MemoryDir, vecblob
from vmem.storage._db import SCHEMA_VERSION, record_crc
from vmem.storage.errors import CorruptStoreError
from vmem.storage.memdir import DB_NAME

TEXTS = [f"Note {i}: the {['cat', 'dog', 'kid', 'painter', 'pilot'][i % 5]} number {i} went to "
         f"{['Paris', 'the lake', 'a concert', 'school'][i % 4]} on day {i % 7}" for i in range(120)]
QUERIES = ["where did the painter go", "dog at the lake", "pilot concert day 3", "school"]


def _stored(path: Path) -> dict[int, bytes]:
    con = sqlite3.connect(path / DB_NAME)
    try:
        return dict(con.execute("SELECT id, embedding FROM passages"))
    finally:
        con.close()


def _as_schema_4(path: Path) -> None:
    """Make a store look as schema 4 wrote it: float32 embeddings, valid checksums."""
    con = sqlite3.connect(path / DB_NAME)
    con.create_function("vmem_crc", -1, record_crc, deterministic=True)
    float32_embeddings(con)  # the update trigger recomputes each row's checksum
    con.execute("PRAGMA user_version=4")
    con.commit()
    con.close()


def _ranked(s: MemoryDir) -> list[list[int]]:
    return [[h.item.id for h in s.archival.search(q, page_size=10).hits] for q in QUERIES]


def test_new_stores_keep_float16_of_the_unit_vector(tmp_path: Path) -> None:
    emb = HashEmbedder()
    with MemoryDir.open(tmp_path / "a") as s:
        ids = [i for ids in s.archival.insert_many(TEXTS) for i in ids]
        assert s.verify() == []
    blobs = _stored(tmp_path / "a")
    assert len(blobs) == len(TEXTS) and all(len(b) == 2 * emb.dim for b in blobs.values())
    got = vecblob.decode_many([blobs[i & ((1 << 56) - 1)] for i in ids], emb.dim)
    want = emb.embed(TEXTS)
    assert np.abs(got - want).max() <= 2.0 ** -11  # float16's rounding of components in [-1, 1]
    assert np.allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-3)


def test_the_index_holds_the_stored_vectors_so_a_rebuild_ranks_the_same(tmp_path: Path) -> None:
    with MemoryDir.open(tmp_path / "a") as s:
        s.archival.insert_many(TEXTS)
        live = _ranked(s)
        sample = s.archival.index.ids()[:20]
        from_index = s.archival.index.get(sample)
        _, from_db = s.archival._load_vectors(sample)
        unit = from_db / np.linalg.norm(from_db, axis=1, keepdims=True)  # hnswlib normalises what it gets
        assert np.allclose(from_index, unit, atol=1e-6)
    (tmp_path / "a" / "archival.idx").unlink()
    with MemoryDir.open(tmp_path / "a") as s:
        assert s.archival.index_status == "rebuilt"
        assert _ranked(s) == live


def test_a_schema_4_store_is_migrated_to_float16(tmp_path: Path) -> None:
    with MemoryDir.open(tmp_path / "a") as s:
        s.archival.insert_many(TEXTS)
        before = _ranked(s)
    with MemoryDir.open(tmp_path / "a") as s:  # the index file as schema 4 wrote it: every vector in it
        s.archival.index.save(tmp_path / "a" / "archival.idx")
    half = _stored(tmp_path / "a")
    _as_schema_4(tmp_path / "a")
    old = _stored(tmp_path / "a")
    assert all(len(b) == 4 * 384 for b in old.values())
    old_size = (tmp_path / "a" / DB_NAME).stat().st_size
    with MemoryDir.open(tmp_path / "a") as s:
        # the migration gave the freed half of every embedding back to the disk (VACUUM)
        assert (tmp_path / "a" / DB_NAME).stat().st_size <= old_size - len(TEXTS) * 384 * 2 * 0.8
        assert s.archival.index_status == "loaded"  # the old index file is still good
        assert s.archival.index.file_vectors == "all"
        assert _ranked(s) == before
        assert s.verify() == []  # every checksum follows the new blobs
    after = _stored(tmp_path / "a")
    assert after == half  # float32 -> float16 gives the bytes a new store writes
    with MemoryDir.open(tmp_path / "a") as s:  # the old index file was rewritten, without its vectors
        assert s.archival.index_status == "loaded" and s.archival.index.file_vectors == "deleted"
    con = sqlite3.connect(tmp_path / "a" / DB_NAME)
    assert con.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 5
    con.close()


def test_the_migration_leaves_a_damaged_row_as_it_is(tmp_path: Path) -> None:
    with MemoryDir.open(tmp_path / "a") as s:
        ids = [i for ids in s.archival.insert_many(TEXTS) for i in ids]
    _as_schema_4(tmp_path / "a")
    victim = ids[7] & ((1 << 56) - 1)
    con = sqlite3.connect(tmp_path / "a" / DB_NAME)
    con.execute("UPDATE passages SET crc = crc + 1 WHERE id = ?", (victim,))  # damage: no trigger fires
    con.commit()
    con.close()
    (tmp_path / "a" / "archival.idx").unlink()  # the rebuild reads every stored vector
    with MemoryDir.open(tmp_path / "a") as s:
        problems = s.verify()
        assert any("passages" in p and "checksum" in p for p in problems), problems
        assert any("vector index" in p for p in problems), problems  # the unreadable one is left out
        assert len(s.archival.index) == len(TEXTS) - 1
        assert s.archival.get(ids[7]).text == TEXTS[7]  # nothing is lost
        assert s.archival.search("painter", page_size=5).hits  # the rest still searches
    assert len(_stored(tmp_path / "a")[victim]) == 4 * 384  # not converted (it would hide the damage)


def test_decoding_names_a_blob_of_the_wrong_size() -> None:
    with pytest.raises(CorruptStoreError, match="not 4 float16 values"):
        vecblob.decode_many([b"\x00" * 8, b"\x00" * 6], 4)


def test_encoding_normalises_and_never_overflows() -> None:
    v = np.array([[3e5, 4e5, 0.0, 0.0]], dtype=np.float32)  # past float16's largest value
    got = vecblob.decode_many(vecblob.encode_many(v), 4)
    assert np.allclose(got, [[0.6, 0.8, 0.0, 0.0]], atol=1e-3)
    assert np.array_equal(vecblob.rounded(v), got)
    back = vecblob.decode_many(vecblob.encode_many(got, normalise=False), 4)
    assert np.array_equal(back, got)  # a copy of decoded vectors comes back bit for bit


# ---------------------------------------------------------------- the index file without vectors


@pytest.mark.parametrize("kind", ["hnsw", "exact"])
@pytest.mark.parametrize("n", [0, 1, 300])
def test_an_index_saved_without_vectors_loads_them_back_and_answers_the_same(tmp_path: Path, kind: str,
                                                                              n: int) -> None:
    from vmem.index import ExactIndex, IndexMismatchError, PageIndex

    cls = PageIndex if kind == "hnsw" else ExactIndex
    rng = np.random.default_rng(n)
    vecs = vecblob.rounded(rng.standard_normal((max(n, 1), 32)).astype(np.float32))[:n]
    ids = np.arange(1, n + 1, dtype=np.uint64)
    index = cls(32, M=8) if kind == "hnsw" else cls(32)
    if n:
        index.add(ids, vecs)
        index.delete(ids[1::7])  # deleted pages: the graph still walks through them
    index.save(tmp_path / "slim.idx", vectors=False)
    index.save(tmp_path / "full.idx")
    saved = (tmp_path / "full.idx").stat().st_size - (tmp_path / "slim.idx").stat().st_size
    assert saved >= len(index) * 4 * 32 - 16 * 2 * 32 - 300  # every live vector, less the probe (and header)
    asked: list[np.ndarray] = []

    def source(want: np.ndarray) -> np.ndarray:
        asked.append(want)
        return vecs[want.astype(np.int64) - 1]

    again = cls.load(tmp_path / "slim.idx", vectors=source)
    assert sorted(again.ids().tolist()) == sorted(index.ids().tolist())
    if n:
        assert set(np.concatenate(asked).tolist()) == set(index.ids().tolist())  # live pages only
        q = vecs[:20]
        a, b = index.query(q, 10), again.query(q, 10)
        assert np.array_equal(a[0], b[0]) and np.allclose(a[1], b[1], atol=1e-5)
        with pytest.raises(IndexMismatchError, match="vectors="):
            cls.load(tmp_path / "slim.idx")
        with pytest.raises(IndexMismatchError, match="not those the graph was built over"):
            cls.load(tmp_path / "slim.idx", vectors=lambda w: vecblob.rounded(
                rng.standard_normal((len(w), 32)).astype(np.float32)))

        def missing(want: np.ndarray) -> np.ndarray:
            raise KeyError(int(want[0]))

        with pytest.raises(IndexMismatchError, match="no vector"):
            cls.load(tmp_path / "slim.idx", vectors=missing)


def test_the_store_writes_the_index_without_vectors(tmp_path: Path) -> None:
    with MemoryDir.open(tmp_path / "a") as s:
        s.archival.insert_many(TEXTS)
        before = _ranked(s)
    size = (tmp_path / "a" / "archival.idx").stat().st_size
    assert size < len(TEXTS) * 384 * 4 / 4  # a float32 copy alone would be 4x this
    with MemoryDir.open(tmp_path / "a") as s:
        assert s.archival.index_status == "loaded"
        assert _ranked(s) == before
        assert s.verify() == []


def test_an_agent_an_older_vmem_wrote_is_an_agent_and_opens_upgraded(tmp_path: Path) -> None:
    # `vmem mcp DIR` on an agent the previous release wrote (schema 4) said "DIR is not empty and
    # holds no vmem agent": Memory.exists read it read-only, which refuses an older schema
    from vmem.app.cli import main
    from vmem.kernel import Memory

    with Memory.create(tmp_path / "a", system="s", blocks={"human": "bike lock code 4812"}) as m:
        m.archival_insert("Ana parks her bike by the station")
        digest = m.digest()
    _as_schema_4(tmp_path / "a")
    assert Memory.exists(tmp_path / "a")
    assert main(["check", str(tmp_path / "a")]) != 0  # read-only: says it is older, changes nothing
    from vmem.app.mcp_server import MemoryService
    assert "core_memory_append" in {t["name"] for t in MemoryService(tmp_path / "a").tools()}  # upgrades it
    with Memory.open(tmp_path / "a") as m:
        assert m.block("human").value == "bike lock code 4812" and m.digest() == digest
    assert main(["check", str(tmp_path / "a")]) == 0


@pytest.mark.parametrize("scan", [False, True])
def test_a_reopened_store_holds_bit_for_bit_the_vectors_the_live_index_held(tmp_path: Path, scan: bool,
                                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """The open widens the stored float16 and scales each vector as hnswlib did when it was added
    (csrc/half.c), so a loaded graph answers with exactly the live one's distances; both ways the
    load reads the vectors (``scan``: one pass over the table, as for a large store)."""
    if scan:
        import vmem.storage.sqlite as sqlite_store

        monkeypatch.setattr(sqlite_store, "_BATCH", 16)
    with MemoryDir.open(tmp_path / "a") as s:
        ids = [i for batch in s.archival.insert_many(TEXTS) for i in batch]
        s.archival.delete(ids[3::9])  # deleted pages stay in the graph as waypoints
        live = s.archival.index.ids()
        held = s.archival.index.get(live)
        dists = s.archival.index.query(held[:10], 10)
    with MemoryDir.open(tmp_path / "a") as s:
        assert s.archival.index_status == "loaded"
        assert np.array_equal(s.archival.index.ids(), live)
        assert np.array_equal(s.archival.index.get(live).view(np.uint32), held.view(np.uint32))
        again = s.archival.index.query(held[:10], 10)
        assert np.array_equal(again[0], dists[0]) and np.array_equal(again[1], dists[1])
