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

The pool is passed to the calls that allocate (``pyarrow.csv.open_csv``, casts, the
``ParquetWriter``); pyarrow's process-wide default pool is left alone, so nothing else in the
process changes. Where pyarrow was built without jemalloc (Windows wheels) the default pool is
used.
"""

from __future__ import annotations

import functools

import pyarrow as pa

__all__ = ["stream_pool"]


@functools.cache
def stream_pool() -> pa.MemoryPool:
    """jemalloc's pool if this pyarrow has it, else the default pool."""
    try:
        return pa.jemalloc_memory_pool()
    except (NotImplementedError, pa.ArrowNotImplementedError):
        return pa.default_memory_pool()
