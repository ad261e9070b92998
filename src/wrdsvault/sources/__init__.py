"""Data sources for `Warehouse.sync`: the `Source` interface and the built-in sources.

Sources are imported on first use, so ``import wrdsvault`` does not pay for their dependencies.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from wrdsvault._memory import prefer_jemalloc
from wrdsvault.sources.base import PartitionInfo, Source, TableInfo

# Sources load pyarrow: a sync's process allocates Arrow's memory from jemalloc if it can still
# choose (wrdsvault._memory says why and what is measured).
prefer_jemalloc()

if TYPE_CHECKING:
    from wrdsvault.sources.sample import SampleSource
    from wrdsvault.sources.wrds import WrdsSource

__all__ = ["PartitionInfo", "SampleSource", "Source", "TableInfo", "WrdsSource"]


def __getattr__(name: str) -> Any:
    if name == "SampleSource":
        from wrdsvault.sources.sample import SampleSource

        return SampleSource
    if name == "WrdsSource":
        from wrdsvault.sources.wrds import WrdsSource

        return WrdsSource
    msg = f"module {__name__!r} has no attribute {name!r}"
    raise AttributeError(msg)
