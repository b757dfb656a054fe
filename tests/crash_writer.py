"""Child process of tests/test_crash.py: writes to a MemoryDir until it is killed.

Usage: python crash_writer.py DIR SEED ROUND [CHECKPOINT_EVERY [DURABILITY]]

Each write's content is a pure function of (seed, round, i) (see
:func:`message_text` / :func:`passage_text`), so the parent can check what it
reads back. After each write *returns* (i.e. after COMMIT) one line goes to
stdout, flushed::

    M <i> <page id>                 recall.append
    B <i> <page id>,<page id>,...   recall.append_many (messages i.0, i.1, ...)
    P <i> <page id>,...             archival.insert (passages of passage_text)
    C <i>                           checkpoint() finished (index file written)

The parent kills the process with SIGKILL at a random moment; every line it
read is a write that must survive.
"""

from __future__ import annotations

import random
import sys


def message_text(seed: int, rnd: int, i: int, j: int = 0) -> str:
    """Content of message ``i`` (batch element ``j``) of round ``rnd``."""
    r = random.Random(f"m/{seed}/{rnd}/{i}/{j}")
    words = [r.choice(["apple", "river", "orbit", "violin", "pepper", "cobalt", "harbor", "lantern"]) for _ in range(r.randint(3, 30))]
    return f"round {rnd} message {i}.{j}: " + " ".join(words)


def passage_text(seed: int, rnd: int, i: int) -> str:
    """Text of archival insert ``i`` of round ``rnd`` (sometimes long enough to be split)."""
    r = random.Random(f"p/{seed}/{rnd}/{i}")
    n = r.choice([1, 1, 1, 2, 8])
    sentences = [
        f"Fact {rnd}-{i}-{k} says the " + " ".join(r.choice(["quiet", "amber", "glacier", "signal", "meadow", "copper"]) for _ in range(12)) + "."
        for k in range(n)
    ]
    return " ".join(sentences)


def main(argv: list[str]) -> None:
    from vmem.storage import MemoryDir

    path, seed, rnd = argv[0], int(argv[1]), int(argv[2])
    every = int(argv[3]) if len(argv) > 3 else 25
    durability = argv[4] if len(argv) > 4 else "full"
    r = random.Random(f"w/{seed}/{rnd}")
    out = sys.stdout
    with MemoryDir.open(path, max_passage_chars=300, durability=durability) as store:
        out.write("READY\n")
        out.flush()
        for i in range(10**9):
            x = r.random()
            if x < 0.55:
                pid = store.recall.append("user" if i % 2 else "assistant", message_text(seed, rnd, i), meta={"i": i})
                out.write(f"M {i} {pid}\n")
            elif x < 0.65:
                ids = store.recall.append_many([("user", message_text(seed, rnd, i, j)) for j in range(r.randint(2, 6))])
                out.write(f"B {i} {','.join(map(str, ids))}\n")
            else:
                ids = store.archival.insert(passage_text(seed, rnd, i), tags=[f"round{rnd}"])
                out.write(f"P {i} {','.join(map(str, ids))}\n")
            out.flush()
            if every and i % every == every - 1:
                store.checkpoint()
                out.write(f"C {i}\n")
                out.flush()


if __name__ == "__main__":
    main(sys.argv[1:])
