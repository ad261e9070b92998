"""``wrdsvault doctor``: find what crashed writers and damage left behind; clean only garbage.

Read-only by default. With ``repair=True`` it takes the writer lock (so no writer is mid-commit)
and removes only what `catalog.find_garbage` proves is garbage, the same classifier every
writer's recovery uses: staging folders, temp files of atomic writes, reader leases of dead
processes, the one manifest a writer that died before its commit point left, and data files no
manifest references (judged only while every manifest can be read and ``HEAD`` is consistent).
Quarantine entries, damaged manifests, symlinks, and a ``HEAD`` behind snapshots committed after
it (``head-behind``) are reported, never touched; live reader leases are listed (``lease``), and
so are Iceberg export records (``export``; ``damaged-export-record``, ``export-missing-snapshot``).
"""

from __future__ import annotations

import os
import stat
import time
from collections.abc import Collection
from pathlib import Path
from typing import Any, Literal

import attrs

from wrdsvault._storage.catalog import GARBAGE_KINDS, BeyondHead, Catalog, find_garbage
from wrdsvault._storage.checkpoint import Checkpoints
from wrdsvault._storage.layout import Layout
from wrdsvault._storage.lease import DEFAULT_STALE_AFTER_S as LEASE_STALE_AFTER_S
from wrdsvault._storage.lease import scan_leases
from wrdsvault._storage.lock_tools import describe_lock
from wrdsvault._storage.quarantine import list_entries
from wrdsvault.errors import VaultFormatError

Kind = Literal[
    "staging",
    "checkpoint",
    "temp-file",
    "dead-lease",
    "lease",
    "uncommitted-manifest",
    "expired-manifest",
    "orphan-file",
    "stale-lock",
    "held-lock",
    "quarantine",
    "damaged-manifest",
    "damaged-tag",
    "damaged-head",
    "damaged-expiry-log",
    "damaged-export-record",
    "export",
    "export-missing-snapshot",
    "head-behind",
    "symlink",
    "disk",
]
#: Kinds reported for information: they do not make a vault unhealthy.
_INFORMATION: frozenset[str] = frozenset({"quarantine", "disk", "checkpoint", "lease", "export"})
#: Kinds the repair may delete (provably garbage once the writer lock is held).
GARBAGE: frozenset[str] = GARBAGE_KINDS

_GARBAGE_ADVICE: dict[str, str] = {
    "staging": "garbage; repair removes it (any writer also does)",
    "temp-file": "garbage; repair removes it",
    "dead-lease": "garbage (it protects nothing: its reader is gone); repair removes it",
    "uncommitted-manifest": "garbage (never visible as a snapshot); repair removes it",
    "expired-manifest": "garbage (gc expired it and no reader holds it); repair or the next "
    "gc removes it",
    "orphan-file": "garbage; repair removes it",
}


@attrs.frozen(kw_only=True)
class DoctorFinding:
    """One thing `Warehouse.doctor` found: what, where, and what to do about it.

    Attributes:
        kind: what it is (``staging``, ``orphan-file``, ``stale-lock``, ``damaged-manifest``,
            ``head-behind``, ``quarantine``, ...; docs/cli.md).
        path: where, relative to the vault root.
        detail: what is wrong with it.
        advice: what to do; whether ``doctor --repair`` removes it.
        size_bytes: bytes it takes (0 when not a file or folder of data).
    """

    kind: Kind
    path: str
    detail: str
    advice: str
    size_bytes: int = 0

    @property
    def garbage(self) -> bool:
        return self.kind in GARBAGE

    def to_json(self) -> dict[str, Any]:
        return {**attrs.asdict(self), "garbage": self.garbage}


@attrs.frozen(kw_only=True)
class DoctorReport:
    """What `Warehouse.doctor` found, and what a repair removed (``repaired``: their paths).

    ``ok`` is True when nothing is left that needs attention.
    """

    findings: tuple[DoctorFinding, ...]
    repaired: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        """No finding left that needs attention (after a repair, only what it could not fix).

        Quarantine entries, a disk past a watermark, resumable checkpoints, live reader
        leases and export records are reported but do not make a vault unhealthy.
        """
        left = [f for f in self.findings if f.path not in self.repaired]
        return not [f for f in left if f.kind not in _INFORMATION]

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "findings": [f.to_json() for f in self.findings],
            "repaired": list(self.repaired),
        }

    def summary(self) -> str:
        if not self.findings:
            return "vault is healthy: nothing to report"
        lines = []
        for f in self.findings:
            done = " [removed]" if f.path in self.repaired else ""
            lines.append(f"{f.kind:<20} {f.path}{done}\n    {f.detail}; {f.advice}")
        garbage = [f for f in self.findings if f.garbage and f.path not in self.repaired]
        if garbage:
            lines.append(f"{len(garbage)} item(s) are garbage: `wrdsvault doctor --repair`")
        return "\n".join(lines)


