"""vmem.storage: the durable tiers of an agent's memory.

Interface::

    from vmem.storage import MemoryDir
    with MemoryDir.open("agent-dir") as store:          # one directory per agent
        mid = store.recall.append("user", "hi")          # recall storage (every message)
        pids = store.archival.insert("a fact", tags=["x"])   # archival storage (passages)
        store.recall.search("hi", roles=["user"])        # -> SearchPage[Message]
        store.archival.search("fact", mode="hybrid")     # -> SearchPage[Passage], current facts first
        store.archival.supersede([old_id], new_id, when) # the old fact stopped holding (kept, searchable)
        store.archival.search("fact", as_of=when)        # only what held then
        store.blocks.create("persona", "I am ...")       # core memory blocks
    shared = open_shared_blocks("team/shared-blocks.db")  # blocks several agents attach (a file or a URL)
        store.state["queue"] = [mid]                      # kernel state (msgpack values)
        store.events.append({"e": "note"})               # the append-only event log (the kernel's trace)

Modules: ``records`` (Message, Passage, Block, Hit, SearchPage, time rules),
``chunk`` (splitting texts into passages), ``recall``, ``archival`` (the
backend interface), ``sqlite`` (embedded archival backend), ``milvus``
(scale-out archival backend, needs the ``milvus`` extra), ``blocks``,
``memdir``, ``errors`` (the exception tree is drawn there); ``block_edit`` (an edit that keeps its
meaning under races), ``shared_blocks`` and ``postgres_shared`` (shared block stores); ``location`` (:func:`open_store`: a
directory or a ``postgresql://...?agent=NAME`` URL) and the PostgreSQL store: ``postgres``
(PgStore), ``postgres_connect`` (locations, pools), ``postgres_db``, ``postgres_tiers``,
``postgres_archival`` (needs the ``postgres`` extra).
"""

from vmem.storage.archival import ArchivalStore
from vmem.storage.block_edit import BlockEdit
from vmem.storage.blocks import Blocks, KernelState
from vmem.storage.chunk import split_passages
from vmem.storage.events import EventLog
from vmem.storage.journal import Journal
from vmem.storage.errors import (
    BackendError,
    BlockError,
    BlockExistsError,
    BlockLimitError,
    ConfigMismatchError,
    EditConflictError,
    CorruptStoreError,
    ForeignFileError,
    NotFoundError,
    ReadOnlyBlockError,
    ReadOnlyStoreError,
    SchemaVersionError,
    StoreClosedError,
    StoreLockedError,
    StoreNotFoundError,
    StoreOwnedError,
    UnsupportedError,
    VmemStorageError,
)
from vmem.storage.memdir import MemoryDir, MilvusConfig
from vmem.storage.location import Store, display, is_url, open_shared_blocks, open_store
from vmem.storage.shared_blocks import EditOutcome, EditRecord, SharedBlock, SharedBlockFile, SharedBlockStore
from vmem.storage.recall import RecallStore
from vmem.storage.records import Block, Hit, Message, Passage, SearchPage

__all__ = [
    "ArchivalStore",
    "BackendError",
    "Block",
    "BlockEdit",
    "BlockError",
    "BlockExistsError",
    "BlockLimitError",
    "Blocks",
    "ConfigMismatchError",
    "EditOutcome",
    "EditRecord",
    "EditConflictError",
    "CorruptStoreError",
    "EventLog",
    "ForeignFileError",
    "Hit",
    "Journal",
    "KernelState",
    "MemoryDir",
    "Message",
    "MilvusConfig",
    "NotFoundError",
    "Passage",
    "ReadOnlyBlockError",
    "ReadOnlyStoreError",
    "RecallStore",
    "SchemaVersionError",
    "SearchPage",
    "SharedBlock",
    "SharedBlockFile",
    "SharedBlockStore",
    "Store",
    "StoreClosedError",
    "StoreLockedError",
    "StoreNotFoundError",
    "StoreOwnedError",
    "UnsupportedError",
    "VmemStorageError",
    "display",
    "is_url",
    "open_shared_blocks",
    "open_store",
    "split_passages",
]
