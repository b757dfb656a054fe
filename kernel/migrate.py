"""Moving an agent between a directory and a PostgreSQL location, checked by its digest.

Interface::

    digest = migrate("agents/ana", "postgresql://vmem@db:5432/app?agent=ana")   # or the other way

The source is read in one consistent state (a directory is opened for writing, which locks
out any other writer; a PostgreSQL agent is read in one snapshot, beside its running workers),
its rows are copied into the new destination (:func:`vmem.storage.migrate.copy_store`: ids,
embeddings, intervals, state and trace kept), and both are opened as memories: the copy stands
only if ``Memory.digest()`` is equal. On any failure the destination is removed again.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from vmem.kernel.errors import KernelError
from vmem.kernel.memory import Memory
from vmem.storage import display, is_url, open_store
from vmem.storage.migrate import copy_store
from vmem.storage.postgres import PgStore

__all__ = ["migrate"]


def migrate(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> str:
    """Copy the agent at ``src`` to the new location ``dst``; return the digest both have.

    KernelError when ``src`` holds no agent, ``dst`` holds one (or is a non-empty directory),
    or the copy's digest differs (then nothing is left at ``dst``).
    """
    if not Memory.exists(src):
        raise KernelError(f"{display(src)} holds no vmem agent")
    if Memory.exists(dst):
        raise KernelError(f"{display(dst)} holds an agent already; migrate into a new location")
    made_dir = False
    if not is_url(dst):
        d = Path(dst)
        if d.exists() and (not d.is_dir() or any(d.iterdir())):
            raise KernelError(f"{d} exists and is not an empty directory; name a new one")
        made_dir = not d.exists()
    try:
        with open_store(src, create=False, read_only=is_url(src)) as source, open_store(dst) as target:
            copy_store(source, target)
        with Memory.open(src, read_only=True) as a, Memory.open(dst, read_only=True) as b:
            want, got = a.digest(), b.digest()
        if want != got:
            raise KernelError(f"the copy in {display(dst)} does not match {display(src)} "
                              f"(digest {got[:12]} != {want[:12]}); nothing was kept")
        return got
    except BaseException:
        _remove(dst, made_dir)
        raise


def _remove(dst: str | os.PathLike[str], made_dir: bool) -> None:
    """Take a failed copy away: the agent's rows, or what the copy put in the directory."""
    if is_url(dst):
        try:
            with open_store(dst, create=False) as store:
                if isinstance(store, PgStore):  # it is: dst is a URL
                    store.drop()
        except Exception:  # noqa: BLE001 - nothing there, or the server is gone: the error above is the one
            pass
        return
    d = Path(dst)
    if made_dir:
        shutil.rmtree(d, ignore_errors=True)
    elif d.is_dir():
        for child in d.iterdir():
            shutil.rmtree(child) if child.is_dir() else child.unlink()
