"""Store-level search over the text index caches: files, migration, totals, paging, context."""

from __future__ import annotations

import datetime as dt
import sqlite3
from pathlib import Path

import pytest

import vmem._textindex as textindex
from vmem.storage import MemoryDir
from old_schema import drop_checksums, float32_embeddings
from vmem.storage._db import SCHEMA_VERSION
from vmem.storage.memdir import ARCHIVAL_TEXT_NAME, DB_NAME, RECALL_TEXT_NAME

UTC = dt.timezone.utc
T0 = dt.datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


def at(minutes: float) -> dt.datetime:
    return T0 + dt.timedelta(minutes=minutes)


def fill(path: Path) -> tuple[list[int], list[int]]:
    with MemoryDir.open(path) as s:
        mids = s.recall.append_many([("user" if i % 2 else "assistant", f"message {i} about topic{i % 7}", at(i))
                                     for i in range(50)])
        pids = [p[0] for p in s.archival.insert_many([f"passage {i} on subject{i % 5}" for i in range(30)])]
    return mids, pids


def test_text_indexes_are_saved_loaded_and_caught_up(tmp_path: Path) -> None:
    mids, pids = fill(tmp_path / "a")
    assert (tmp_path / "a" / RECALL_TEXT_NAME).exists() and (tmp_path / "a" / ARCHIVAL_TEXT_NAME).exists()
    old_recall = (tmp_path / "a" / RECALL_TEXT_NAME).read_bytes()
    old_arch = (tmp_path / "a" / ARCHIVAL_TEXT_NAME).read_bytes()
    with MemoryDir.open(tmp_path / "a") as s:
        assert s.recall.lexical.status == "loaded" and s.archival.lexical.status == "loaded"  # type: ignore[attr-defined]
        new_m = s.recall.append("user", "a brand new zeppelin")
        new_p = s.archival.insert("zeppelin facts")[0]
    # as if the process died before saving: the files are behind
    (tmp_path / "a" / RECALL_TEXT_NAME).write_bytes(old_recall)
    (tmp_path / "a" / ARCHIVAL_TEXT_NAME).write_bytes(old_arch)
    with MemoryDir.open(tmp_path / "a") as s:
        assert s.recall.lexical.status == "caught-up" and s.archival.lexical.status == "caught-up"  # type: ignore[attr-defined]
        assert s.recall.search("zeppelin").items[0].id == new_m
        assert s.archival.search("zeppelin", mode="text").items[0].id == new_p
        assert s.recall.lexical.verify() and s.archival.verify_text_index()  # type: ignore[attr-defined]


@pytest.mark.parametrize("damage", ["missing", "garbage", "ahead", "foreign"])
def test_bad_text_index_files_are_rebuilt(tmp_path: Path, damage: str) -> None:
    mids, pids = fill(tmp_path / "a")
    f = tmp_path / "a" / RECALL_TEXT_NAME
    if damage == "missing":
        f.unlink()
    elif damage == "garbage":
        f.write_bytes(b"VMEMTIX1" + b"\x00" * 100)
    elif damage == "ahead":  # the file knows a message the database does not
        with MemoryDir.open(tmp_path / "a") as s:
            s.recall.append("user", "soon forgotten")
        saved = f.read_bytes()
        con = sqlite3.connect(tmp_path / "a" / DB_NAME)
        con.execute("DELETE FROM messages WHERE content = 'soon forgotten'")
        con.commit()
        con.close()
        f.write_bytes(saved)
    else:
        fill(tmp_path / "b")
        f.write_bytes((tmp_path / "b" / RECALL_TEXT_NAME).read_bytes())
    with MemoryDir.open(tmp_path / "a") as s:
        assert s.recall.lexical.status == "rebuilt"  # type: ignore[attr-defined]
        assert s.recall.lexical.verify()  # type: ignore[attr-defined]
        assert s.recall.search("topic3").total == 7
        assert s.recall.search("forgotten").total == 0


def test_schema_1_store_is_migrated(tmp_path: Path) -> None:
    mids, pids = fill(tmp_path / "a")
    for name in (RECALL_TEXT_NAME, ARCHIVAL_TEXT_NAME):
        (tmp_path / "a" / name).unlink()
    con = sqlite3.connect(tmp_path / "a" / DB_NAME)  # make it look like version 1
    drop_checksums(con)  # version 4's checksums
    float32_embeddings(con)  # version 5's float16
    con.executescript("""
        DROP INDEX passages_valid_from;
        DROP INDEX passages_invalid_at;
        ALTER TABLE passages DROP COLUMN valid_from;
        ALTER TABLE passages DROP COLUMN invalid_at;
        ALTER TABLE passages DROP COLUMN superseded_by;
        ALTER TABLE passages DROP COLUMN grp;
        CREATE VIRTUAL TABLE messages_fts USING fts5(content, content='messages', content_rowid='id');
        CREATE TRIGGER messages_ai AFTER INSERT ON messages BEGIN
            INSERT INTO messages_fts(rowid, content) VALUES (new.id, new.content);
        END;
        CREATE VIRTUAL TABLE passages_fts USING fts5(text, content='passages', content_rowid='id');
        PRAGMA user_version=1;
    """)
    con.close()
    with MemoryDir.open(tmp_path / "a") as s:
        assert s.recall.search("topic3").total == 7
        assert s.archival.search("subject2", mode="text").total == 6
        s.archival.insert("after the migration")
    con = sqlite3.connect(tmp_path / "a" / DB_NAME)
    names = {r[0] for r in con.execute("SELECT name FROM sqlite_master")}
    assert con.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    assert not any("fts" in n for n in names) and "messages_ai" not in names
    con.close()


