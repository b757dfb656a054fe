"""vmem.embed: the hashing embedder, the OpenAI-compatible embedder (against a local server)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import numpy as np
import pytest

from vmem.embed import Embedder, EmbedderError, HashEmbedder, OpenAIEmbedder, default_embedder
from vmem.index import ExactIndex

# ---------------------------------------------------------------- HashEmbedder


def cos(a: np.ndarray, b: np.ndarray) -> float:
    return float(a @ b)


def test_shape_dtype_and_unit_rows() -> None:
    e = HashEmbedder()
    m = e.embed(["hello world", "", "The kids loved the dinosaur exhibit!", "?!", "a " * 1000])
    assert m.shape == (5, 384) and m.dtype == np.float32
    assert np.allclose(np.linalg.norm(m, axis=1), 1.0, atol=1e-5)
    assert e.embed([]).shape == (0, 384)


def test_empty_texts_share_one_unit_vector() -> None:
    e = HashEmbedder(dim=64)
    m = e.embed(["", "   ", "...", "hello"])
    assert np.array_equal(m[0], m[1]) and np.array_equal(m[1], m[2])
    assert not np.array_equal(m[0], m[3])


def test_deterministic_across_processes() -> None:
    """Vectors must not depend on Python's per-process salted hash()."""
    code = (
        "import sys, numpy as np; from vmem.embed import HashEmbedder;"
        "sys.stdout.write(HashEmbedder().embed(['Caroline went to a support group', 'pottery class']).tobytes().hex())"
    )
    outs = []
    for seed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        outs.append(subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout)
    assert outs[0] == outs[1]
    here = HashEmbedder().embed(["Caroline went to a support group", "pottery class"]).tobytes().hex()
    assert here == outs[0]


def test_related_texts_are_closer_than_unrelated() -> None:
    e = HashEmbedder()
    q, near, far = e.embed(
        ["When did Melanie paint a sunrise?", "Melanie painted a lovely sunrise last year", "I bought new running shoes"]
    )
    assert cos(q, near) > 0.3
    assert cos(q, near) > cos(q, far) + 0.2
    assert abs(cos(q, far)) < 0.2


def test_inflections_and_typos_stay_close() -> None:
    e = HashEmbedder()
    a, b, c, d = e.embed(["painting", "paints", "pursue counseling", "persue counselling"])
    z = e.embed(["volcano"])[0]
    assert cos(a, b) > 0.5 > abs(cos(a, z))
    u = e.embed(["volcano eruption"])[0]
    assert cos(c, d) > 0.25 > abs(cos(c, u))  # both words misspelt: still clearly related


def test_stop_words_carry_no_weight() -> None:
    e = HashEmbedder()
    a, b = e.embed(["the support group", "support group of the"])
    assert cos(a, b) > 0.9
    e2 = HashEmbedder(stop_words=False)
    a2, b2 = e2.embed(["the support group", "support group of the"])
    assert cos(a2, b2) < cos(a, b)


def test_word_order_matters_through_bigrams() -> None:
    e = HashEmbedder()
    a, b, c = e.embed(["support group", "support group", "group support"])
    assert cos(a, b) == pytest.approx(1.0, abs=1e-5)
    assert cos(a, c) < 0.999
    plain = HashEmbedder(bigram_weight=0)
    a, c = plain.embed(["support group", "group support"])
    assert cos(a, c) == pytest.approx(1.0, abs=1e-5)


def test_parameters_change_vectors_and_name() -> None:
    base = HashEmbedder()
    variants = [HashEmbedder(seed=1), HashEmbedder(dim=256), HashEmbedder(ngram_range=(2, 4)), HashEmbedder(char_weight=0)]
    names = {base.name} | {v.name for v in variants}
    assert len(names) == 5
    assert not np.allclose(base.embed(["hello there"])[0], variants[0].embed(["hello there"])[0])
    assert HashEmbedder().name == base.name


def test_cache_eviction_does_not_change_results() -> None:
    texts = [f"word{i} shared tokens here" for i in range(50)]
    big = HashEmbedder(cache_size=100_000).embed(texts)
    tiny = HashEmbedder(cache_size=3).embed(texts)
    assert np.array_equal(big, tiny)


def test_batch_equals_one_by_one() -> None:
    e = HashEmbedder()
    texts = ["alpha beta", "beta gamma delta", "", "alpha alpha alpha"]
    batch = e.embed(texts)
    single = np.stack([e.embed_one(t) for t in texts])
    assert np.allclose(batch, single, atol=1e-6)


def test_sublinear_tf() -> None:
    e = HashEmbedder(bigram_weight=0)
    once, thrice, other = e.embed(["pottery", "pottery pottery pottery camping", "camping"])
    # with raw tf pottery would dominate 3:1; with 1+ln(3) ~ 2.1:1 camping keeps more weight
    assert cos(thrice, other) > 0.4


def test_bad_arguments() -> None:
    with pytest.raises(ValueError):
        HashEmbedder(dim=4)
    with pytest.raises(ValueError):
        HashEmbedder(ngram_range=(4, 2))
    with pytest.raises(ValueError):
        HashEmbedder(word_weight=0, char_weight=0)
    with pytest.raises(ValueError):
        HashEmbedder(bigram_weight=float("nan"))
    e = HashEmbedder()
    with pytest.raises(TypeError):
        e.embed("a single string")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        e.embed(["ok", None])  # type: ignore[list-item]


def test_default_embedder() -> None:
    e = default_embedder()
    assert isinstance(e, HashEmbedder) and e.dim == 384
    assert "hash" in repr(e)


