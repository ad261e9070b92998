"""Vault settings: ``vault.json`` plus ``WRDSVAULT_*`` environment overrides.

Precedence: arguments > ``WRDSVAULT_*`` environment > ``vault.json`` > defaults, read once when a
`Warehouse` opens. No secrets are ever stored here.
"""

from __future__ import annotations

import json
import os
from typing import Any, Final, Literal, get_args

import attrs

from wrdsvault.datasets import validate_dataset
from wrdsvault.errors import VaultFormatError
from wrdsvault.schema import DRIFT_POLICIES

__all__ = ["VaultSettings"]

_ENV_PREFIX: Final = "WRDSVAULT_"
Compression = Literal["zstd", "snappy", "gzip", "lz4", "none"]
_COMPRESSIONS: Final = get_args(Compression)


def _positive(_inst: object, attr: attrs.Attribute[Any], value: float | None) -> None:
    if value is not None and value <= 0:
        msg = f"{attr.name} must be positive, got {value!r}"
        raise ValueError(msg)


def _optional_int(_inst: object, attr: attrs.Attribute[Any], value: object) -> None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
        msg = f"{attr.name} must be an int or null, got {value!r}"
        raise TypeError(msg)


def _fraction(_inst: object, attr: attrs.Attribute[Any], value: float) -> None:
    if not 0 < value <= 1:
        msg = f"{attr.name} must be in (0, 1], got {value!r}"
        raise ValueError(msg)


def _share(_inst: object, attr: attrs.Attribute[Any], value: float) -> None:
    if not 0 <= value <= 1:
        msg = f"{attr.name} must be in [0, 1], got {value!r}"
        raise ValueError(msg)


def _policies(_inst: object, _attr: attrs.Attribute[Any], value: object) -> None:
    if not isinstance(value, dict):
        msg = f"drift_policies must be an object mapping datasets to policies, got {value!r}"
        raise TypeError(msg)
    for name, policy in value.items():
        validate_dataset(name)
        if policy not in DRIFT_POLICIES:
            msg = f"drift policy for {name} must be one of {DRIFT_POLICIES}, not {policy!r}"
            raise ValueError(msg)


@attrs.frozen(kw_only=True)
class VaultSettings:
    """Settings of one vault.

    Attributes:
        group_access: make files readable (0640) and folders enterable (0750) by the owner's group;
            by default licensed WRDS data is private to the user (0600/0700).
        lock_timeout_s: how long a writer waits for the lock before `LockHeldError`.
        lock_stale_after_s: heartbeat age after which another host's lock is stale (4 h).
        lock_heartbeat_s: how often a writer refreshes its lock's heartbeat (60 s).
        query_timeout_s: default time limit of one query (None: no limit).
        row_group_rows: rows per Parquet row group (262,144). A sync holds one row group in
            memory; 1M-row groups make files ~10% smaller but the sync's peak memory grows with
            the year (docs/performance.md).
        compression: Parquet codec; ``compression_level`` its level (None: the codec's default).
        batch_rows: rows per batch asked of the source.
        disk_warn_fraction, disk_critical_fraction, disk_refuse_fraction: file-system fill
            levels that warn, log as critical, and refuse to write (0.80, 0.90, 0.95).
        drift_policy: what a sync does when a source's columns change: ``"strict"`` refuses,
            ``"additive"`` accepts added columns only, ``"accept"`` accepts all.
        drift_policies: per-dataset overrides, e.g. ``{"comp.funda": "additive"}``.
        max_removed_fraction: the share of a dataset's rows that years vanishing from the
            source's listing may take with them in one sync (0: none; such a sync fails
            validation unless ``sync(allow_removal=True)``; docs/integrity.md).
    """

    group_access: bool = False
    lock_timeout_s: float = attrs.field(default=0.0, converter=float)
    lock_stale_after_s: float = attrs.field(
        default=4 * 3600.0, converter=float, validator=_positive
    )
    lock_heartbeat_s: float = attrs.field(default=60.0, converter=float, validator=_positive)
    query_timeout_s: float | None = attrs.field(default=None, validator=_positive)
    row_group_rows: int = attrs.field(default=262_144, converter=int, validator=_positive)
    compression: Compression = attrs.field(
        default="zstd", validator=attrs.validators.in_(_COMPRESSIONS)
    )
    compression_level: int | None = attrs.field(default=1, validator=_optional_int)
    batch_rows: int = attrs.field(default=131_072, converter=int, validator=_positive)
    disk_warn_fraction: float = attrs.field(default=0.80, converter=float, validator=_fraction)
    disk_critical_fraction: float = attrs.field(default=0.90, converter=float, validator=_fraction)
    disk_refuse_fraction: float = attrs.field(default=0.95, converter=float, validator=_fraction)
    drift_policy: str = attrs.field(
        default="strict", validator=attrs.validators.in_(DRIFT_POLICIES)
    )
    drift_policies: dict[str, str] = attrs.field(factory=dict, validator=_policies)
    max_removed_fraction: float = attrs.field(default=0.0, converter=float, validator=_share)

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
        """Apply ``WRDSVAULT_<SETTING>`` overrides (e.g. ``WRDSVAULT_LOCK_TIMEOUT_S=60``)."""
        env = os.environ if environ is None else environ
        changes: dict[str, Any] = {}
        for field in attrs.fields(type(self)):
            raw = env.get(_ENV_PREFIX + field.name.upper())
            if raw is None:
                continue
            if field.name == "drift_policies":
                continue  # a mapping: set it in vault.json or pass settings=
            if field.name == "group_access":
                changes[field.name] = raw.strip().lower() in ("1", "true", "yes", "on")
            elif field.name in ("compression", "drift_policy"):
                changes[field.name] = raw.strip().lower()
            elif field.name in ("query_timeout_s", "compression_level"):
                changes[field.name] = (
                    None
                    if raw.strip().lower() in ("", "none")
                    else (float(raw) if field.name == "query_timeout_s" else int(raw))
                )
            else:
                changes[field.name] = raw
        try:
            return attrs.evolve(self, **changes)
        except (TypeError, ValueError) as exc:
            raise VaultFormatError(
                path="environment", problem=f"invalid {_ENV_PREFIX}* setting ({exc})"
            ) from exc


def dump(settings: VaultSettings, *, format_version: int, created_at: str) -> bytes:
    """The bytes of ``vault.json``."""
    obj = {
        "format_version": format_version,
        "created_at": created_at,
        "settings": settings.to_json(),
    }
    return json.dumps(obj, indent=2, sort_keys=True).encode() + b"\n"
