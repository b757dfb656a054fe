"""Mutated cache files, opened in a child process (tests/test_cache_fuzz.py runs it).

``python cache_fuzz.py PRISTINE WORK KIND SEED0 COUNT EXPECTED_JSON``: for each seed, copy the
pristine agent directory to WORK, damage one cache file of ``KIND`` (``hnsw``: archival.idx;
``tix``: recall.tix or archival.tix) with a mutation drawn from the seed, and always recompute
the file's checksum over what it damages in the snapshot or graph, so the damage reaches the
parser behind it (hnswlib, the C inverted index) instead of stopping at the digest (damage to a
text index's vocabulary or roles is left to the digest, which covers them: a forged vocabulary
with a recomputed digest would rename terms, which only re-reading the database could tell). Then open the memory, check it, and ask the searches
whose answers are known. Prints one line per case: ``ok SEED how`` or ``FAIL SEED how: why``.
A crash (SIGSEGV) ends the process: the parent sees which seed was running from the last
``start`` line.
"""

from __future__ import annotations

import hashlib
import json
import random
import shutil
import struct
import sys
from pathlib import Path

import msgpack

IDX_MAGIC, TIX_MAGIC = b"VMEMIDX1", None
HNSW_HEADER = struct.Struct("<QQQQQQiIQQQdQ")


def split(data: bytes) -> tuple[bytes, dict, bytes]:
    (n,) = struct.unpack("<I", data[8:12])
    return data[:8], msgpack.unpackb(data[12:12 + n], raw=False), data[12 + n:]


def join(magic: bytes, header: dict, payload: bytes, digest: str, fix: bool = True) -> bytes:
    if fix:  # as the writers compute it: the text index's digest covers its vocabulary and roles too
        h = hashlib.blake2b(payload, digest_size=16)
        if magic != IDX_MAGIC:
            h.update(msgpack.packb([header["vocab"], header["roles"]], use_bin_type=True))
        header = dict(header, payload_size=len(payload), payload_blake2b=h.hexdigest())
    blob = msgpack.packb(header, use_bin_type=True)
    return magic + struct.pack("<I", len(blob)) + blob + payload


def flip(rng: random.Random, payload: bytes, n: int, lo: int = 0, hi: int | None = None) -> bytes:
    b = bytearray(payload)
    hi = len(b) if hi is None else min(hi, len(b))
    for _ in range(n):
        if hi > lo:
            i = rng.randrange(lo, hi)
            b[i] = rng.choice([b[i] ^ (1 << rng.randrange(8)), rng.randrange(256), 0, 255])
    return bytes(b)


def big(rng: random.Random) -> int:
    return rng.choice([0, 1, 2, 7, 255, 2**16, 2**31 - 1, 2**31, 2**32 - 1, 2**40, 2**63 - 1, 2**64 - 1,
                       rng.randrange(2**64)])


def mutate_hnsw(rng: random.Random, data: bytes) -> tuple[bytes, str]:
    magic, header, payload = split(data)
    n_live, n_labels = struct.unpack("<QQ", payload[:16])
    g = 16 + 8 * (n_live + n_labels)  # where the hnswlib graph starts
    how = rng.choice(["graph header field", "graph bytes", "level-0 region", "link lists", "id tables",
                      "truncate", "extend", "header count", "no checksum fix"])
    if how == "graph header field":
        fields = list(HNSW_HEADER.unpack(payload[g:g + HNSW_HEADER.size]))
        k = rng.randrange(len(fields))
        if k == 6:
            fields[k] = rng.choice([-1, 0, 1, 5, 63, 64, 2**31 - 1])
        elif k == 7:
            fields[k] = rng.choice([0, 1, 2**32 - 1, rng.randrange(2**32)])
        elif k == 11:
            fields[k] = rng.choice([0.0, -1.0, float("nan"), float("inf"), 1e300])
        else:
            fields[k] = big(rng)
        payload = payload[:g] + HNSW_HEADER.pack(*fields) + payload[g + HNSW_HEADER.size:]
        how += f" {k}"
    elif how == "graph bytes":
        payload = flip(rng, payload, rng.randint(1, 16), g)
    elif how == "level-0 region":
        payload = flip(rng, payload, rng.randint(1, 8), g + HNSW_HEADER.size, g + HNSW_HEADER.size + 4000)
    elif how == "link lists":
        payload = flip(rng, payload, rng.randint(1, 8), len(payload) - 2000)
    elif how == "id tables":
        payload = flip(rng, payload, rng.randint(1, 4), 0, g)
    elif how == "truncate":
        payload = payload[:rng.randrange(len(payload))]
    elif how == "extend":
        payload = payload + bytes(rng.randrange(256) for _ in range(rng.randint(1, 64)))
    elif how == "header count":
        header = dict(header, count=rng.choice([0, header["count"] + 1, max(0, header["count"] - 1), 2**40]))
    else:
        return join(magic, header, flip(rng, payload, 3), "", fix=False), how
    return join(magic, header, payload, ""), how