def test_custom_embedder_plugs_into_an_index() -> None:
    class Letters(Embedder):
        """A user's own embedder: letter counts."""

        dim = 26
        name = "letters/v1"

        def embed(self, texts: Any) -> np.ndarray:
            m = np.zeros((len(texts), 26), dtype=np.float32)
            for r, t in enumerate(texts):
                for ch in t.lower():
                    if "a" <= ch <= "z":
                        m[r, ord(ch) - 97] += 1
            m[m.sum(axis=1) == 0, 0] = 1
            return m / np.linalg.norm(m, axis=1, keepdims=True)

    e = Letters()
    idx = ExactIndex(e.dim, name=e.name)
    idx.add(np.arange(1, 4, dtype=np.uint64), e.embed(["aaa", "bbb", "abc"]))
    got, _ = idx.query(e.embed(["aab"]), 1)
    assert got[0, 0] == 1
    with pytest.raises(TypeError):
        Embedder()  # type: ignore[abstract]


# ---------------------------------------------------------------- OpenAIEmbedder


class FakeEmbeddings(BaseHTTPRequestHandler):
    """A tiny OpenAI-compatible POST /v1/embeddings: letter-count vectors, reply order reversed."""

    requests: list[dict[str, Any]] = []
    fail: bool = False
    dim = 8

    def do_POST(self) -> None:  # noqa: N802
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        type(self).requests.append({"path": self.path, "body": body, "auth": self.headers.get("Authorization")})
        if type(self).fail or self.path.rstrip("/") != "/v1/embeddings":
            self._send(400, {"error": {"message": "bad request for test", "type": "invalid_request_error"}})
            return
        inputs = body["input"]
        dim = body.get("dimensions") or type(self).dim
        data = []
        for i, text in enumerate(inputs):
            v = [float(1 + sum(1 for ch in text if ord(ch) % dim == j)) for j in range(dim)]
            data.append({"object": "embedding", "index": i, "embedding": v})
        data.reverse()  # the client must reorder by index
        self._send(200, {"object": "list", "data": data, "model": body["model"], "usage": {"prompt_tokens": 1, "total_tokens": 1}})

    def _send(self, code: int, payload: dict[str, Any]) -> None:
        raw = json.dumps(payload).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture()
def server() -> Iterator[str]:
    FakeEmbeddings.requests = []
    FakeEmbeddings.fail = False
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), FakeEmbeddings)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}/v1"
    finally:
        httpd.shutdown()
        httpd.server_close()


def expected(text: str, dim: int = 8) -> np.ndarray:
    v = np.array([1 + sum(1 for ch in text if ord(ch) % dim == j) for j in range(dim)], dtype=np.float32)
    return v / np.linalg.norm(v)


def test_openai_embedder_batches_orders_and_normalises(server: str) -> None:
    e = OpenAIEmbedder("test-model", api_key="sk-test", base_url=server, batch_size=2, max_retries=0)
    texts = ["alpha", "beta", "", "gamma delta", "epsilon"]
    m = e.embed(texts)
    assert m.shape == (5, 8) and m.dtype == np.float32
    for row, text in zip(m, texts):
        assert np.allclose(row, expected(text if text else " "), atol=1e-6)
    bodies = [r["body"] for r in FakeEmbeddings.requests]
    # the first request may be a dimension probe (unknown model); the rest are batches of <= 2
    batches = [b["input"] for b in bodies if b["input"] != ["dimension probe"]]
    assert batches == [["alpha", "beta"], [" ", "gamma delta"], ["epsilon"]]
    assert all(r["auth"] == "Bearer sk-test" for r in FakeEmbeddings.requests)
    assert all(b["model"] == "test-model" for b in bodies)
    assert e.dim == 8 and e.name == "openai/test-model/d8"


def test_openai_embedder_dimensions_and_probe(server: str) -> None:
    e = OpenAIEmbedder("test-model", api_key="k", base_url=server, dimensions=5, max_retries=0)
    assert e.dim == 5 and not FakeEmbeddings.requests  # known without a call
    assert e.embed(["x"]).shape == (1, 5)
    assert FakeEmbeddings.requests[0]["body"]["dimensions"] == 5
    probe = OpenAIEmbedder("other-model", api_key="k", base_url=server, max_retries=0)
    assert probe.dim == 8
    assert FakeEmbeddings.requests[-1]["body"]["input"] == ["dimension probe"]


def test_openai_embedder_key_from_environment(server: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-from-env")
    e = OpenAIEmbedder("text-embedding-3-small", base_url=server, dimensions=8, max_retries=0)
    e.embed(["hi"])
    assert FakeEmbeddings.requests[-1]["auth"] == "Bearer sk-from-env"


def test_openai_embedder_without_key_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with pytest.raises(EmbedderError, match="no API key"):
        OpenAIEmbedder("text-embedding-3-small")


def test_openai_embedder_server_error_is_wrapped(server: str) -> None:
    FakeEmbeddings.fail = True
    e = OpenAIEmbedder("text-embedding-3-small", api_key="k", base_url=server, max_retries=0)
    with pytest.raises(EmbedderError, match="failed"):
        e.embed(["x"])


def test_openai_embedder_rejects_bad_arguments(server: str) -> None:
    with pytest.raises(ValueError):
        OpenAIEmbedder(api_key="k", base_url=server, batch_size=0)
    e = OpenAIEmbedder("text-embedding-3-small", api_key="k", base_url=server)
    with pytest.raises(TypeError):
        e.embed("one string")  # type: ignore[arg-type]
    assert e.embed([]).shape == (0, 1536)
