"""Retention: which snapshots a policy keeps, and what `Warehouse.gc` planned and did.

Policies work like restic's and borg's (docs/retention.md):

* ``keep_last=N``: the N newest snapshots;
* ``keep_within="90d"``: every snapshot committed within that long before the newest one
  (units ``h``, ``d``, ``w``, ``m`` (calendar months), ``y``, combinable: ``"1y6m"``);
* ``keep_daily`` / ``keep_weekly`` / ``keep_monthly`` / ``keep_yearly=N``: commit times are
  put into UTC days, ISO weeks, months or years; the newest snapshot of each of the N most
  recent buckets that hold one is kept.

A snapshot is kept if any rule keeps it. Whatever the policy, the latest snapshot, every tagged
snapshot, every snapshot a live reader holds (a lease) and every snapshot an export still
publishes (an export record, `wrdsvault.exports`) are kept. A policy with no rule at all
keeps everything: gc then only removes files that no snapshot references.

Everything here is pure (no I/O); `wrdsvault._gc` reads the vault and applies it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timedelta, timezone
from typing import Any, Final

import attrs

from wrdsvault.errors import InvalidValueError

__all__ = [
    "ExpiredSnapshot",
    "GcPlan",
    "GcReport",
    "KeptSnapshot",
    "RetentionPolicy",
    "parse_duration",
    "select_kept",
]

_DURATION_RE: Final = re.compile(r"^(?:(\d+)y)?(?:(\d+)m)?(?:(\d+)w)?(?:(\d+)d)?(?:(\d+)h)?$")
_COUNTS: Final = ("keep_last", "keep_daily", "keep_weekly", "keep_monthly", "keep_yearly")


@attrs.frozen
class Duration:
    """A ``keep_within`` span: calendar years and months, then weeks, days and hours."""

    years: int = 0
    months: int = 0
    weeks: int = 0
    days: int = 0
    hours: int = 0

    def before(self, when: datetime) -> datetime:
        """``when`` minus this span (months and years by the calendar, the day clamped)."""
        month0 = when.year * 12 + (when.month - 1) - (self.years * 12 + self.months)
        year, month = divmod(month0, 12)
        month += 1
        if year < 1:
            return datetime.min.replace(tzinfo=timezone.utc)
        day = min(when.day, _days_in_month(year, month))
        moved = when.replace(year=year, month=month, day=day)
        span = timedelta(weeks=self.weeks, days=self.days, hours=self.hours)
        try:
            return moved - span
        except OverflowError:
            return datetime.min.replace(tzinfo=timezone.utc)


def _days_in_month(year: int, month: int) -> int:
    if month == 12:
        return 31
    return (datetime(year, month + 1, 1) - datetime(year, month, 1)).days


def parse_duration(text: object) -> Duration:
    """``"90d"``, ``"12h"``, ``"2w"``, ``"6m"`` (months), ``"1y"``, or combined (``"1y6m"``).

    Raises:
        InvalidValueError: not such a duration, or zero.
    """
    rule = "a duration such as '90d', '12h', '2w', '6m' (months), '1y' or '1y6m'"
    if not isinstance(text, str):
        raise InvalidValueError(name="keep_within", value=text, rule=rule)
    match = _DURATION_RE.fullmatch(text.strip().lower())
    if match is None or not any(match.groups()):
        raise InvalidValueError(name="keep_within", value=text, rule=rule)
    years, months, weeks, days, hours = (int(g) if g else 0 for g in match.groups())
    if not (years or months or weeks or days or hours):
        raise InvalidValueError(name="keep_within", value=text, rule=f"{rule}, not zero")
    if years > 9999 or months > 120_000 or weeks + days / 7 + hours / 168 > 600_000:
        raise InvalidValueError(name="keep_within", value=text, rule=f"{rule}, at most 9999 years")
    return Duration(years=years, months=months, weeks=weeks, days=days, hours=hours)


def _count(_inst: object, attr: attrs.Attribute[Any], value: object) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int):
        msg = f"{attr.name} must be an int or None, not {type(value).__name__}"
        raise TypeError(msg)
    if value < 1:
        raise InvalidValueError(
            name=attr.name,
            value=value,
            rule="an int >= 1, or None (the latest snapshot is always kept)",
        )


def _within(_inst: object, _attr: attrs.Attribute[Any], value: object) -> None:
    if value is not None:
        parse_duration(value)


@attrs.frozen(kw_only=True)
class RetentionPolicy:
    """Which snapshots gc keeps (module docstring). Every rule None: keep everything.

    Attributes:
        keep_last: the N newest snapshots.
        keep_within: every snapshot committed within this span before the newest one
            (``"90d"``, ``"12h"``, ``"2w"``, ``"6m"``, ``"1y"``).
        keep_daily, keep_weekly, keep_monthly, keep_yearly: the newest snapshot of each of the
            N most recent UTC days, ISO weeks, months or years that hold one.
    """

    keep_last: int | None = attrs.field(default=None, validator=_count)
    keep_within: str | None = attrs.field(default=None, validator=_within)
    keep_daily: int | None = attrs.field(default=None, validator=_count)
    keep_weekly: int | None = attrs.field(default=None, validator=_count)
    keep_monthly: int | None = attrs.field(default=None, validator=_count)
    keep_yearly: int | None = attrs.field(default=None, validator=_count)

    @property
    def empty(self) -> bool:
        """No rule is set: the policy keeps every snapshot."""
        return all(v is None for v in attrs.astuple(self))

    def to_json(self) -> dict[str, Any]:
        """The rules that are set (the form stored in ``vault.json`` and the expiry log)."""
        return {k: v for k, v in attrs.asdict(self).items() if v is not None}

    @classmethod
    def from_json(cls, obj: object) -> RetentionPolicy:
        """Read `to_json`'s form back.

        Raises:
            InvalidValueError: an unknown rule or a bad value.
            TypeError: not a mapping, or a value of the wrong type.
        """
        if isinstance(obj, RetentionPolicy):
            return obj
        if not isinstance(obj, Mapping):
            msg = f"a retention policy must be a mapping of rules, not {type(obj).__name__}"
            raise TypeError(msg)
        known = {a.name for a in attrs.fields(cls)}
        unknown = sorted(str(k) for k in obj if k not in known)
        if unknown:
            raise InvalidValueError(
                name="retention rule", value=unknown, rule=f"one of {', '.join(sorted(known))}"
            )
        return cls(**{str(k): v for k, v in obj.items()})

    def __str__(self) -> str:
        if self.empty:
            return "no retention policy (keep every snapshot)"
        return " ".join(f"--{k.replace('_', '-')} {v}" for k, v in self.to_json().items())


def _bucket(rule: str, when: datetime) -> str:
    when = when.astimezone(timezone.utc)
    if rule == "keep_daily":
        return f"{when:%Y-%m-%d}"
    if rule == "keep_weekly":
        iso = when.isocalendar()
        return f"{iso[0]:04d}-W{iso[1]:02d}"
    if rule == "keep_monthly":
        return f"{when:%Y-%m}"
    return f"{when:%Y}"


def select_kept(
    snapshots: Sequence[tuple[str, datetime]],
    policy: RetentionPolicy,
    *,
    tags: Mapping[str, str] | None = None,
    leased: Iterable[str] = (),
    held: Mapping[str, Sequence[str]] | None = None,
) -> dict[str, tuple[str, ...]]:
    """Snapshot id -> why it is kept, for every snapshot the policy and the guarantees keep.

    Args:
        snapshots: (id, committed_at) of every committed snapshot, oldest first; the last is
            the latest.
        policy: the rules; an empty policy keeps every snapshot ("no policy").
        tags: tag -> snapshot id; tagged snapshots are always kept.
        leased: ids a live reader holds; always kept.
        held: id -> the other records that keep it whatever the policy (an export record:
            ``iceberg-export <catalog> <namespace>``); always kept, with those reasons.

    Returns:
        The kept ids (every other id of ``snapshots`` expires) with their reasons, such as
        ``latest``, ``tag paper``, ``leased``, ``keep_last``, ``keep_within 90d``,
        ``keep_daily 2025-12-01``.
    """
    reasons: dict[str, list[str]] = {}

    def keep(sid: str, why: str) -> None:
        reasons.setdefault(sid, []).append(why)

    if not snapshots:
        return {}
    ids = {sid for sid, _ in snapshots}
    newest_first = list(reversed(snapshots))
    keep(newest_first[0][0], "latest")
    for name, sid in sorted((tags or {}).items()):
        if sid in ids:
            keep(sid, f"tag {name}")
    for sid in sorted(set(leased) & ids):
        keep(sid, "leased")
    for sid, why in sorted((held or {}).items()):
        if sid in ids:
            for reason in why:
                keep(sid, reason)
    if policy.empty:
        for sid, _ in snapshots:
            keep(sid, "no policy")
    if policy.keep_last is not None:
        for sid, _ in newest_first[: policy.keep_last]:
            keep(sid, "keep_last")
    if policy.keep_within is not None:
        cutoff = parse_duration(policy.keep_within).before(newest_first[0][1])
        for sid, when in newest_first:
            if when >= cutoff:
                keep(sid, f"keep_within {policy.keep_within}")
    for rule in ("keep_daily", "keep_weekly", "keep_monthly", "keep_yearly"):
        n = getattr(policy, rule)
        if n is None:
            continue
        seen: set[str] = set()
        for sid, when in newest_first:
            bucket = _bucket(rule, when)
            if bucket in seen:
                continue
            if len(seen) == n:
                break
            seen.add(bucket)
            keep(sid, f"{rule} {bucket}")
    order = {sid: i for i, (sid, _) in enumerate(snapshots)}
    return {sid: tuple(why) for sid, why in sorted(reasons.items(), key=lambda kv: order[kv[0]])}


# -- public result types -----------------------------------------------------------------------


@attrs.frozen(kw_only=True)
class KeptSnapshot:
    """A snapshot gc keeps, and why (``latest``, ``tag NAME``, ``leased``, ``keep_last``, ...)."""

    snapshot_id: str
    committed_at: datetime
    reasons: tuple[str, ...]

    def to_json(self) -> dict[str, Any]:
        return {
            "snapshot_id": self.snapshot_id,
            "committed_at": self.committed_at.isoformat(),
            "reasons": list(self.reasons),
        }


@attrs.frozen(kw_only=True)
class ExpiredSnapshot:
    """One record of the expiry log: a snapshot gc expired, and when and by which policy.

    Attributes:
        snapshot_id: the snapshot id.
        sequence: its commit sequence number.
        committed_at: when it was committed (aware UTC).
        fingerprint: the data fingerprint it had (compare with a backtest's log).
        expired_at: when gc expired it (aware UTC).
        policy: the rules that were applied (`RetentionPolicy.to_json`).
    """

    snapshot_id: str
    sequence: int
    committed_at: datetime
    fingerprint: str
    expired_at: datetime
    policy: dict[str, Any] = attrs.field(factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "snapshot_id": self.snapshot_id,
            "sequence": self.sequence,
            "committed_at": self.committed_at.isoformat(),
            "fingerprint": self.fingerprint,
            "expired_at": self.expired_at.isoformat(),
            "policy": dict(self.policy),
        }


def _size(n: int) -> str:
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= scale:
            return f"{n / scale:,.1f} {unit}"
    return f"{n:,} bytes"


@attrs.frozen(kw_only=True)
class GcPlan:
    """What `Warehouse.gc` would do (``dry_run=True``), or did before it reported.

    Attributes:
        policy: the rules applied.
        kept: every snapshot kept, oldest first, with the reasons.
        expired: ids of the snapshots this gc expires, oldest first.
        manifests: ids whose manifest is deleted: the newly expired ones and any expired by an
            earlier gc that were left on disk (held by a reader then, or a gc was interrupted),
            except those a reader holds now.
        files: data files (paths relative to the vault) that no kept or held snapshot names.
        freed_bytes: the bytes those files and manifests take.
    """

    policy: RetentionPolicy
    kept: tuple[KeptSnapshot, ...]
    expired: tuple[str, ...]
    manifests: tuple[str, ...]
    files: tuple[str, ...]
    freed_bytes: int

    def to_json(self) -> dict[str, Any]:
        return {
            "policy": self.policy.to_json(),
            "kept": [k.to_json() for k in self.kept],
            "expired": list(self.expired),
            "manifests": list(self.manifests),
            "files": list(self.files),
            "freed_bytes": self.freed_bytes,
        }

    def summary(self) -> str:
        """The plan in words: what is kept and why, what expires, files and bytes freed."""
        lines = [f"policy: {self.policy}"]
        for k in self.kept:
            lines.append(f"keep    {k.snapshot_id}  {', '.join(k.reasons)}")
        for sid in self.expired:
            lines.append(f"expire  {sid}")
        earlier = [sid for sid in self.manifests if sid not in self.expired]
        if earlier:
            lines.append(f"remove  {len(earlier)} manifest(s) of snapshots expired earlier")
        lines.append(
            f"{len(self.expired)} snapshot(s) expire, {len(self.kept)} kept; "
            f"{len(self.files)} file(s) to delete, {_size(self.freed_bytes)} freed"
        )
        return "\n".join(lines)


@attrs.frozen(kw_only=True)
class GcReport:
    """What `Warehouse.gc` did.

    Attributes:
        policy: the rules applied.
        expired: ids of the snapshots it expired (now in the expiry log), oldest first.
        kept: every snapshot kept, oldest first, with the reasons.
        deleted_files: data files it deleted (relative to the vault).
        deleted_manifests: ids whose manifest it deleted.
        held: expired snapshots whose manifest and files a reader still holds; a later gc
            deletes them once no reader does.
        freed_bytes: the bytes deleted.
    """

    policy: RetentionPolicy
    expired: tuple[str, ...]
    kept: tuple[KeptSnapshot, ...]
    deleted_files: tuple[str, ...]
    deleted_manifests: tuple[str, ...]
    held: tuple[str, ...]
    freed_bytes: int

    def to_json(self) -> dict[str, Any]:
        return {
            "policy": self.policy.to_json(),
            "expired": list(self.expired),
            "kept": [k.to_json() for k in self.kept],
            "deleted_files": list(self.deleted_files),
            "deleted_manifests": list(self.deleted_manifests),
            "held": list(self.held),
            "freed_bytes": self.freed_bytes,
        }

    def summary(self) -> str:
        held = f"; {len(self.held)} held by readers until a later gc" if self.held else ""
        return (
            f"expired {len(self.expired)} snapshot(s), kept {len(self.kept)}; deleted "
            f"{len(self.deleted_files)} file(s) and {len(self.deleted_manifests)} manifest(s), "
            f"{_size(self.freed_bytes)} freed{held}"
        )
