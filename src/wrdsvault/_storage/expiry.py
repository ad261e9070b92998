"""The expiry log ``expired.jsonl``: every snapshot gc expired, append-only, one JSON line each.

A line is written whole with one ``write`` and fsynced before gc deletes anything (the folder is
fsynced too when the file is new), so once gc deletes a file the expiry that allows it is
durable. A line cut short by a power loss during an append was never acknowledged: reading
ignores an unterminated last line and the next append truncates it first. Any other line that
cannot be read is skipped and reported by ``doctor``; skipping errs on the safe side (the
snapshot it named looks committed again, so nothing of it is deleted).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from typing import Final

from wrdsvault._storage.atomic import append_durably
from wrdsvault._storage.crashpoints import GcPoint, gc_point
from wrdsvault._storage.layout import Layout, validate_snapshot_id
from wrdsvault.manifest import format_timestamp, parse_timestamp
from wrdsvault.retention import ExpiredSnapshot

__all__ = ["EXPIRY_LOG", "append_expired", "read_expired"]

#: The log's name in the vault root.
EXPIRY_LOG: Final = "expired.jsonl"


def _record(entry: ExpiredSnapshot) -> bytes:
    obj = {
        "snapshot_id": entry.snapshot_id,
        "sequence": entry.sequence,
        "committed_at": format_timestamp(entry.committed_at),
        "fingerprint": entry.fingerprint,
        "expired_at": format_timestamp(entry.expired_at),
        "policy": entry.policy,
    }
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode() + b"\n"


def _parse(line: bytes) -> ExpiredSnapshot:
    obj = json.loads(line)
    return ExpiredSnapshot(
        snapshot_id=validate_snapshot_id(obj["snapshot_id"]),
        sequence=int(obj["sequence"]),
        committed_at=parse_timestamp(str(obj["committed_at"])),
        fingerprint=str(obj["fingerprint"]),
        expired_at=parse_timestamp(str(obj["expired_at"])),
        policy=dict(obj.get("policy") or {}),
    )


def read_expired(layout: Layout) -> tuple[dict[str, ExpiredSnapshot], list[str]]:
    """(id -> its first expiry record, problems with lines that could not be read).

    Raises:
        OSError: the log exists but cannot be read.
    """
    path = layout.expiry_log
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return {}, []
    out: dict[str, ExpiredSnapshot] = {}
    problems: list[str] = []
    lines = raw.split(b"\n")
    # The last element is b"" after a terminated line, or the unterminated tail of a torn append.
    for number, line in enumerate(lines[:-1], start=1):
        if not line.strip():
            continue
        try:
            entry = _parse(line)
        except (ValueError, KeyError, TypeError, AttributeError, OverflowError) as exc:
            problems.append(f"line {number}: {type(exc).__name__}: {exc}"[:200])
            continue
        out.setdefault(entry.snapshot_id, entry)
    return out, problems


def append_expired(layout: Layout, entries: Sequence[ExpiredSnapshot], *, file_mode: int) -> None:
    """Append ``entries`` durably (one write, fsync; the folder fsynced if the log is new).

    Run under the writer lock. An unterminated last line (a torn earlier append) is cut off
    first.
    """
    if not entries:
        return
    append_durably(
        layout.expiry_log,
        b"".join(_record(e) for e in entries),
        mode=file_mode,
        after_write=lambda: gc_point(GcPoint.EXPIRY_WRITTEN),
    )
    gc_point(GcPoint.EXPIRY_DURABLE)


def expired_at_text(when: datetime) -> str:
    """How messages print an expiry time."""
    return format_timestamp(when)
