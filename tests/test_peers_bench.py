"""bench/peers.py's own logic: the fusion the RRF peers use, the shared vectors, vmem's side of
the comparison, and a missing peer named instead of failing. (The peers themselves are an
extra, ``vmem[peers]``; the bench runs them, these tests do not need them.)"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import peers
from vmem.embed import HashEmbedder


def test_rrf_sums_reciprocal_ranks_and_breaks_ties_by_id() -> None:
    # 7: 1/61 + 1/61; 3: 1/62 + 1/63; 9: 1/62; 5: 1/63
    assert peers._rrf([7, 3, 5], [7, 9, 3], k=4) == [7, 3, 9, 5]
    assert peers._rrf([1, 2], [2, 1], k=2) == [1, 2]  # equal sums: the smaller id first
    assert peers._rrf([], [4, 8], k=1) == [4]


def test_given_vectors_are_the_hash_embedders() -> None:
    texts = ["Caroline went to the support group.", "Melanie paints a sunrise.", "Caroline went to the support group."]
    given = peers.GivenVectors()
    assert given.name == HashEmbedder().name and given.dim == peers.DIM
    assert np.array_equal(given.embed(texts), HashEmbedder().embed(texts))
    assert len(given.known) == 2  # each distinct text embedded once


def test_vmem_system_round_trip(tmp_path: Path) -> None:
    given = peers.GivenVectors()
    texts = [f"Speaker{i % 2}: we talked about topic {i} and the lake trip number {i * 7}" for i in range(60)]
    vecs = given.add(texts)
    system = peers.make("vmem", tmp_path / "v", given)
    system.create()
    system.add_batch(list(range(50)), texts[:50], vecs[:50])
    system.finish_batches()
    system.add_durable(50, texts[50], vecs[50])
    q = "the lake trip number 56"
    got = system.search(q, given.inner.embed_query([q])[0], 10)
    assert got[0] == 8 and len(got) == 10 and len(set(got)) == 10
    system.close()
    again = peers.make("vmem", tmp_path / "v")
    again.open()
    assert len(again.search(q, given.inner.embed_query([q])[0], 10)) == 10  # reopened with the recorded embedder
    again.close()
    assert peers._disk(tmp_path / "v") > 0


def test_a_missing_peer_is_named_and_the_rest_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(peers.Chroma, "needs", ("no_such_module_vmem_test",))
    assert peers.Chroma.missing() == ["no_such_module_vmem_test"]
    monkeypatch.setattr(peers, "LOCOMO", tmp_path / "absent.json")
    assert peers.main(["--path", str(tmp_path / "absent.json"), "--systems", "chroma", "vmem", "--quick"]) == 0
    err = capsys.readouterr().err
    assert "Chroma (vector only): not installed (no_such_module_vmem_test missing" in err
    assert "LoCoMo data not found" in err  # and without the data it says so and stops cleanly


def test_a_peer_answers_over_the_same_vectors(tmp_path: Path) -> None:
    if peers.SqliteVec.missing():
        pytest.skip("sqlite-vec and apsw (the peers extra) are not installed")
    given = peers.GivenVectors()
    texts = [f"note {i}: the garden and the violin lesson on day {i}" for i in range(40)]
    system = peers.make("sqlite-vec", tmp_path / "s")
    system.create()
    system.add_batch(list(range(40)), texts, given.add(texts))
    q = "violin lesson on day 17"
    assert system.search(q, given.inner.embed_query([q])[0], 5)[0] == 17
    system.close()


def test_vmem_figures_stand_beside_the_best_peer() -> None:
    res = {"vmem": {"p50 ms": 2.0, "batch/s": 100.0}, "chroma": {"p50 ms": 4.0, "batch/s": 400.0},
           "lancedb": {"p50 ms": 80.0, "batch/s": 30_000.0}}
    figs = {f.name: f for f in peers.figures(10, res, {"vmem": 75.9, "chroma": 39.0, "lancedb": 58.0})}
    r10 = figs["LoCoMo dev R@10, vmem (hybrid), 10"]
    assert (r10.baseline, r10.ratio) == (58.0, round(75.9 / 58.0, 2))  # higher is better: the best is the highest
    p50 = figs["query p50, vmem (hybrid), 10"]
    assert (p50.baseline, p50.ratio) == (4.0, 2.0)  # lower is better: the fastest peer, ratio > 1 when vmem wins
    ins = figs["batched inserts, vmem (hybrid), 10"]
    assert (ins.baseline, ins.ratio) == (30_000.0, round(100 / 30_000, 2))
    assert figs["query p50, Chroma (vector only), 10"].baseline is None  # peers' rows carry no baseline
