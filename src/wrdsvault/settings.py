"""Vault settings: ``vault.json`` plus ``WRDSVAULT_*`` environment overrides.

Precedence: arguments > ``WRDSVAULT_*`` environment > ``vault.json`` > defaults, read once when a
`Warehouse` opens. No secrets are ever stored here.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Callable
from typing import Any, Final, Literal, get_args

import attrs

from wrdsvault.datasets import validate_dataset
from wrdsvault.errors import InvalidValueError, VaultFormatError
from wrdsvault.retention import RetentionPolicy
from wrdsvault.schema import DRIFT_POLICIES

__all__ = ["VaultSettings"]

_ENV_PREFIX: Final = "WRDSVAULT_"
Compression = Literal["zstd", "snappy", "gzip", "lz4", "none"]
_COMPRESSIONS: Final = get_args(Compression)
_CODECS_WITHOUT_LEVEL: Final = frozenset({"snappy", "none"})


def _to_float(value: float) -> float:
    """An int as a float; anything else is left for the field's validator to refuse."""
    if isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    return value


def _require_number(attr: attrs.Attribute[Any], value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        msg = f"{attr.name} must be a number, not {type(value).__name__}"
        raise TypeError(msg)
    return float(value)


def _count(_inst: object, attr: attrs.Attribute[Any], value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        msg = f"{attr.name} must be an int, not {type(value).__name__}"
        raise TypeError(msg)
    if value < 1:
        raise InvalidValueError(name=attr.name, value=value, rule="at least 1")


def _flag(_inst: object, attr: attrs.Attribute[Any], value: object) -> None:
    if not isinstance(value, bool):
        msg = f"{attr.name} must be true or false, not {type(value).__name__}"
        raise TypeError(msg)


def _not_negative(_inst: object, attr: attrs.Attribute[Any], value: object) -> None:
    if not _require_number(attr, value) >= 0:  # NaN too
        raise InvalidValueError(name=attr.name, value=value, rule="a number of seconds >= 0")


def _positive(_inst: object, attr: attrs.Attribute[Any], value: object) -> None:
    if not _require_number(attr, value) > 0:  # NaN too
        raise InvalidValueError(name=attr.name, value=value, rule="a number > 0")


def check_timeout(value: object, *, name: str = "timeout_s") -> float | None:
    """``value`` as a time limit in seconds: None, or a finite number > 0 (InvalidValueError)."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        msg = f"{name} must be a number of seconds or None, not {type(value).__name__}"
        raise TypeError(msg)
    seconds = float(value)
    if not (math.isfinite(seconds) and seconds > 0):
        raise InvalidValueError(
            name=name, value=value, rule="a time limit is a finite number of seconds > 0, or None"
        )
    return seconds


def _timeout(_inst: object, attr: attrs.Attribute[Any], value: object) -> None:
    check_timeout(value, name=attr.name)


_MEMORY: Final = re.compile(r"^\d+(\.\d+)?\s*(b|kb|mb|gb|tb|kib|mib|gib|tib)$", re.IGNORECASE)


def _memory_limit(_inst: object, attr: attrs.Attribute[Any], value: object) -> None:
    if value is None:
        return
    if not isinstance(value, str):
        msg = f"{attr.name} must be a str such as '4GB' or null, got {value!r}"
        raise TypeError(msg)
    if not _MEMORY.match(value.strip()):
        raise InvalidValueError(
            name=attr.name, value=value, rule="a size such as '512MB', '4GB' or '1.5GiB', or null"
        )


def _threads(_inst: object, attr: attrs.Attribute[Any], value: object) -> None:
    _optional_int(_inst, attr, value)
    if value is not None and int(value) < 1:  # type: ignore[call-overload]
        raise InvalidValueError(name=attr.name, value=value, rule="at least 1, or null")


def _optional_int(_inst: object, attr: attrs.Attribute[Any], value: object) -> None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
        msg = f"{attr.name} must be an int or null, got {value!r}"
        raise TypeError(msg)


def _after_refreshes(inst: VaultSettings, attr: attrs.Attribute[Any], value: float) -> None:
    # A live reader on another host is seen only through its refreshes: a grace shorter than a
    # few of them would judge it dead between two.
    if value < 3 * inst.lease_refresh_s:
        raise InvalidValueError(
            name=attr.name,
            value=value,
            rule=f"at least 3 x lease_refresh_s ({inst.lease_refresh_s:g} s)",
        )


def _fraction(_inst: object, attr: attrs.Attribute[Any], value: object) -> None:
    if not 0 < _require_number(attr, value) <= 1:
        raise InvalidValueError(name=attr.name, value=value, rule="a fraction in (0, 1]")


def _share(_inst: object, attr: attrs.Attribute[Any], value: object) -> None:
    if not 0 <= _require_number(attr, value) <= 1:
        raise InvalidValueError(name=attr.name, value=value, rule="a fraction in [0, 1]")


def _policies(_inst: object, _attr: attrs.Attribute[Any], value: object) -> None:
    if not isinstance(value, dict):
        msg = f"drift_policies must be an object mapping datasets to policies, got {value!r}"
        raise TypeError(msg)
    for name, policy in value.items():
        validate_dataset(name)
        if policy not in DRIFT_POLICIES:
            raise InvalidValueError(
                name=f"drift policy for {name}", value=policy, rule=_one_of(DRIFT_POLICIES)
            )


def _choice(choices: tuple[str, ...]) -> Callable[[object, attrs.Attribute[Any], object], None]:
    """A validator: the value is one of ``choices`` (`InvalidValueError` otherwise)."""

    def check(_inst: object, attr: attrs.Attribute[Any], value: object) -> None:
        if value not in choices:
            raise InvalidValueError(name=attr.name, value=value, rule=_one_of(choices))

    return check


def _one_of(choices: tuple[str, ...]) -> str:
    return "one of " + ", ".join(repr(c) for c in choices)


def _retention(_inst: object, _attr: attrs.Attribute[Any], value: object) -> None:
    if not isinstance(value, dict):
        msg = f"retention must be an object of retention rules, got {value!r}"
        raise TypeError(msg)
    RetentionPolicy.from_json(value)


@attrs.frozen(kw_only=True)
class VaultSettings:
    """Settings of one vault.

    Attributes:
        group_access: make files readable (0640) and folders enterable (0750) by the owner's group;
            by default licensed WRDS data is private to the user (0600/0700).
        lock_timeout_s: how long a writer waits for the lock before `LockHeldError`.
        lock_stale_after_s: heartbeat age after which another host's lock is stale (4 h).
        lock_heartbeat_s: how often a writer refreshes its lock's heartbeat (60 s).
        lease_refresh_s: how often a reader refreshes the leases of its open snapshots (60 s).
        lease_stale_after_s: refresh age after which another host's reader lease no longer
            protects its snapshot from gc (4 h, the writer lock's rule: a host paused for less
            keeps its files); at least three refresh intervals (docs/retention.md).
        query_timeout_s: default time limit of one query (None: no limit; else finite, > 0).
        query_memory_limit: memory one snapshot's DuckDB database may use, e.g. ``"4GB"``
            (None: DuckDB's default, 80% of RAM, for each open snapshot); beyond it, queries
            spill to a private temporary folder or fail with `QueryError`.
        query_threads: threads of one snapshot's DuckDB database (None: one per core).
        row_group_rows: rows per Parquet row group (262,144). A sync holds one row group in
            memory; 1M-row groups make files ~10% smaller but the sync's peak memory grows with
            the year (docs/performance.md).
        compression: Parquet codec; ``compression_level`` its level (None: the codec's default;
            ignored by codecs without levels, ``snappy`` and ``none``).
        batch_rows: rows per batch asked of the source.
        disk_warn_fraction, disk_critical_fraction, disk_refuse_fraction: file-system fill
            levels that warn, log as critical, and refuse to write (0.80, 0.90, 0.95).
        drift_policy: what a sync does when a source's columns change: ``"strict"`` refuses,
            ``"additive"`` accepts added columns only, ``"accept"`` accepts all.
        drift_policies: per-dataset overrides, e.g. ``{"comp.funda": "additive"}``.
        max_removed_fraction: the share of a dataset's rows that years vanishing from the
            source's listing may take with them in one sync (0: none; such a sync fails
            validation unless ``sync(allow_removal=True)``; docs/integrity.md).
        retention: the default retention policy of ``gc`` (docs/retention.md), e.g.
            ``{"keep_last": 10, "keep_monthly": 24}``; empty: gc expires nothing.

    Raises:
        InvalidValueError: a value outside what its field accepts (a negative time, a fraction
            outside its range, an unknown compression or drift policy, ...).
        TypeError: a value of the wrong type (a string for a number, a number for a flag).
    """

    group_access: bool = attrs.field(default=False, validator=_flag)
    lock_timeout_s: float = attrs.field(default=0.0, converter=_to_float, validator=_not_negative)
    lock_stale_after_s: float = attrs.field(
        default=4 * 3600.0, converter=_to_float, validator=_positive
    )
    lock_heartbeat_s: float = attrs.field(default=60.0, converter=_to_float, validator=_positive)
    lease_refresh_s: float = attrs.field(default=60.0, converter=_to_float, validator=_positive)
    lease_stale_after_s: float = attrs.field(
        default=4 * 3600.0, converter=_to_float, validator=[_positive, _after_refreshes]
    )
    query_timeout_s: float | None = attrs.field(default=None, validator=_timeout)
    query_memory_limit: str | None = attrs.field(default=None, validator=_memory_limit)
    query_threads: int | None = attrs.field(default=None, validator=_threads)
    row_group_rows: int = attrs.field(default=262_144, validator=_count)
    compression: Compression = attrs.field(default="zstd", validator=_choice(_COMPRESSIONS))
    compression_level: int | None = attrs.field(default=1, validator=_optional_int)
    batch_rows: int = attrs.field(default=131_072, validator=_count)
    disk_warn_fraction: float = attrs.field(default=0.80, converter=_to_float, validator=_fraction)
    disk_critical_fraction: float = attrs.field(
        default=0.90, converter=_to_float, validator=_fraction
    )
    disk_refuse_fraction: float = attrs.field(
        default=0.95, converter=_to_float, validator=_fraction
    )
    drift_policy: str = attrs.field(default="strict", validator=_choice(DRIFT_POLICIES))
    drift_policies: dict[str, str] = attrs.field(factory=dict, validator=_policies)
    max_removed_fraction: float = attrs.field(default=0.0, converter=_to_float, validator=_share)
    retention: dict[str, Any] = attrs.field(factory=dict, validator=_retention)

    @property
    def retention_policy(self) -> RetentionPolicy:
        """``retention`` as a `RetentionPolicy` (every rule None when nothing is stored)."""
        return RetentionPolicy.from_json(self.retention)

    @property
    def codec_level(self) -> int | None:
        """``compression_level`` if the codec takes a level, else None (Parquet refuses a level
        for ``snappy`` and ``none``, so the default level must not break those codecs)."""
        return None if self.compression in _CODECS_WITHOUT_LEVEL else self.compression_level

    @property
    def file_mode(self) -> int:
        return 0o640 if self.group_access else 0o600

    @property
    def dir_mode(self) -> int:
        return 0o750 if self.group_access else 0o700

    def to_json(self) -> dict[str, Any]:
        return attrs.asdict(self)

    @classmethod
    def from_json(cls, obj: dict[str, Any], *, where: str) -> VaultSettings:
        known = {a.name for a in attrs.fields(cls)}
        try:
            return cls(**{k: v for k, v in obj.items() if k in known})
        except (TypeError, ValueError, AttributeError, OverflowError) as exc:
            raise VaultFormatError(path=where, problem=f"invalid settings ({exc})") from exc

    def with_env(self, environ: dict[str, str] | None = None) -> VaultSettings:
        """Apply ``WRDSVAULT_<SETTING>`` overrides (e.g. ``WRDSVAULT_LOCK_TIMEOUT_S=60``).

        Raises:
            InvalidValueError: a variable's value is not one its setting accepts (``name`` is
                the variable).
        """
        env = os.environ if environ is None else environ
        changes: dict[str, Any] = {}
        for field in attrs.fields(type(self)):
            variable = _ENV_PREFIX + field.name.upper()
            raw = env.get(variable)
            if raw is None or field.name in ("drift_policies", "retention"):
                continue  # mappings: set them in vault.json or settings=
            try:
                changes[field.name] = _from_env(field.name, raw)
                # Runs the validators with the variables read so far: a setting checked against
                # another (lease_stale_after_s against lease_refresh_s) sees both overrides.
                attrs.evolve(self, **changes)
            except InvalidValueError as exc:
                raise InvalidValueError(name=variable, value=raw, rule=exc.rule) from exc
            except (TypeError, ValueError) as exc:
                raise InvalidValueError(
                    name=variable, value=raw, rule=f"not a value of {field.name} ({exc})"
                ) from exc
        return attrs.evolve(self, **changes)


_OPTIONAL: Final[dict[str, Callable[[str], Any]]] = {
    "query_timeout_s": float,
    "compression_level": int,
    "query_threads": int,
    "query_memory_limit": str.strip,
}
_INTS: Final = frozenset({"row_group_rows", "batch_rows"})


def _from_env(name: str, raw: str) -> Any:
    """The value of ``WRDSVAULT_<NAME>=raw`` (ValueError if it cannot be one)."""
    if name == "group_access":
        return raw.strip().lower() in ("1", "true", "yes", "on")
    if name in ("compression", "drift_policy"):
        return raw.strip().lower()
    if name in _OPTIONAL:
        return None if raw.strip().lower() in ("", "none", "null") else _OPTIONAL[name](raw)
    if name in _INTS:
        return int(raw)
    return float(raw)


def dump(settings: VaultSettings, *, format_version: int, created_at: str) -> bytes:
    """The bytes of ``vault.json``."""
    obj = {
        "format_version": format_version,
        "created_at": created_at,
        "settings": settings.to_json(),
    }
    return json.dumps(obj, indent=2, sort_keys=True).encode() + b"\n"