def _size(path: Path) -> int:
    if path.is_symlink() or not path.exists():
        return 0
    if path.is_file():
        return path.stat().st_size
    return sum(p.lstat().st_size for p in path.rglob("*") if not p.is_symlink() and p.is_file())


def _head_findings(catalog: Catalog) -> tuple[list[DoctorFinding], BeyondHead | None]:
    """Findings about HEAD: damaged, naming a missing manifest, or behind committed snapshots."""
    try:
        beyond = catalog.beyond_head()
        if beyond.head is not None:
            catalog.committed()  # HEAD's own manifest exists
    except VaultFormatError as exc:
        damaged = DoctorFinding(
            kind="damaged-head",
            path="HEAD",
            detail=exc.problem,
            advice="restore HEAD from a backup, or write the newest snapshot id into it; "
            "nothing is repaired until then",
        )
        return [damaged], None
    if not beyond.behind:
        return [], beyond
    was = f"HEAD names {beyond.head}" if beyond.head else "HEAD is missing"
    behind = DoctorFinding(
        kind="head-behind",
        path="HEAD",
        detail=f"{was}, but snapshots were committed after it: {beyond.evidence()}",
        advice=f"HEAD was moved back or lost (edited, or restored from an older copy); write "
        f"{beyond.newest} into HEAD to make the newest snapshot current again. Until "
        "then writes are refused and nothing newer than HEAD is removed",
    )
    return [behind], beyond


def examine(
    catalog: Catalog,
    *,
    stale_after_s: float,
    file_mode: int = 0o600,
    leased: frozenset[str] | None = None,
    lease_stale_after_s: float = LEASE_STALE_AFTER_S,
) -> list[DoctorFinding]:
    """Everything worth reporting in the vault, read-only.

    ``leased``: the snapshot ids live readers hold; without it, expired manifests still on
    disk are not judged (a reader may hold them).
    """
    layout = catalog.layout
    rel = layout.relative

    out, beyond = _head_findings(catalog)
    on_disk = catalog.manifest_ids()
    good, damaged_tags = catalog.scan_tags()
    for name, sid in good.items():
        if sid not in on_disk:
            damaged_tags[name] = f"names snapshot {sid}, which does not exist"
    for name, problem in sorted(damaged_tags.items()):
        out.append(
            DoctorFinding(
                kind="damaged-tag",
                path=f"tags/{name}",
                detail=problem,
                advice="re-tag with `wrdsvault tag NAME REF --force`, or delete the file",
            )
        )
    for dataset, folder, size in Checkpoints(layout).entries():
        out.append(
            DoctorFinding(
                kind="checkpoint",
                path=rel(folder),
                size_bytes=size,
                detail=f"years of {dataset} staged by a sync that did not finish",
                advice=f"kept so that `wrdsvault sync {dataset}` resumes without downloading "
                "them again; removed by that sync's commit or after a week",
            )
        )
    try:
        log_problems = catalog.expiry_log_problems()
    except VaultFormatError as exc:
        log_problems = [exc.problem]
    for problem in log_problems:
        out.append(
            DoctorFinding(
                kind="damaged-expiry-log",
                path="expired.jsonl",
                detail=problem,
                advice="restore expired.jsonl from a backup; until then the snapshot this line "
                "named may be listed again (its files may be gone: verify it)",
            )
        )
    out += _export_findings(layout, set(on_disk))
    for item in find_garbage(catalog, leased=leased, lease_stale_after_s=lease_stale_after_s):
        out.append(
            DoctorFinding(
                kind=item.kind,
                path=rel(item.path),
                size_bytes=_size(item.path),
                detail=item.reason,
                advice=_GARBAGE_ADVICE[item.kind],
            )
        )
    newer = beyond.unreadable if beyond is not None else {}
    for sid in on_disk:
        try:
            catalog.manifest(sid)
        except VaultFormatError as exc:
            out.append(
                DoctorFinding(
                    kind="damaged-manifest",
                    path=rel(layout.manifest(sid)),
                    detail=exc.problem,
                    advice="restore the file from a backup; snapshots that need it cannot open"
                    + (
                        ""
                        if sid not in newer
                        else "; it is newer than HEAD, so it may be a "
                        "committed snapshot: writes are refused until it is restored or removed"
                    ),
                )
            )
    for path in _symlinks(layout.data_dir):
        out.append(
            DoctorFinding(
                kind="symlink",
                path=rel(path),
                detail="symlink inside the vault",
                advice="replace it with the real file or folder; snapshots that pass "
                "through it are refused",
            )
        )
    lock = describe_lock(layout.lock, stale_after_s=stale_after_s, file_mode=file_mode)
    state = lock.state if lock is not None else "free"
    if lock is None or lock.free:
        pass
    elif lock.stale:
        out.append(
            DoctorFinding(
                kind="stale-lock",
                path=rel(layout.lock),
                detail=state,
                advice="the next writer breaks it; repair does so now",
            )
        )
    else:  # held, or unknown (no write access to judge another host's lock)
        out.append(
            DoctorFinding(
                kind="held-lock",
                path=rel(layout.lock),
                detail=("" if state == "held" else f"{state}; ")
                + f"held by pid {lock.pid} on {lock.host} since "
                f"{lock.acquired_at} ({lock.operation})",
                advice="a writer is working; wait for it",
            )
        )
    out += _live_leases(layout, stale_after_s=lease_stale_after_s, file_mode=file_mode)
    for entry in list_entries(layout):
        out.append(
            DoctorFinding(
                kind="quarantine",
                path=rel(entry.path),
                size_bytes=entry.size_bytes,
                detail=f"{entry.error}: {entry.message[:160]}",
                advice="inspect with `wrdsvault quarantine show`; purge when done",
            )
        )
    return out


