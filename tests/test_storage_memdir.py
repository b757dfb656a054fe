"""MemoryDir: opening rules, locking, foreign/corrupt files, the index cache, blocks, state, transactions."""

from __future__ import annotations

import datetime as dt
import os
import sqlite3
from pathlib import Path

import numpy as np
import pytest

from vmem import HashEmbedder, PageKind, make_page_id
from vmem.storage import (
    BlockExistsError,
    BlockLimitError,
    ConfigMismatchError,
    CorruptStoreError,
    ForeignFileError,
    MemoryDir,
    NotFoundError,
    ReadOnlyBlockError,
    SchemaVersionError,
    StoreClosedError,
    StoreLockedError,
    StoreNotFoundError,
    VmemStorageError,
)
from vmem.storage import sqlite as sqlite_backend
from vmem.storage.memdir import DB_NAME, INDEX_NAME

UTC = dt.timezone.utc
FACTS = [
    "The Nile is the longest river in Africa.",
    "Mount Fuji is the highest mountain in Japan.",
    "Honey never spoils if it is sealed.",
    "Octopuses have three hearts and blue blood.",
    "The Great Wall of China is visible from low orbit only with difficulty.",
    "Bananas are berries, botanically speaking.",
]


def make_store(path: Path, **kw: object) -> list[int]:
    with MemoryDir.open(path, **kw) as s:  # type: ignore[arg-type]
        return [i[0] for i in s.archival.insert_many(FACTS, tags=["fact"])]


def top_ids(s: MemoryDir, q: str) -> list[int]:
    return [p.id for p in s.archival.search(q, mode="vector", page_size=3).items]


# -- opening


def test_create_false_needs_a_store(tmp_path: Path) -> None:
    with pytest.raises(StoreNotFoundError):
        MemoryDir.open(tmp_path / "nothing", create=False)
    assert not (tmp_path / "nothing").exists()
    (tmp_path / "file").write_text("x")
    with pytest.raises(ForeignFileError, match="not a memory directory"):
        MemoryDir.open(tmp_path / "file")


def test_exclusive_lock_and_close(tmp_path: Path) -> None:
    s = MemoryDir.open(tmp_path / "a")
    with pytest.raises(StoreLockedError):
        MemoryDir.open(tmp_path / "a")
    mid = s.recall.append("user", "x")
    s.close()
    s.close()  # idempotent
    assert s.closed
    for call in (lambda: s.recall.append("user", "y"), lambda: s.recall.get(mid), lambda: s.blocks.all(),
                 lambda: s.archival.search("x"), lambda: s.state.get("k")):
        with pytest.raises(StoreClosedError):
            call()
    with MemoryDir.open(tmp_path / "a", create=False) as s2:  # the lock was released
        assert s2.recall.get(mid).content == "x"


