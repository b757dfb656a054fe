"""vmem: the memory layer of an OS-style memory kernel for LLM agents.

The C core (a paged context buffer with token-budget accounting) is wrapped by
:class:`PagedContext`; the storage tiers, the page index and the embedders live
in submodules (``vmem.storage``, ``vmem.index``, ``vmem.embed``).
"""

from vmem._core import (
    MAX_CANDIDATES,
    MAX_PAGE_TOKENS,
    Admission,
    Config,
    EvictionPlan,
    PagedContext,
    PageInfo,
    Policy,
    Region,
    State,
    Stats,
    Status,
    estimate_tokens,
    estimate_tokens_many,
)
from vmem.errors import (
    BudgetError,
    CoreError,
    CorruptSnapshot,
    EvictionError,
    InvalidArgument,
    InvariantError,
    PageExists,
    PageNotFound,
    VmemError,
)
from vmem.embed import Embedder, EmbedderError, HashEmbedder, OpenAIEmbedder, default_embedder
from vmem.index import ExactIndex, IndexFormatError, IndexMismatchError, PageIndex, load_index
from vmem.pageid import PageKind, make_page_id, page_kind, page_serial

__version__ = "0.1.0"

__all__ = [
    "PagedContext",
    "Config",
    "Region",
    "State",
    "Policy",
    "PageInfo",
    "Stats",
    "Status",
    "EvictionPlan",
    "Admission",
    "estimate_tokens",
    "estimate_tokens_many",
    "MAX_PAGE_TOKENS",
    "MAX_CANDIDATES",
    "Embedder",
    "HashEmbedder",
    "OpenAIEmbedder",
    "default_embedder",
    "PageIndex",
    "ExactIndex",
    "load_index",
    "PageKind",
    "make_page_id",
    "page_kind",
    "page_serial",
    "VmemError",
    "CoreError",
    "PageNotFound",
    "PageExists",
    "InvalidArgument",
    "EvictionError",
    "BudgetError",
    "CorruptSnapshot",
    "InvariantError",
    "EmbedderError",
    "IndexFormatError",
    "IndexMismatchError",
]
