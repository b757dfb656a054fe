"""Helpers that make a new store look like one an older vmem wrote (for the migration tests)."""

from __future__ import annotations

import sqlite3

import numpy as np

from vmem.storage._db import CHECKED


def drop_checksums(con: sqlite3.Connection) -> None:
    """Schema 4's checksums removed (what versions 1-3 had not)."""
    con.executescript("".join(f"DROP TRIGGER {t}_crc_i; DROP TRIGGER {t}_crc_u; ALTER TABLE {t} DROP COLUMN crc;"
                              for t in CHECKED) + "DROP TABLE commits;")


def float32_embeddings(con: sqlite3.Connection) -> None:
    """Embeddings stored as float32, as schemas 1-4 stored them (call with the checksum triggers
    dropped, or before a test recomputes the checksums)."""
    con.create_function("f32", 1, lambda b: np.frombuffer(b, "<f2").astype("<f4").tobytes())
    con.execute("UPDATE passages SET embedding = f32(embedding) WHERE embedding IS NOT NULL")
    con.commit()
