"""The Arrow memory pool a sync's streams allocate from.

A sync allocates and frees the same large buffers over and over in several threads at once: CSV
blocks parsed by each stream's parser thread, a row group's worth of them held by its writer
thread, the Parquet encoder's page buffers. pyarrow's default pool on Linux wheels (mimalloc)
keeps what a thread frees for that thread's next allocation, so with four streams the process
holds several row groups' worth of memory it no longer uses (measured at 1M rows of a
``crsp.dsf``-shaped table with 4 streams: ~465 MB of RSS growth with mimalloc, ~350 MB with
jemalloc, ~390 MB with the system allocator; docs/performance.md). pyarrow's jemalloc pool
hands freed pages back to the OS at once (its ``dirty_decay_ms`` is 0 unless
``pyarrow.jemalloc_set_decay_ms`` changed it), so peak memory follows what is in use.

The pool is passed to the calls that take one (``pyarrow.csv.open_csv``, casts, the
``ParquetWriter``). Where pyarrow was built without jemalloc (Windows wheels) the default pool
is used.

**The process default, for syncs.** The Parquet writer's encoders allocate from Arrow's C++
default pool whatever pool the writer is given (~30 MB per row group of a ``crsp.dsf``-shaped
table), and mimalloc keeps that much per writer thread; ``pyarrow.set_memory_pool`` does not
reach that C++ default. Only the environment does, read once when Arrow first allocates:
``ARROW_DEFAULT_MEMORY_POOL`` (the pool) and ``JE_ARROW_MALLOC_CONF`` (jemalloc's purging).
`prefer_jemalloc` sets both, on Linux, as defaults (a value the user set is kept), when
`wrdsvault.sources` is imported before pyarrow: a sync process (`wrdsvault sync`, a script that
imports a source first) then allocates all of Arrow's memory from jemalloc and hands freed pages
back at once. Measured at 1M rows of ``crsp.dsf`` with 4 streams: peak RSS ~590 -> ~410 MB, the
same time. A process that imported pyarrow earlier keeps its allocator; nothing else changes.
"""

from __future__ import annotations

import functools
import os
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pyarrow as pa

__all__ = ["prefer_jemalloc", "stream_pool"]

#: What `prefer_jemalloc` sets: jemalloc as Arrow's default pool; freed pages purged at once.
JEMALLOC_DEFAULTS = {
    "ARROW_DEFAULT_MEMORY_POOL": "jemalloc",
    "JE_ARROW_MALLOC_CONF": "dirty_decay_ms:0,muzzy_decay_ms:0",
}


def prefer_jemalloc() -> bool:
    """Make jemalloc Arrow's default pool for this process if it is still time to (see above).

    Returns whether the defaults were set: only on Linux (whose pyarrow wheels have jemalloc),
    before pyarrow is imported, for variables the user has not set.
    """
    if sys.platform != "linux" or "pyarrow" in sys.modules:
        return False
    for name, value in JEMALLOC_DEFAULTS.items():
        os.environ.setdefault(name, value)
    return True


@functools.cache
def stream_pool() -> pa.MemoryPool:
    """jemalloc's pool if this pyarrow has it, else the default pool."""
    import pyarrow as pa

    try:
        return pa.jemalloc_memory_pool()
    except (NotImplementedError, pa.ArrowNotImplementedError):
        return pa.default_memory_pool()
