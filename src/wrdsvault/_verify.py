"""Deep verification: re-hash every file a set of snapshots references.

The manifest SHA-256 is the only end-to-end guard on the DuckDB read path (DuckDB neither writes
nor checks Parquet page CRCs; single bit flips gave silently wrong answers in most reads,
docs/design/sandbox.md), so ``verify`` reads all bytes. Files shared by several snapshots are hashed
once. Hashing runs on a small thread pool: ``hashlib`` releases the GIL on large buffers, so two
cores hash about twice as fast as one.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor

import attrs

from wrdsvault._storage.layout import Layout
from wrdsvault._storage.pinned import FileProblem, PinnedFileCheck
from wrdsvault.errors import InvalidNameError
from wrdsvault.manifest import Manifest
from wrdsvault.reports import FileFault, VerifyReport

#: Called after each file with (files done, files total, bytes done, bytes total).
VerifyProgress = Callable[[int, int, int, int], None]


@attrs.frozen
class _Expected:
    path: str
    sha256: str
    size_bytes: int
    dataset: str
    year: int | None
    snapshots: tuple[str, ...]


def _fault(item: _Expected, problem: FileProblem) -> FileFault:
    detail = problem.detail
    if problem.path != item.path:  # a symlinked folder on the way to the file
        detail = f"{problem.path} {detail}"
    return FileFault(
        path=item.path,
        problem=problem.kind,
        detail=detail,
        dataset=item.dataset,
        year=item.year,
        snapshots=item.snapshots,
    )


def verify(
    layout: Layout,
    manifests: Sequence[Manifest],
    *,
    manifest_faults: Sequence[FileFault] = (),
    progress: VerifyProgress | None = None,
    workers: int | None = None,
) -> VerifyReport:
    """Re-hash every file the manifests reference; report what is missing, resized or altered."""
    started = time.monotonic()
    by_path: dict[str, _Expected] = {}
    for m in manifests:
        for name, entry in m.datasets.items():
            for p in entry.partitions:
                known = by_path.get(p.path)
                if known is None:
                    by_path[p.path] = _Expected(
                        p.path, p.sha256, p.size_bytes, name, p.year, (m.snapshot_id,)
                    )
                elif (known.sha256, known.size_bytes) != (p.sha256, p.size_bytes):
                    # Content-addressed names make this impossible unless a manifest was altered.
                    by_path[p.path + "#" + m.snapshot_id] = _Expected(
                        p.path, p.sha256, p.size_bytes, name, p.year, (m.snapshot_id,)
                    )
                else:
                    by_path[p.path] = attrs.evolve(
                        known, snapshots=(*known.snapshots, m.snapshot_id)
                    )
    items = sorted(by_path.values(), key=lambda e: e.path)
    total_bytes = sum(e.size_bytes for e in items)
    faults = list(manifest_faults)
    # The reader's own checks first (serially: they share what they learned about folders),
    # then the hashing of the files that pass them, on a thread pool.
    check = PinnedFileCheck(layout)
    to_hash: list[tuple[_Expected, str]] = []
    early: dict[int, FileFault] = {}
    for i, item in enumerate(items):
        try:
            path = layout.resolve_relpath_str(item.path)
        except InvalidNameError as exc:
            early[i] = _fault(item, FileProblem("not-a-file", item.path, str(exc)))
            early[i] = attrs.evolve(early[i], problem="manifest")
            continue
        problem = check.check(path, item.size_bytes)
        if problem is None:
            to_hash.append((item, path))
        else:
            early[i] = _fault(item, problem)
    done_bytes = 0
    read_bytes = 0
    n_workers = workers or min(4, os.cpu_count() or 1)
    with ThreadPoolExecutor(max_workers=n_workers, thread_name_prefix="wrdsvault-verify") as pool:
        hashed = pool.map(lambda job: check.hash(job[1], job[0].sha256), to_hash)
        for done_files, (i, item) in enumerate(enumerate(items), 1):
            fault = early.get(i)
            if fault is None:
                nbytes, problem = next(hashed)
                read_bytes += nbytes
                if problem is not None:
                    fault = _fault(item, problem)
            done_bytes += item.size_bytes
            if fault is not None:
                faults.append(fault)
            if progress is not None:
                progress(done_files, len(items), done_bytes, total_bytes)
    return VerifyReport(
        snapshots=tuple(m.snapshot_id for m in manifests),
        files_checked=len(items),
        bytes_checked=read_bytes,
        duration_s=time.monotonic() - started,
        faults=tuple(faults),
    )