def mutate_tix(rng: random.Random, data: bytes) -> tuple[bytes, str]:
    magic, header, payload = split(data)
    how = rng.choice(["snapshot header", "snapshot bytes", "truncate", "extend", "vocab", "roles", "no checksum fix"])
    if how == "snapshot header":
        b = bytearray(payload)
        k = rng.randrange(2, 4) * 4
        b[k:k + 4] = struct.pack("<I", big(rng) & 0xFFFFFFFF)
        payload = bytes(b)
    elif how == "snapshot bytes":
        payload = flip(rng, payload, rng.randint(1, 16), 16)
    elif how == "truncate":
        payload = payload[:rng.randrange(len(payload))]
    elif how == "extend":
        payload = payload + bytes(rng.randrange(256) for _ in range(rng.randint(1, 64)))
    elif how == "vocab":
        vocab = list(header["vocab"])
        if vocab:
            i = rng.randrange(len(vocab))
            vocab[i] = rng.choice(["", vocab[0], "zzz" * 100, vocab[i] + "x"])
            if rng.random() < 0.5:
                vocab = vocab[: rng.randrange(len(vocab))]
        header = dict(header, vocab=vocab)
    elif how == "roles":
        header = dict(header, roles=rng.choice([[], ["user"] * 3, list(reversed(header["roles"])), [""] * 70]))
    if how in ("vocab", "roles"):  # damage to what the digest covers besides the snapshot: the digest catches it
        return join(magic, header, payload, "", fix=False), how
    if how == "no checksum fix":
        return join(magic, header, flip(rng, payload, 3), "", fix=False), how
    return join(magic, header, payload, ""), how


def main() -> None:
    pristine, work, kind, seed0, count, expected_json = sys.argv[1:7]
    expected = json.loads(Path(expected_json).read_text())
    from vmem.kernel import Memory

    for seed in range(int(seed0), int(seed0) + int(count)):
        rng = random.Random(seed)
        target = Path(work) / f"case{seed}"
        shutil.rmtree(target, ignore_errors=True)
        shutil.copytree(pristine, target)
        name = "archival.idx" if kind == "hnsw" else rng.choice(["recall.tix", "archival.tix"])
        path = target / name
        data, how = (mutate_hnsw if kind == "hnsw" else mutate_tix)(rng, path.read_bytes())
        path.write_bytes(data)
        print("start", seed, name, how, flush=True)
        try:
            with Memory.open(target) as memory:
                memory.check()
                for query, page in expected["archival"]:
                    got = memory.archival_search(query, page=0).items
                    assert got and got[0].id == page, f"archival {query!r}: {[p.id for p in got]} not {page:#x}"
                for query, page in expected["recall"]:
                    got = memory.conversation_search(query, page=0).items
                    assert got and got[0].id == page, f"recall {query!r}: {[m.id for m in got]} not {page:#x}"
                assert memory.store.archival.verify_index()
            print("ok", seed, name, how, flush=True)
        except BaseException as exc:  # noqa: BLE001 - reported to the parent
            print("FAIL", seed, name, how + ":", type(exc).__name__, str(exc)[:300].replace("\n", " "), flush=True)
        shutil.rmtree(target, ignore_errors=True)


if __name__ == "__main__":
    main()
