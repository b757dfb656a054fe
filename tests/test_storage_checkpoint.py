"""The background WAL checkpoint: it folds committed writes into the database file, off the writer's path."""

from __future__ import annotations

import threading
import time

from vmem.storage import MemoryDir


def _wait_for(condition, seconds: float = 10.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.01)
    return condition()


def _checkpoint_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("vmem-checkpoint")]


def test_background_checkpoint_folds_the_wal_and_stops_on_close(tmp_path):
    store = MemoryDir.open(tmp_path / "m", durability="normal")
    db = tmp_path / "m" / "vmem.db"
    store.recall.append_many([{"role": "user", "content": f"message tag{i} " + "words " * 50} for i in range(500)])
    before = db.stat().st_size  # the writes are in the WAL, not yet in the database file
    store.checkpoint_in_background(min_wal_bytes=0)
    assert _wait_for(lambda: db.stat().st_size > before), "the WAL was not folded into the database file"
    assert len(_checkpoint_threads()) == 1
    store.checkpoint_in_background(min_wal_bytes=0)  # kicks while one may be running are merged, never stacked
    assert len(_checkpoint_threads()) == 1
    store.close()
    assert not _checkpoint_threads()
    with MemoryDir.open(tmp_path / "m", create=False) as again:
        assert len(again.recall) == 500 and again.recall.search("tag499").total == 1


def test_a_small_wal_is_left_alone(tmp_path):
    with MemoryDir.open(tmp_path / "m", durability="normal") as store:
        store.recall.append("user", "one message")
        store.checkpoint_in_background()  # the WAL is far below the default 4 MB
        assert not _checkpoint_threads()
