"""Snapshot ref resolution (pure): tag, id, 'latest', as-of dates and datetimes."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from wrdsvault.errors import InvalidNameError, SnapshotNotFoundError
from wrdsvault.refs import parse_as_of, resolve_ref

A = "20251130T235959000000Z-0000000a"
B = "20251201T120000000000Z-0000000b"
C = "20251202T000000000000Z-0000000c"
SNAPS = [
    (A, datetime(2025, 11, 30, 23, 59, 59, tzinfo=timezone.utc)),
    (B, datetime(2025, 12, 1, 12, 0, tzinfo=timezone.utc)),
    (C, datetime(2025, 12, 2, 0, 0, tzinfo=timezone.utc)),
]


def resolve(ref: object, tags: dict[str, str] | None = None) -> str:
    return resolve_ref(ref, tags=tags or {}, snapshots=SNAPS)


@pytest.mark.parametrize(
    ("ref", "expected"),
    [
        ("latest", C),
        (B, B),
        ("2025-11-30", A),  # end of Nov 30 UTC
        ("2025-12-01", B),  # B at noon counts; C at midnight Dec 2 does not
        ("2025-12-02", C),
        ("2026-06-30", C),
        ("2025-12-01T11:59:59", A),
        ("2025-12-01T12:00:00", B),  # at or before: inclusive
        ("2025-12-01T12:00", B),
        ("2025-12-01 12:00:00.000000", B),
        ("2025-12-01T12:00:00Z", B),
        ("2025-12-01T13:00:00+01:00", B),  # = 12:00 UTC
        ("2025-12-01T12:59:59+01:00", A),
        ("2025-12-01T07:00:00-0500", B),
    ],
)
def test_refs_resolve(ref: str, expected: str) -> None:
    """Exact ids, 'latest' and as-of dates resolve to the expected snapshot."""
    assert resolve(ref) == expected


def test_tag_wins_over_everything() -> None:
    """A tag named like a date resolves to its snapshot, not as-of."""
    assert resolve("2025-12-02", tags={"2025-12-02": A}) == A
    assert resolve("paper", tags={"paper": B}) == B


def test_tag_pointing_at_unknown_snapshot_is_ignored() -> None:
    """A tag whose snapshot is not committed does not resolve."""
    with pytest.raises(SnapshotNotFoundError):
        resolve("ghost", tags={"ghost": "20300101T000000000000Z-deadbeef"})


def test_before_the_first_commit_lists_what_exists() -> None:
    """An as-of date before every commit raises and lists tags, newest ids and the date range."""
    with pytest.raises(SnapshotNotFoundError) as err:
        resolve("2024-01-01", tags={"paper": B})
    msg = str(err.value)
    assert C in msg
    assert "paper" in msg
    assert "2025-11-30" in msg
    assert err.value.newest[0] == C


def test_empty_vault_says_sync_first() -> None:
    """With no snapshots the error says to run sync."""
    with pytest.raises(SnapshotNotFoundError, match="run sync"):
        resolve_ref("latest", tags={}, snapshots=[])


@pytest.mark.parametrize(
    "ref", ["", "../x", "/etc/passwd", "a\\b", "x\x00y", "tag\n", "é", "a" * 129, "a;b", "'"]
)
def test_malformed_refs_are_invalid(ref: str) -> None:
    """Refs with characters no ref can have raise InvalidNameError."""
    with pytest.raises(InvalidNameError):
        resolve(ref)


def test_impossible_dates_are_invalid() -> None:
    """A date-shaped ref that is not a date raises InvalidNameError, not not-found."""
    with pytest.raises(InvalidNameError, match="not a valid date"):
        resolve("2025-02-30")


def test_non_string_ref_is_a_type_error() -> None:
    """Refs must be strings."""
    with pytest.raises(TypeError):
        resolve(20251201)


def test_parse_as_of_bounds() -> None:
    """A date means the whole day; a datetime means up to and including that instant."""
    assert parse_as_of("2025-12-01") == datetime(2025, 12, 2, tzinfo=timezone.utc)
    assert parse_as_of("tag-name") is None
