"""``wrdsvault doctor``: find what crashed writers and damage left behind; clean only garbage.

Read-only by default. With ``repair=True`` it takes the writer lock (so no writer is mid-commit)
and removes only what is provably garbage: staging folders, temp files of atomic writes,
manifests newer than ``HEAD`` (never committed), and data files that no committed manifest
references. Quarantine entries, damaged manifests and symlinks are reported, never touched.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import attrs

from wrdsvault._storage.checkpoint import Checkpoints
from wrdsvault._storage.layout import SNAPSHOT_ID_RE, Layout
from wrdsvault._storage.lock import describe_lock
from wrdsvault._storage.quarantine import list_entries
from wrdsvault.errors import VaultFormatError
from wrdsvault.manifest import Manifest

Kind = Literal[
    "staging",
    "checkpoint",
    "temp-file",
    "uncommitted-manifest",
    "orphan-file",
    "stale-lock",
    "held-lock",
    "quarantine",
    "damaged-manifest",
    "damaged-tag",
    "damaged-head",
    "symlink",
    "disk",
]
#: Kinds the repair may delete (provably garbage once the writer lock is held).
GARBAGE: frozenset[str] = frozenset({"staging", "temp-file", "uncommitted-manifest", "orphan-file"})


@attrs.frozen(kw_only=True)
class DoctorFinding:
    """One thing doctor found: what, where, and what to do about it."""

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
    """Everything doctor found, and what a repair removed."""

    findings: tuple[DoctorFinding, ...]
    repaired: tuple[str, ...] = ()

    @property
    def healthy(self) -> bool:
        """No finding left that needs attention (after a repair, only what it could not fix)."""
        left = [f for f in self.findings if f.path not in self.repaired]
        return not [f for f in left if f.kind not in ("quarantine", "disk", "checkpoint")]

    def to_json(self) -> dict[str, Any]:
        return {
            "healthy": self.healthy,
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


def _first_commit(path: Path) -> bool:
    """Whether ``path`` is the manifest of a first commit (what a crashed first sync leaves)."""
    try:
        manifest = Manifest.from_json(path.read_bytes(), where=str(path))
    except (OSError, VaultFormatError):
        return False
    return manifest.parent is None and manifest.sequence == 1


def examine(
    layout: Layout,
    *,
    head_id: str | None,
    committed: list[str],
    load: Callable[[str], Manifest],
    stale_after_s: float,
    file_mode: int = 0o600,
    damaged_tags: dict[str, str] | None = None,
    head_damaged: bool = False,
) -> list[DoctorFinding]:
    """Everything worth reporting in the vault, read-only.

    With ``head_damaged`` nothing is judged garbage by its relation to HEAD (uncommitted
    manifests, orphan files): without a trustworthy HEAD that cannot be proven.
    """
    out: list[DoctorFinding] = []
    for name, problem in sorted((damaged_tags or {}).items()):
        out.append(
            DoctorFinding(
                kind="damaged-tag",
                path=f"tags/{name}",
                detail=problem,
                advice="re-tag with `wrdsvault tag NAME REF --force`, or delete the file",
            )
        )
    root = layout.root

    def rel(p: Path) -> str:
        return str(p.relative_to(root))

    checkpoints = Checkpoints(layout)
    for dataset, folder, size in checkpoints.entries():
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
    if layout.tmp_dir.is_dir():
        for child in sorted(layout.tmp_dir.iterdir()):
            if child == checkpoints.root:
                continue
            out.append(
                DoctorFinding(
                    kind="staging",
                    path=rel(child),
                    size_bytes=_size(child),
                    detail="staging left by a writer that did not finish",
                    advice="garbage; repair removes it (any writer also does)",
                )
            )
    for folder in (root, layout.snapshots_dir, layout.tags_dir):
        if folder.is_dir():
            for child in sorted(folder.iterdir()):
                if child.name.startswith(".") and child.name.endswith(".tmp"):
                    out.append(
                        DoctorFinding(
                            kind="temp-file",
                            path=rel(child),
                            size_bytes=_size(child),
                            detail="temp file of an interrupted atomic write",
                            advice="garbage; repair removes it",
                        )
                    )
    manifests: list[Manifest] = []
    if layout.snapshots_dir.is_dir():
        for child in sorted(layout.snapshots_dir.glob("*.json")):
            sid = child.name.removesuffix(".json")
            if not SNAPSHOT_ID_RE.fullmatch(sid) or head_damaged:
                continue
            if head_id is None and not _first_commit(child):
                out.append(
                    DoctorFinding(
                        kind="damaged-head",
                        path="HEAD",
                        detail="HEAD is missing but committed snapshots exist",
                        advice="restore HEAD from a backup, or write the newest snapshot id "
                        "into it",
                    )
                )
                break
            # Without HEAD, only a crashed first sync's manifest can be here: uncommitted.
            if head_id is None or sid > head_id:
                out.append(
                    DoctorFinding(
                        kind="uncommitted-manifest",
                        path=rel(child),
                        size_bytes=_size(child),
                        detail="manifest written by a writer that died before its commit point",
                        advice="garbage (never visible as a snapshot); repair removes it",
                    )
                )
    for sid in committed:
        try:
            manifests.append(load(sid))
        except VaultFormatError as exc:
            out.append(
                DoctorFinding(
                    kind="damaged-manifest",
                    path=f"snapshots/{sid}.json",
                    detail=exc.problem,
                    advice="restore the file from a backup; snapshots that need it cannot open",
                )
            )
    referenced = {p.path for m in manifests for p in m.files()}
    complete = len(manifests) == len(committed) and not head_damaged
    if layout.data_dir.is_dir():
        for dirpath, dirnames, filenames in os.walk(layout.data_dir):
            here = Path(dirpath)
            for name in [*dirnames, *filenames]:
                p = here / name
                if stat.S_ISLNK(p.lstat().st_mode):
                    out.append(
                        DoctorFinding(
                            kind="symlink",
                            path=rel(p),
                            detail="symlink inside the vault",
                            advice="replace it with the real file or folder; snapshots that pass "
                            "through it are refused",
                        )
                    )
            dirnames[:] = [d for d in dirnames if not (here / d).is_symlink()]
            for name in filenames:
                p = here / name
                if p.is_symlink() or not name.endswith(".parquet"):
                    continue
                if rel(p) not in referenced and complete:
                    out.append(
                        DoctorFinding(
                            kind="orphan-file",
                            path=rel(p),
                            size_bytes=_size(p),
                            detail="no committed snapshot references this data file",
                            advice="garbage; repair removes it",
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
    for entry in list_entries(layout.quarantine_dir):
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