def _export_findings(layout: Layout, on_disk: Collection[str]) -> list[DoctorFinding]:
    """Each export record (what gc keeps for it), and the ones that are damaged or name a
    snapshot the vault no longer has."""
    from wrdsvault.exports import scan_records

    try:
        records, damaged = scan_records(layout)
    except VaultFormatError as exc:
        records, damaged = [], [exc]
    out = [
        DoctorFinding(
            kind="damaged-export-record",
            path=layout.relative(Path(exc.path)),
            detail=exc.problem,
            advice="gc refuses to run until it is restored from a backup, written again by "
            "the export (`wrdsvault export-iceberg` with its catalog and namespace), or deleted",
        )
        for exc in damaged
    ]
    for path, record in records:
        missing = [sid for sid in record.snapshots if sid not in on_disk]
        where = f"Iceberg catalog {record.catalog}, namespace {record.namespace}"
        if missing:
            out.append(
                DoctorFinding(
                    kind="export-missing-snapshot",
                    path=layout.relative(path),
                    detail=f"the tables in {where} name {len(missing)} vault snapshot(s) whose "
                    f"manifest is gone ({', '.join(missing[:3])}"
                    + (", ..." if len(missing) > 3 else "")
                    + "): reading them there fails",
                    advice="restore the manifests and their files from a backup, or expire "
                    "those snapshots on the Iceberg side and run the export again",
                )
            )
        out.append(
            DoctorFinding(
                kind="export",
                path=layout.relative(path),
                detail=f"{where} reads {len(record.tables)} table(s) from this vault; exported "
                f"{record.exported_at}",
                advice=f"gc keeps the {len(record.snapshots)} snapshot(s) it names; expire them "
                "on the Iceberg side and export again to let them go",
            )
        )
    return out


def _live_leases(layout: Layout, *, stale_after_s: float, file_mode: int) -> list[DoctorFinding]:
    """The reader leases that protect a snapshot now (information, not a problem)."""
    try:
        leases = scan_leases(layout, stale_after_s=stale_after_s, file_mode=file_mode)
    except OSError:
        return []  # the dead ones are judged by find_garbage, which says nothing then either
    out = []
    for lease in leases:
        if not lease.held:
            continue
        record = lease.record or {}
        who = (
            f"pid {record.get('pid')} on {record.get('host')} since {record.get('created_at')}"
            if record
            else "an unreadable lease (held for a grace period)"
        )
        age = time.time() - lease.refreshed_at
        out.append(
            DoctorFinding(
                kind="lease",
                path=layout.relative(lease.path),
                detail=f"snapshot {lease.snapshot_id} is open: {who}, refreshed {age:.0f} s ago"
                + (f" ({lease.unknown})" if lease.unknown else ""),
                advice="a reader is using it; gc keeps its files until it is closed",
            )
        )
    return out


def _symlinks(folder: Path) -> list[Path]:
    """Every symlink under ``folder`` (files and folders), not following any."""
    found: list[Path] = []
    if not folder.is_dir():
        return found
    for dirpath, dirnames, filenames in os.walk(folder):
        here = Path(dirpath)
        for name in sorted([*dirnames, *filenames]):
            if stat.S_ISLNK((here / name).lstat().st_mode):
                found.append(here / name)
        dirnames[:] = [d for d in dirnames if not (here / d).is_symlink()]
    return found
