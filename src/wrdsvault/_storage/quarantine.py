"""Quarantine: failed writes are kept, with a machine-readable reason, never silently deleted.

``quarantine/<when>-<label>-<4 hex>/`` (`Layout.quarantine_entry`) holds the staged files of the
failed write and ``reason.json``:

```json
{"format": 1, "created_at": "...Z", "label": "crsp.msf", "operation": "sync crsp.msf",
 "error": "ValidationFailedError", "message": "...", "evidence": {...},
 "files": [{"name": "crsp.msf-2019.parquet", "size_bytes": 123}], "traceback": "..."}
```

Entries are removed only by an explicit purge (``wrdsvault quarantine purge``).
"""

from __future__ import annotations

import json
import re
import secrets
import traceback
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Final

import attrs

from wrdsvault._storage.atomic import (
    atomic_write_bytes,
    fsync_dir,
    make_dirs,
    publish,
    remove_tree,
)
from wrdsvault._storage.layout import QUARANTINE_ENTRY_RE, Layout
from wrdsvault.errors import InvalidNameError, WrdsVaultError

REASON_FILE: Final = "reason.json"


@attrs.frozen(kw_only=True)
class QuarantineEntry:
    """One quarantined write, as `Warehouse.quarantine` lists it: where it is and why it failed.

    Attributes:
        name: the entry's folder name (``<when>-<label>-<random>``), what purge takes.
        path: the entry's folder under ``quarantine/``.
        created_at: when the write failed (ISO UTC).
        label: what was being written (the dataset, or the operation).
        error: the error's class name (``ValidationFailedError``, ``DiskSpaceError``, ...).
        message: the error's message.
        size_bytes: bytes of the files kept.
        reason: the whole ``reason.json`` (evidence, file list, traceback).
    """

    name: str
    path: Path
    created_at: str
    label: str
    error: str
    message: str
    size_bytes: int
    reason: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "path": str(self.path),
            "created_at": self.created_at,
            "label": self.label,
            "error": self.error,
            "message": self.message,
            "size_bytes": self.size_bytes,
        }


def _jsonable(value: Any) -> Any:
    try:
        json.dumps(value)
    except (TypeError, ValueError):
        if attrs.has(type(value)) and hasattr(value, "to_json"):
            return value.to_json()
        return repr(value)
    return value


def quarantine(
    layout: Layout,
    staging: Path,
    *,
    label: str,
    operation: str,
    exc: BaseException,
    file_mode: int,
    dir_mode: int,
) -> Path:
    """Move ``staging`` (the failed write's files) to a new quarantine entry with reason.json."""
    now = datetime.now(timezone.utc)
    slug = re.sub(r"[^a-z0-9_.-]+", "-", label.lower()).strip("-")[:80] or "write"
    name = f"{now:%Y%m%dT%H%M%SZ}-{slug}-{secrets.token_hex(2)}"
    files = (
        [{"name": p.name, "size_bytes": p.stat().st_size} for p in sorted(staging.iterdir())]
        if staging.is_dir()
        else []
    )
    evidence = getattr(exc, "_evidence", {}) if isinstance(exc, WrdsVaultError) else {}
    reason = {
        "format": 1,
        "created_at": now.isoformat().replace("+00:00", "Z"),
        "label": label,
        "operation": operation,
        "error": type(exc).__name__,
        "message": str(exc),
        "evidence": {k: _jsonable(v) for k, v in evidence.items()},
        "files": files,
        "traceback": "".join(traceback.format_exception(type(exc), exc, exc.__traceback__)),
    }
    quarantine_dir = layout.quarantine_dir
    make_dirs(quarantine_dir, mode=dir_mode)
    target = layout.quarantine_entry(name)
    if staging.is_dir():
        publish(staging, target)
    else:
        target.mkdir(mode=dir_mode)
        fsync_dir(quarantine_dir)
    atomic_write_bytes(
        target / REASON_FILE,
        json.dumps(reason, indent=2, sort_keys=True).encode() + b"\n",
        mode=file_mode,
    )
    return target


def _entry(path: Path) -> QuarantineEntry:
    try:
        reason = json.loads((path / REASON_FILE).read_bytes())
    except (OSError, ValueError, RecursionError):
        reason = None
    if not isinstance(reason, dict):
        reason = {"error": "unknown", "message": "reason.json is missing or unreadable"}
    size = sum(p.stat().st_size for p in path.iterdir() if p.is_file() and not p.is_symlink())
    return QuarantineEntry(
        name=path.name,
        path=path,
        created_at=str(reason.get("created_at", "")),
        label=str(reason.get("label", "")),
        error=str(reason.get("error", "")),
        message=str(reason.get("message", "")),
        size_bytes=size,
        reason=reason,
    )


def list_entries(layout: Layout) -> list[QuarantineEntry]:
    """Every quarantine entry, oldest first."""
    if not layout.quarantine_dir.is_dir():
        return []
    return [
        _entry(p)
        for p in sorted(layout.quarantine_dir.iterdir())
        if p.is_dir() and not p.is_symlink() and QUARANTINE_ENTRY_RE.fullmatch(p.name)
    ]


def entry_path(layout: Layout, name: str) -> Path:
    """The folder of the entry called ``name`` (validated; never outside the quarantine)."""
    path = layout.quarantine_entry(name)
    if not path.is_dir():
        raise InvalidNameError(kind="quarantine entry", value=name, rule="no such entry")
    return path


def purge(layout: Layout, names: list[str]) -> list[str]:
    """Delete the named entries; return their names."""
    paths = [entry_path(layout, n) for n in names]
    for p in paths:
        remove_tree(p)
    if paths:
        fsync_dir(layout.quarantine_dir)
    return [p.name for p in paths]
