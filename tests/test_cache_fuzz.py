"""Cache files cannot crash the process (issue 18, item 7): mutated HNSW (archival.idx) and text
index (recall.tix, archival.tix) files, their checksums recomputed so the damage reaches
hnswlib and the C index, are opened in a child process (a SIGSEGV fails the test instead of
killing pytest): 0 crashes, 0 failed opens, 0 wrong answers. 100 of each kind here; 1,000 of
each with ``-m slow`` (or VMEM_SLOW=1).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from vmem.kernel import Memory

ROOT = Path(__file__).resolve().parents[1]
CHILD = Path(__file__).with_name("cache_fuzz.py")


@pytest.fixture(scope="module")
def pristine(tmp_path_factory) -> tuple[Path, Path]:
    base = tmp_path_factory.mktemp("fuzz")
    path = base / "agent"
    topics = ["volcano", "harpsichord", "marmalade", "quasar", "tundra", "origami", "saffron", "glacier",
              "walrus", "lantern", "meteor", "cactus"]
    with Memory.create(path, system="s", blocks={"human": ""}) as memory:
        pages = memory.archival_insert_many([f"the {t} passage, about {t} and {t}s only" for t in topics]
                                            + [f"filler passage number {i} about nothing much" for i in range(80)])
        ids = []
        for i, t in enumerate(topics):
            ids.append(memory.append({"role": "user", "content": f"tell me about the {t} {t}"}))
            memory.append({"role": "assistant", "content": f"reply {i} " + "words " * 10})
        expected = {"archival": [[f"{t} {t}", p[0]] for t, p in zip(topics, pages)],
                    "recall": [[f"{t} {t}", page] for t, page in zip(topics, ids)]}
    expected_json = base / "expected.json"
    expected_json.write_text(json.dumps(expected))
    return path, expected_json


def run_fuzz(pristine, tmp_path: Path, kind: str, count: int, seed0: int = 0) -> None:
    path, expected_json = pristine
    out = subprocess.run([sys.executable, str(CHILD), str(path), str(tmp_path), kind, str(seed0), str(count),
                          str(expected_json)], capture_output=True, text=True, timeout=3600, cwd=ROOT,
                         env={**os.environ, "PYTHONPATH": str(ROOT)})
    lines = out.stdout.splitlines()
    started = [ln for ln in lines if ln.startswith("start")]
    failed = [ln for ln in lines if ln.startswith("FAIL")]
    assert out.returncode == 0, f"the child died (signal {-out.returncode}) at: {started[-1] if started else '?'}"
    assert not failed, "\n".join(failed[:20])
    assert sum(ln.startswith("ok") for ln in lines) == count


@pytest.mark.parametrize("kind", ["hnsw", "tix"])
def test_mutated_cache_files_never_crash_and_never_answer_wrong(pristine, tmp_path, kind):
    run_fuzz(pristine, tmp_path, kind, 100)


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["hnsw", "tix"])
def test_a_thousand_mutated_cache_files_of_each_kind(pristine, tmp_path, kind, request):
    if "slow" not in (request.config.getoption("markexpr") or "") and not os.environ.get("VMEM_SLOW"):
        pytest.skip("1,000 mutated files of each kind: run with -m slow (or VMEM_SLOW=1)")
    run_fuzz(pristine, tmp_path, kind, 1000, seed0=10_000)


@pytest.mark.parametrize("n", [0, 1, 2, 500])
def test_genuine_graphs_of_any_size_pass_the_validation(tmp_path, n):
    import numpy as np

    from vmem import PageIndex
    rng = np.random.default_rng(n)
    index = PageIndex(16, capacity=max(n, 1), M=8)
    if n:
        index.add(np.arange(1, n + 1, dtype=np.uint64), rng.standard_normal((n, 16)).astype(np.float32))
        index.delete(np.arange(1, n + 1, 3, dtype=np.uint64))
    index.save(tmp_path / "x.idx")
    again = PageIndex.load(tmp_path / "x.idx")
    assert len(again) == len(index) and sorted(again.ids().tolist()) == sorted(index.ids().tolist())
