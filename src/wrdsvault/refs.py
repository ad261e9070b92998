"""Snapshot refs: a tag, an exact id, ``"latest"``, or an ISO date/datetime read as-of (no I/O).

Resolution order: tag, exact snapshot id, ``"latest"``, then as-of. A date means "as the
vault stood at the end of that day, UTC": the last snapshot committed before the next midnight UTC.
A datetime without a zone is read as UTC. No ref ever becomes a path: tags and ids are looked up in
lists the caller read from disk.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from datetime import date, datetime, time, timedelta, timezone
from typing import Final

from wrdsvault.errors import InvalidNameError, SnapshotNotFoundError
from wrdsvault.manifest import format_timestamp
from wrdsvault.retention import ExpiredSnapshot, RetentionPolicy

__all__ = ["MAX_REF_LENGTH", "not_found_error", "parse_as_of", "resolve_ref"]

MAX_REF_LENGTH: Final = 128
_DATE_RE: Final = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_DATETIME_RE: Final = re.compile(
    r"^\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(:\d{2}(\.\d{1,6})?)?(Z|[+-]\d{2}:?\d{2})?$"
)
_PRINTABLE_RE: Final = re.compile(r"^[A-Za-z0-9._:+ -]+$")


def parse_as_of(ref: str) -> datetime | None:
    """The instant an as-of ref stands for (exclusive upper bound), or None if not a date.

    ``"2025-12-01"`` -> 2025-12-02T00:00Z (anything committed on Dec 1 UTC counts);
    ``"2025-12-01T14:30"`` -> 2025-12-01T14:30:00.000001Z (at or before 14:30:00 UTC counts).

    Raises:
        InvalidNameError: it looks like a date but is not a valid one (``2025-02-30``).
    """
    try:
        if _DATE_RE.fullmatch(ref):
            day = date.fromisoformat(ref)
            return datetime.combine(day, time(), tzinfo=timezone.utc) + timedelta(days=1)
        if _DATETIME_RE.fullmatch(ref):
            text = ref.replace(" ", "T")
            if text.endswith("Z"):
                text = text[:-1] + "+00:00"
            elif re.search(r"[+-]\d{4}$", text):
                text = f"{text[:-2]}:{text[-2:]}"
            when = datetime.fromisoformat(text)
            if when.tzinfo is None:
                when = when.replace(tzinfo=timezone.utc)
            return when.astimezone(timezone.utc) + timedelta(microseconds=1)
    except OverflowError:
        # Past datetime's range: later than every commit (9999-...) or earlier than every one.
        big = ref[:4] == "9999"
        return (datetime.max if big else datetime.min).replace(tzinfo=timezone.utc)
    except ValueError as exc:
        raise InvalidNameError(
            kind="snapshot ref", value=ref, rule=f"not a valid date ({exc})"
        ) from exc
    return None


def resolve_ref(
    ref: object,
    *,
    tags: Mapping[str, str],
    snapshots: Sequence[tuple[str, datetime]],
    expired: Mapping[str, ExpiredSnapshot] | None = None,
) -> str:
    """Return the snapshot id ``ref`` names.

    An as-of ref is resolved over the whole history, expired snapshots included: a date on
    which an expired snapshot was current names that snapshot (and fails), never an older one
    that would give other answers.

    Args:
        ref: tag, exact id, ``"latest"``, or ISO date/datetime.
        tags: tag name -> snapshot id.
        snapshots: (id, committed_at) of every committed snapshot, oldest first.
        expired: id -> expiry record of every snapshot gc expired.

    Raises:
        TypeError: ``ref`` is not a string.
        InvalidNameError: ``ref`` is empty, too long, or has characters no ref can have.
        SnapshotNotFoundError: nothing matches, or ``ref`` names an expired snapshot; the
            message lists what exists (and when gc expired it).
    """
    if not isinstance(ref, str):
        msg = f"a snapshot ref must be a str, not {type(ref).__name__}"
        raise TypeError(msg)
    if not ref or len(ref) > MAX_REF_LENGTH or _PRINTABLE_RE.fullmatch(ref) is None:
        raise InvalidNameError(
            kind="snapshot ref",
            value=ref,
            rule="a tag, a snapshot id, 'latest', or an ISO date such as '2025-12-01'",
        )
    expired = expired or {}
    ids = {sid for sid, _ in snapshots}

    def not_found(expired_id: str | None = None) -> SnapshotNotFoundError:
        return not_found_error(
            ref, tags=tags, snapshots=snapshots, expired=expired, expired_id=expired_id
        )

    if ref in tags:
        if tags[ref] in ids:
            return tags[ref]
        if tags[ref] in expired:
            raise not_found(tags[ref])
    if ref in ids:
        return ref
    if ref in expired:
        raise not_found(ref)
    if ref == "latest" and snapshots:
        return snapshots[-1][0]
    bound = parse_as_of(ref)
    if bound is not None:
        history = [(sid, when) for sid, when in snapshots if when < bound]
        history += [(sid, e.committed_at) for sid, e in expired.items() if e.committed_at < bound]
        if history:
            sid = max(history, key=lambda item: (item[1], item[0]))[0]
            if sid in ids:
                return sid
            raise not_found(sid)
    raise not_found()


def not_found_error(
    ref: str,
    *,
    tags: Mapping[str, str],
    snapshots: Sequence[tuple[str, datetime]],
    expired: Mapping[str, ExpiredSnapshot],
    expired_id: str | None = None,
) -> SnapshotNotFoundError:
    """The `SnapshotNotFoundError` for ``ref``: it matches nothing, or (``expired_id``) it names
    a snapshot gc expired, with when and by which policy."""
    entry = expired.get(expired_id) if expired_id else None
    return SnapshotNotFoundError(
        ref=ref,
        tags=sorted(tags),
        newest=[sid for sid, _ in snapshots[-3:]][::-1],
        committed_range=(
            (snapshots[0][1].isoformat(), snapshots[-1][1].isoformat()) if snapshots else None
        ),
        expired_id=expired_id,
        expired_at=format_timestamp(entry.expired_at) if entry else None,
        expired_policy=str(_policy(entry.policy)) if entry else None,
    )


def _policy(obj: Mapping[str, object]) -> RetentionPolicy | str:
    try:
        return RetentionPolicy.from_json(obj)
    except (TypeError, ValueError):
        return str(dict(obj))