def test_estimated_totals_page_through_every_match(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(textindex, "DEFAULT_EXACT_MAX", 0)  # estimate whenever the lists can be skipped
    with MemoryDir.open(tmp_path / "a") as s:
        s.recall.append_many([("user", f"common {'rare ' * (i % 3)}word{i}", at(i * 120)) for i in range(250)])
        first = s.recall.search("common rare", page_size=20)
        assert not first.total_is_exact and first.total >= 20
        seen = []
        for p in range(13):  # 250 matches in pages of 20
            seen += [m.id for m in s.recall.search("common rare", page=p, page_size=20).items]
        assert len(seen) == len(set(seen)) == 250
        exact = s.recall.search("rare", page_size=20)
        assert exact.total == 166 if exact.total_is_exact else exact.total >= 20


def test_archival_hybrid_spreads_within_one_insert_call(tmp_path: Path) -> None:
    with MemoryDir.open(tmp_path / "a") as s:
        s.archival.context = (0.5, 0.0, 0.25)  # type: ignore[attr-defined]
        s.archival.insert_many(["Filler one about weather.", "Unrelated filler two."])
        call = s.archival.insert_many([
            "Melanie: How did the children take the accident?",
            "Caroline: They were scared but we reassured them.",
            "Melanie: Glad to hear it.",
        ])
        s.archival.insert_many(["Another talk entirely, much later."])
        ranked = [p.id for p in s.archival.search("How did Melanie's children handle the accident?").items]
        reply = call[1][0]
        assert ranked[0] == call[0][0] and reply in ranked[:2]  # the reply shares no word with the question
        s.archival.context = (0.0, 0.0, 0.0)  # type: ignore[attr-defined]
        plain = [p.id for p in s.archival.search("How did Melanie's children handle the accident?").items]
        assert plain.index(reply) > 1
        # a filter applies to the neighbours too
        late = s.archival.search("children accident", start=dt.datetime(2100, 1, 1, tzinfo=UTC))
        assert late.total == 0 and late.items == []


def test_recall_context_reorders_matches_only(tmp_path: Path) -> None:
    with MemoryDir.open(tmp_path / "a") as s:
        assert s.recall.context == (0.0, 0.0, 0.0)  # off by default: it did not help on LoCoMo
        s.recall.tie_break = None  # context alone (the newest "cat" would win the near-tie: tests/test_ties.py)
        s.recall.context = (1.0, 0.0, 0.25)
        ids = s.recall.append_many([
            ("user", "did you feed the cat?", at(0)),
            ("assistant", "yes, the cat had fish", at(1)),
            ("user", "cat cat cat photos", at(600)),  # 10 hours later: no context across the gap
            ("assistant", "nice photos", at(601)),
        ])
        page = s.recall.search("cat")
        assert page.total == 3 and {m.id for m in page.items} == set(ids[:3])
        assert page.items[0].id == ids[1]  # the answer inherits the question's relevance
        s.recall.context = (0.0, 0.0, 0.0)
        plain = s.recall.search("cat").items
        assert {m.id for m in plain} == set(ids[:3]) and plain[0].id == ids[2]


def test_a_ranked_search_inside_a_transaction_counts_what_it_can_return(tmp_path: Path) -> None:
    fill(tmp_path / "a")
    with MemoryDir.open(tmp_path / "a") as s:
        with s.transaction():  # a kernel step: the indexes change after COMMIT
            s.archival.insert("subject1 written in this transaction")
            inside = s.archival.search("subject1", page_size=100)
            assert inside.total == 30 and len(inside.hits) <= inside.total
            assert all("this transaction" not in h.item.text for h in inside.hits)
            assert s.archival.search(None).total == 31  # a listing reads SQLite, uncommitted rows included
        after = s.archival.search("subject1 transaction", page_size=100)
        assert after.total == 31 and any("this transaction" in h.item.text for h in after.hits)


def test_a_shallow_search_ranks_fewer_candidates_for_one_short_page(tmp_path: Path) -> None:
    fill(tmp_path / "a")
    with MemoryDir.open(tmp_path / "a") as s:
        full = s.archival.search("passage 7 on subject2", page_size=2)
        shallow = s.archival.search("passage 7 on subject2", page_size=2, depth=4)
        assert len(shallow.hits) == 2 and shallow.total == full.total
        assert shallow.hits[0].item.text == full.hits[0].item.text == "passage 7 on subject2"
        for bad in (0, -1, 2.5):
            with pytest.raises(ValueError, match="depth"):
                s.archival.search("passage", depth=bad)  # type: ignore[arg-type]
