#!/usr/bin/env python3
"""Serve a GGUF with llama.cpp (xllamacpp) on 127.0.0.1, as the tests do, until Ctrl-C or SIGTERM.

The same server as the ``llm_server`` test fixture (tests/llm_server.py: one slot, greedy by
default, prompt cache on, offline), started from the command line for a long benchmark run such
as ``vmem eval qa``. Prints the OpenAI base URL and the model name to use, then waits.

    python bench/serve_gguf.py /work/models/qwen1.5b.gguf --ctx 32768 --threads 2
    # -> base_url http://127.0.0.1:PORT/v1 model qwen1.5b
    vmem eval qa --base-url http://127.0.0.1:PORT/v1 --model qwen1.5b ...

``--url-file F`` also writes the base URL to F (for scripts that start it in the background).
"""

from __future__ import annotations

import argparse
import signal
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))

from llm_server import start_server, stop_server  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Serve a GGUF over an OpenAI-compatible API (llama.cpp).")
    parser.add_argument("gguf", type=Path, help="the model file")
    parser.add_argument("--ctx", type=int, default=8192, help="context size of the one slot, tokens (default 8192)")
    parser.add_argument("--threads", type=int, default=2, help="CPU threads (default 2)")
    parser.add_argument("--alias", default=None, help="the model name to answer to (default: the file's stem)")
    parser.add_argument("--log", type=Path, default=None, help="the server's log (default: <gguf>.server.log)")
    parser.add_argument("--url-file", type=Path, default=None, help="also write the base URL to this file")
    args = parser.parse_args(argv)
    if not args.gguf.is_file():
        parser.error(f"no such file: {args.gguf}")
    log = args.log or args.gguf.with_suffix(".server.log")
    server = start_server(args.gguf, log_path=log, n_ctx=args.ctx, threads=args.threads, alias=args.alias,
                          start_timeout=600.0)
    print(f"base_url {server.base_url} model {server.model} (ctx {server.n_ctx}, threads {server.threads}, "
          f"log {log})", flush=True)
    if args.url_file:
        args.url_file.write_text(server.base_url + "\n")
    stop = False

    def _stop(*_: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, _stop)
    try:
        while not stop and server.process is not None and server.process.poll() is None:
            time.sleep(1.0)
    except KeyboardInterrupt:
        pass
    died = server.process is not None and server.process.poll() is not None
    stop_server(server)
    if died:
        print(f"the server died (exit {server.process.returncode}); log {log}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
