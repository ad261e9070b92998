"""The retention policy engine: which snapshots each rule keeps (restic's semantics), pure."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from wrdsvault import InvalidValueError, RetentionPolicy
from wrdsvault.retention import parse_duration, select_kept

T0 = datetime(2025, 1, 1, 12, 0, tzinfo=timezone.utc)


def snaps(*offsets_h: float) -> list[tuple[str, datetime]]:
    """Snapshots committed ``offsets_h`` hours after T0, oldest first, with sortable ids."""
    out = []
    for h in sorted(offsets_h):
        when = T0 + timedelta(hours=h)
        out.append((when.strftime("%Y%m%dT%H%M%S%fZ-00000000"), when))
    return out


def kept_ids(snapshots: list[tuple[str, datetime]], **rules: object) -> list[int]:
    """Indexes (oldest = 0) of the snapshots ``rules`` keep."""
    kept = select_kept(snapshots, RetentionPolicy(**rules))  # type: ignore[arg-type]
    return [i for i, (sid, _) in enumerate(snapshots) if sid in kept]


def test_empty_policy_keeps_everything() -> None:
    """With no rule, every snapshot is kept ("no policy")."""
    s = snaps(0, 1, 2)
    kept = select_kept(s, RetentionPolicy())
    assert list(kept) == [sid for sid, _ in s]
    assert kept[s[0][0]] == ("no policy",)


def test_keep_last_keeps_the_newest_and_latest_always() -> None:
    """keep_last=N keeps the N newest; the latest is kept whatever the rule."""
    s = snaps(*range(6))
    assert kept_ids(s, keep_last=2) == [4, 5]
    kept = select_kept(s, RetentionPolicy(keep_last=1))
    assert kept[s[-1][0]] == ("latest", "keep_last")


def test_tags_and_leases_are_always_kept() -> None:
    """A tagged and a leased snapshot survive a policy that keeps only the latest."""
    s = snaps(*range(5))
    kept = select_kept(
        s, RetentionPolicy(keep_last=1), tags={"paper": s[1][0]}, leased=[s[2][0], "unknown"]
    )
    assert kept == {
        s[1][0]: ("tag paper",),
        s[2][0]: ("leased",),
        s[4][0]: ("latest", "keep_last"),
    }


def test_keep_daily_takes_the_newest_of_each_recent_day() -> None:
    """keep_daily=N: the newest snapshot of each of the N most recent UTC days holding one."""
    # day 0: 0h, 5h; day 1: 24h, 30h; (no day 2); day 3: 72h; day 4: 97h, 99h
    s = snaps(0, 5, 24, 30, 72, 97, 99)
    assert kept_ids(s, keep_daily=3) == [3, 4, 6]
    assert kept_ids(s, keep_daily=10) == [1, 3, 4, 6]


def test_keep_weekly_monthly_yearly_bucket_by_utc_calendar() -> None:
    """Weeks are ISO weeks, months and years calendar ones, all in UTC."""
    days = [0, 3, 9, 40, 45, 400, 401]  # 2025-01-01 (Wed) ... 2026-02-05
    s = snaps(*(d * 24 for d in days))
    # ISO weeks: 2025-W01 (days 0, 3), W02 (9), W07 (40 Mon, 45 Sat), 2026-W06 (400, 401)
    assert kept_ids(s, keep_weekly=3) == [2, 4, 6]
    assert kept_ids(s, keep_weekly=4) == [1, 2, 4, 6]
    # months: 2025-01 (0, 3, 9), 2025-02 (40, 45), 2026-02 (400, 401)
    assert kept_ids(s, keep_monthly=2) == [4, 6]
    assert kept_ids(s, keep_yearly=5) == [4, 6]


def test_bucket_uses_utc_not_the_commit_offset() -> None:
    """A snapshot at 23:30 UTC-5 belongs to the next UTC day."""
    late = datetime(2025, 3, 1, 23, 30, tzinfo=timezone(timedelta(hours=-5)))
    early = datetime(2025, 3, 2, 1, 0, tzinfo=timezone.utc)
    s = [("a", late), ("b", early)]
    assert select_kept(s, RetentionPolicy(keep_daily=1))["b"] == ("latest", "keep_daily 2025-03-02")
    assert "a" not in select_kept(s, RetentionPolicy(keep_daily=1))


def test_keep_within_counts_back_from_the_newest_snapshot() -> None:
    """keep_within keeps what was committed within the span before the newest (not now)."""
    s = snaps(0, 24 * 10, 24 * 80, 24 * 100)
    assert kept_ids(s, keep_within="30d") == [2, 3]
    assert kept_ids(s, keep_within="90d") == [1, 2, 3]
    assert kept_ids(s, keep_within="3m") == [1, 2, 3]  # Apr 11 - 3 months = Jan 11
    assert kept_ids(s, keep_within="1y") == [0, 1, 2, 3]


def test_rules_combine_as_a_union_with_reasons() -> None:
    """A snapshot any rule keeps is kept, and every rule that keeps it is named."""
    s = snaps(0, 30, 60)
    kept = select_kept(s, RetentionPolicy(keep_last=2, keep_daily=3))
    assert kept[s[2][0]] == ("latest", "keep_last", f"keep_daily {s[2][1]:%Y-%m-%d}")
    assert kept[s[0][0]] == (f"keep_daily {s[0][1]:%Y-%m-%d}",)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("90d", T0 - timedelta(days=90)),
        ("12h", T0 - timedelta(hours=12)),
        ("2w", T0 - timedelta(weeks=2)),
        ("1y6m", datetime(2023, 7, 1, 12, tzinfo=timezone.utc)),
        ("1m", datetime(2024, 12, 1, 12, tzinfo=timezone.utc)),
    ],
)
def test_parse_duration(text: str, expected: datetime) -> None:
    """Durations: hours, days, weeks, calendar months and years, combined."""
    assert parse_duration(text).before(T0) == expected


def test_month_arithmetic_clamps_the_day() -> None:
    """One month before March 31 is the last day of February."""
    when = datetime(2025, 3, 31, tzinfo=timezone.utc)
    assert parse_duration("1m").before(when) == datetime(2025, 2, 28, tzinfo=timezone.utc)


@pytest.mark.parametrize("bad", ["", "0d", "d", "90", "-1d", "1.5d", "1d1y", "90 days", 90])
def test_bad_durations_are_refused(bad: object) -> None:
    """A malformed or zero duration is an InvalidValueError naming the rule."""
    with pytest.raises(InvalidValueError, match="keep_within"):
        RetentionPolicy(keep_within=bad)  # type: ignore[arg-type]


@pytest.mark.parametrize("rule", ["keep_last", "keep_daily", "keep_weekly", "keep_yearly"])
def test_counts_must_be_positive(rule: str) -> None:
    """keep_last=0 would keep only the guarantees: refused, so nothing expires by accident."""
    with pytest.raises(InvalidValueError, match=rule):
        RetentionPolicy(**{rule: 0})  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        RetentionPolicy(**{rule: "3"})  # type: ignore[arg-type]


def test_policy_round_trips_through_json_and_refuses_unknown_rules() -> None:
    """to_json/from_json round-trip; an unknown rule (a typo) is refused, not ignored."""
    policy = RetentionPolicy(keep_last=3, keep_within="90d")
    assert RetentionPolicy.from_json(policy.to_json()) == policy
    assert str(policy) == "--keep-last 3 --keep-within 90d"
    with pytest.raises(InvalidValueError, match="keep_lats"):
        RetentionPolicy.from_json({"keep_lats": 3})
