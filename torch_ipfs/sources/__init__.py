"""Block sources: where verified blocks come from.

Every source implements :class:`BlockSource` (``get``/``get_many``/``has``/``close``)
and every block it returns has been hashed against its CID. :class:`LocalStore` is the
embedded on-disk store (the default); :class:`CachedSource` wraps any source with a
verified, size-limited disk cache shared by the processes of a host.
"""

from torch_ipfs.sources.base import MAX_BLOCK_SIZE, BlockSource, BlockStore, MemoryStore, NullStore
from torch_ipfs.sources.cache import CachedSource, CacheStats
from torch_ipfs.sources.local import GCResult, LocalStore, StoreStats

__all__ = [
    "MAX_BLOCK_SIZE",
    "BlockSource",
    "BlockStore",
    "CacheStats",
    "CachedSource",
    "GCResult",
    "LocalStore",
    "MemoryStore",
    "NullStore",
    "StoreStats",
]
