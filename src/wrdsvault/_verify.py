"""Deep verification: re-hash every file a set of snapshots references.

The manifest SHA-256 is the only end-to-end guard on the DuckDB read path (DuckDB neither writes
nor checks Parquet page CRCs; single bit flips gave silently wrong answers in most reads,
docs/design/sandbox.md), so ``verify`` reads all bytes. Files shared by several snapshots are hashed
once. Hashing runs on a small thread pool: ``hashlib`` releases the GIL on large buffers, so two
cores hash about twice as fast as one.
"""

from __future__ import annotations

import os
import stat
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor

import attrs

from wrdsvault._storage.atomic import sha256_file
from wrdsvault._storage.layout import Layout
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


def _check(root: Layout, item: _Expected) -> tuple[int, FileFault | None]:
    """Return (bytes read, fault or None) for one file."""

    def fault(problem: str, detail: str) -> FileFault:
        return FileFault(
            path=item.path,
            problem=problem,
            detail=detail,
            dataset=item.dataset,
            year=item.year,
            snapshots=item.snapshots,
        )

    try:
        path = root.resolve_relpath(item.path)
    except InvalidNameError as exc:
        return 0, fault("manifest", str(exc))
    try:
        st = path.lstat()
    except FileNotFoundError:
        return 0, fault("missing", "file is missing")
    if not stat.S_ISREG(st.st_mode):
        return 0, fault("not-a-file", "not a regular file (symlink or folder)")
    if st.st_size != item.size_bytes:
        return 0, fault(
            "size", f"{st.st_size:,} bytes on disk, {item.size_bytes:,} in the manifest"
        )
    try:
        digest, size = sha256_file(path)
    except OSError as exc:
        return 0, fault("unreadable", f"{type(exc).__name__}: {exc}")
    if digest != item.sha256:
        return size, fault("sha256", f"sha256 {digest[:16]}... differs from the manifest")
    return size, None


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
    done_files = 0
    done_bytes = 0
    read_bytes = 0
    n_workers = workers or min(4, os.cpu_count() or 1)
    with ThreadPoolExecutor(max_workers=n_workers, thread_name_prefix="wrdsvault-verify") as pool:
        for item, (nbytes, fault) in zip(
            items, pool.map(lambda e: _check(layout, e), items), strict=True
        ):
            done_files += 1
            done_bytes += item.size_bytes
            read_bytes += nbytes
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
