"""The pg_server fixture: a real PostgreSQL 18 with pgvector on loopback (tests/pg_server.py)."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.postgres


def test_server_runs_postgres_18_with_pgvector(pg_server):
    import psycopg

    with psycopg.connect(pg_server.url) as conn:
        version = conn.execute("SHOW server_version_num").fetchone()[0]
        assert int(version) >= 180000
        ext = conn.execute("SELECT extversion FROM pg_extension WHERE extname = 'vector'").fetchone()
        assert ext is not None and tuple(map(int, ext[0].split(".")[:2])) >= (0, 8)
        # a vector column with an HNSW index works (what the archival tier needs)
        conn.execute("CREATE TEMP TABLE t(v vector(3))")
        conn.execute("CREATE INDEX ON t USING hnsw (v vector_cosine_ops)")
        conn.execute("INSERT INTO t VALUES ('[1,0,0]'), ('[0,1,0]')")
        assert conn.execute("SELECT v::text FROM t ORDER BY v <=> '[0.9,0.1,0]' LIMIT 1").fetchone()[0] == "[1,0,0]"


def test_server_listens_on_loopback_only(pg_server):
    import psycopg

    if pg_server.data_dir is None:
        pytest.skip("an external server (VMEM_TEST_PG_URL) is configured by its owner")
    with psycopg.connect(pg_server.url) as conn:
        assert conn.execute("SHOW listen_addresses").fetchone()[0] == "127.0.0.1"


def test_agent_urls_are_fresh(pg_server):
    a, b = pg_server.agent_url("x"), pg_server.agent_url("x")
    assert a != b and a.startswith(pg_server.url + "?agent=")