def test_bad_options(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        MemoryDir.open(tmp_path / "a", durability="sometimes")
    with pytest.raises(ValueError):
        MemoryDir.open(tmp_path / "b", archival="postgres")
    with pytest.raises(ValueError):
        MemoryDir.open(tmp_path / "c", index="lsh")
    with MemoryDir.open(tmp_path / "a"):  # nothing was left locked by the failures
        pass


def test_foreign_files_give_clear_errors(tmp_path: Path) -> None:
    d = tmp_path / "random"
    d.mkdir()
    (d / DB_NAME).write_bytes(os.urandom(8192))
    with pytest.raises(ForeignFileError, match="not an SQLite database"):
        MemoryDir.open(d)
    d = tmp_path / "other-app"
    d.mkdir()
    con = sqlite3.connect(d / DB_NAME)
    con.execute("CREATE TABLE invoices(id INTEGER PRIMARY KEY, total REAL)")
    con.commit()
    con.close()
    with pytest.raises(ForeignFileError, match="another application"):
        MemoryDir.open(d)
    con = sqlite3.connect(d / DB_NAME)
    con.execute("PRAGMA application_id=1234")
    con.commit()
    con.close()
    with pytest.raises(ForeignFileError, match="0x000004d2"):
        MemoryDir.open(d)
    with MemoryDir.open(d / "inner"):  # the lock of a refused open was released
        pass


def test_newer_schema_version_is_refused(tmp_path: Path) -> None:
    make_store(tmp_path / "a")
    con = sqlite3.connect(tmp_path / "a" / DB_NAME)
    con.execute("PRAGMA user_version=99")
    con.commit()
    con.close()
    with pytest.raises(SchemaVersionError, match="version 99"):
        MemoryDir.open(tmp_path / "a")


def test_an_older_schema_read_only_says_older_and_how_to_upgrade(tmp_path: Path) -> None:
    # `vmem inspect` of a store written before schema 5 said "(written by a newer vmem?)"
    make_store(tmp_path / "a")
    con = sqlite3.connect(tmp_path / "a" / DB_NAME)
    con.execute("PRAGMA user_version=4")
    con.commit()
    con.close()
    with pytest.raises(SchemaVersionError) as raised:
        MemoryDir.open(tmp_path / "a", read_only=True)
    assert "older vmem" in str(raised.value) and "newer" not in str(raised.value)
    from vmem.app.cli import _describe
    assert "newer" not in _describe(raised.value)[0]


def test_missing_table_is_corruption(tmp_path: Path) -> None:
    make_store(tmp_path / "a")
    con = sqlite3.connect(tmp_path / "a" / DB_NAME)
    con.execute("DROP TABLE blocks")
    con.commit()
    con.close()
    with pytest.raises(CorruptStoreError, match="blocks"):
        MemoryDir.open(tmp_path / "a")


def test_truncated_header_is_corruption(tmp_path: Path) -> None:
    make_store(tmp_path / "a")
    db = tmp_path / "a" / DB_NAME
    db.write_bytes(db.read_bytes()[:60])
    with pytest.raises(CorruptStoreError, match="truncated"):
        MemoryDir.open(tmp_path / "a")


def test_damaged_pages_give_a_storage_error_not_a_traceback(tmp_path: Path) -> None:
    with MemoryDir.open(tmp_path / "a") as s:
        s.recall.append_many([("user", f"message number {i} " + "filler " * 40) for i in range(400)])
    db = tmp_path / "a" / DB_NAME
    raw = bytearray(db.read_bytes())
    assert len(raw) > 40 * 4096
    rng = np.random.default_rng(7)
    for page in range(2, len(raw) // 4096):  # scribble over every page but the first
        raw[page * 4096 + 8 : page * 4096 + 4000] = rng.integers(0, 256, 3992, dtype=np.uint8).tobytes()
    db.write_bytes(bytes(raw))
    with pytest.raises(CorruptStoreError):
        with MemoryDir.open(tmp_path / "a", verify=True) as s:
            s.recall.search("message")


# -- the index cache


def test_index_is_saved_on_close_and_loaded(tmp_path: Path) -> None:
    ids = make_store(tmp_path / "a")
    assert (tmp_path / "a" / INDEX_NAME).exists()
    with MemoryDir.open(tmp_path / "a") as s:
        assert s.archival.index_status == "loaded"  # type: ignore[attr-defined]
        assert top_ids(s, "highest mountain in Japan")[0] == ids[1]


@pytest.mark.parametrize("damage", ["missing", "truncated", "garbage", "empty"])
def test_damaged_index_file_is_rebuilt_from_sqlite(tmp_path: Path, damage: str) -> None:
    ids = make_store(tmp_path / "a")
    idx = tmp_path / "a" / INDEX_NAME
    data = idx.read_bytes()
    if damage == "missing":
        idx.unlink()
    elif damage == "truncated":
        idx.write_bytes(data[: len(data) // 2])
    elif damage == "garbage":
        idx.write_bytes(os.urandom(len(data)))
    else:
        idx.write_bytes(b"")
    with MemoryDir.open(tmp_path / "a") as s:
        assert s.archival.index_status == "rebuilt"  # type: ignore[attr-defined]
        assert s.archival.verify_index()  # type: ignore[attr-defined]
        assert top_ids(s, "three hearts blue blood")[0] == ids[3]
    with MemoryDir.open(tmp_path / "a") as s:  # and the rebuilt cache was written back
        assert s.archival.index_status == "loaded"  # type: ignore[attr-defined]


def test_stale_index_catches_up_and_drops_extras(tmp_path: Path) -> None:
    ids = make_store(tmp_path / "a")
    idx = tmp_path / "a" / INDEX_NAME
    old = idx.read_bytes()  # knows FACTS only
    with MemoryDir.open(tmp_path / "a") as s:
        new = s.archival.insert("Venus spins backwards compared to most planets.")[0]
        s.archival.delete([ids[0]])
    idx.write_bytes(old)  # as if the process died before saving: behind by one, ahead by one
    with MemoryDir.open(tmp_path / "a") as s:
        assert s.archival.index_status == "caught-up"  # type: ignore[attr-defined]
        assert s.archival.verify_index()  # type: ignore[attr-defined]
        assert top_ids(s, "Venus spins backwards")[0] == new
        assert ids[0] not in top_ids(s, "longest river in Africa Nile")


def test_index_of_another_store_is_detected(tmp_path: Path) -> None:
    make_store(tmp_path / "a")
    with MemoryDir.open(tmp_path / "b") as s:  # same ids, other texts
        other = [i[0] for i in s.archival.insert_many([f"unrelated text number {i}" for i in range(6)])]
    ids_a = make_store(tmp_path / "a")
    assert ids_a == other
    (tmp_path / "a" / INDEX_NAME).write_bytes((tmp_path / "b" / INDEX_NAME).read_bytes())
    with MemoryDir.open(tmp_path / "a") as s:
        assert s.archival.index_status == "rebuilt"  # type: ignore[attr-defined]
        assert top_ids(s, "Honey never spoils")[0] == ids_a[2]


def test_new_embedder_reembeds_and_rebuilds(tmp_path: Path) -> None:
    ids = make_store(tmp_path / "a")
    small = HashEmbedder(dim=64, seed=3)
    with MemoryDir.open(tmp_path / "a", embedder=small) as s:
        assert s.archival.index_status == "rebuilt"  # type: ignore[attr-defined]
        assert s.archival.index.dim == 64  # type: ignore[attr-defined]
        assert top_ids(s, "Bananas are berries")[0] == ids[5]
    with MemoryDir.open(tmp_path / "a", embedder=HashEmbedder(dim=64, seed=3)) as s:
        assert s.archival.index_status == "loaded"  # type: ignore[attr-defined]
        blob = s._db.conn.execute("SELECT embedding FROM passages LIMIT 1").fetchone()[0]
        assert len(blob) == 64 * 2  # float16 (schema 5)


def test_exact_index_option(tmp_path: Path) -> None:
    ids = make_store(tmp_path / "a", index="exact")
    with MemoryDir.open(tmp_path / "a", index="exact") as s:
        assert type(s.archival.index).__name__ == "ExactIndex"  # type: ignore[attr-defined]
        assert top_ids(s, "Mount Fuji Japan")[0] == ids[1]
    with MemoryDir.open(tmp_path / "a") as s:  # an exact-index file is no HNSW file: rebuilt
        assert s.archival.index_status == "rebuilt"  # type: ignore[attr-defined]


def test_large_filtered_search_uses_hnsw_and_matches_exact(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Above EXACT_MAX candidates the filter runs inside HNSW; it must still fill the page."""
    with MemoryDir.open(tmp_path / "a") as s:
        words = ["alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta", "theta"]
        for i in range(300):
            s.archival.insert(f"{words[i % 8]} {words[(i * 3) % 8]} item {i} {words[(i * 5) % 8]}",
                              tags=["even" if i % 2 == 0 else "odd", f"t{i % 10}"])
        exact = {q: s.archival.search(q, mode="vector", tags=["t3"], page_size=20) for q in ("alpha beta", "theta item")}
        monkeypatch.setattr(sqlite_backend, "EXACT_MAX", 8)
        for q, want in exact.items():
            got = s.archival.search(q, mode="vector", tags=["t3"], page_size=20)
            assert got.total == want.total == 30 and len(got.hits) == 20
            assert all("t3" in p.tags for p in got.items)
            overlap = len({p.id for p in got.items} & {p.id for p in want.items})
            assert overlap >= 18  # HNSW is approximate; recall@20 on 300 points is near 1


def test_archival_backend_is_remembered(tmp_path: Path) -> None:
    make_store(tmp_path / "a")
    with pytest.raises(ConfigMismatchError, match="sqlite"):
        MemoryDir.open(tmp_path / "a", archival="milvus")


# -- transactions


def test_transaction_is_atomic_across_tiers(tmp_path: Path) -> None:
    with MemoryDir.open(tmp_path / "a") as s:
        with pytest.raises(RuntimeError, match="boom"):
            with s.transaction():
                s.recall.append("user", "lost message")
                s.archival.insert("lost passage about zeppelins")
                s.state["summary"] = "lost"
                s.blocks.create("human", "lost")
                raise RuntimeError("boom")
        assert len(s.recall) == 0 and len(s.archival) == 0 and "summary" not in s.state and len(s.blocks) == 0
        assert len(s.archival.index) == 0  # type: ignore[attr-defined]
        with s.transaction():
            mid = s.recall.append("user", "kept message")
            pid = s.archival.insert("kept passage about zeppelins")[0]
            s.state["queue"] = [mid]
            assert pid not in s.archival.index  # type: ignore[attr-defined]  # indexed after commit
        assert pid in s.archival.index  # type: ignore[attr-defined]
        assert s.archival.search("zeppelins", mode="vector").items[0].id == pid
    with MemoryDir.open(tmp_path / "a") as s:
        assert s.state["queue"] == [mid] and s.recall.get(mid).content == "kept message"


# -- blocks and state


def test_blocks(tmp_path: Path) -> None:
    with MemoryDir.open(tmp_path / "a") as s:
        s.blocks.create("persona", "I am a helpful agent.", limit=40, description="who I am")
        s.blocks.create("human", "", limit=30)
        s.blocks.create("rules", "Never lie.", read_only=True)
        with pytest.raises(BlockExistsError):
            s.blocks.create("human")
        with pytest.raises(BlockLimitError, match="exceeds its limit of 30"):
            s.blocks.set("human", "x" * 31)
        with pytest.raises(ReadOnlyBlockError):
            s.blocks.set("rules", "Lie.")
        with pytest.raises(NotFoundError):
            s.blocks.set("nope", "x")
        b = s.blocks.set("human", "Name: Ada")
        assert b.value == "Name: Ada" and b.limit == 30
        s.blocks.update("rules", value="Never lie. Be kind.")  # the developer may
        s.blocks.update("persona", limit=100, read_only=True)
        with pytest.raises(BlockLimitError):
            s.blocks.update("human", limit=3)
        assert s.blocks.labels() == ["persona", "human", "rules"]
        assert "human" in s.blocks and len(s.blocks) == 3
        s.blocks.delete("rules")
        with pytest.raises(NotFoundError):
            s.blocks.delete("rules")
    with MemoryDir.open(tmp_path / "a") as s:
        p = s.blocks.get("persona")
        assert (p.value, p.limit, p.description, p.read_only) == ("I am a helpful agent.", 100, "who I am", True)
        assert [b.label for b in s.blocks] == ["persona", "human"]
        assert s.blocks.get("human").value == "Name: Ada"


def test_kernel_state(tmp_path: Path) -> None:
    value = {"queue": [make_page_id(PageKind.MESSAGE, 5)], "summary": "so far...", "n": 1.5, "raw": b"\x01"}
    with MemoryDir.open(tmp_path / "a") as s:
        s.state["kernel"] = value
        s.state["steps"] = 3
        with pytest.raises(TypeError, match="msgpack"):
            s.state["bad"] = {1, 2}
        assert "bad" not in s.state
        del s.state["steps"]
        with pytest.raises(KeyError):
            del s.state["steps"]
    with MemoryDir.open(tmp_path / "a") as s:
        assert s.state["kernel"] == value and list(s.state) == ["kernel"] and len(s.state) == 1
        assert s.state.get("steps", 0) == 0


def test_storage_errors_share_one_base() -> None:
    for e in (StoreLockedError, CorruptStoreError, ForeignFileError, NotFoundError, BlockLimitError, ConfigMismatchError):
        assert issubclass(e, VmemStorageError)


@pytest.mark.parametrize("where", ["", "   "])
def test_an_empty_location_is_refused_and_nothing_is_created(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                              where: str) -> None:
    # Memory.create("") made a memory in the current directory
    from vmem.kernel import Memory

    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValueError, match="empty"):
        Memory.create(where, system="s")
    with pytest.raises(ValueError, match="empty"):
        Memory.open(where)
    assert not Memory.exists(where)
    from vmem.app.cli import main
    assert main(["mcp", where]) == main(["inspect", where]) == 2  # usage errors, saying it is empty
    assert list(tmp_path.iterdir()) == []
