"""Disk guard: refuse a write that would fill the vault's file system.

Watermarks on the vault's file system (docs/integrity.md): 80% warns, 90% is critical (logged, shown
by ``status``), 95% refuses to write. Before a sync, twice the expected bytes must be free.
"Used" counts space the user cannot write: free means ``f_bavail`` (what psutil reports), not
``f_bfree`` (see docs/design). Quotas (EDQUOT) do not show in statvfs, so running out mid-write
is still handled where it happens (`DiskSpaceError`, previous snapshot current).

The warnings and errors name the way to get space back: ``wrdsvault gc --dry-run``, with the
bytes the vault's stored retention policy would free (the ``hint`` callable, computed from the
manifests only when a watermark is crossed).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import attrs

from wrdsvault.errors import DiskSpaceError

log = logging.getLogger(__name__)

Level = Literal["ok", "warning", "critical", "refuse"]
#: (total, free-to-the-user) in bytes for a path; psutil by default, injectable for tests.
UsageProvider = Callable[[str], tuple[int, int]]


def psutil_usage(path: str) -> tuple[int, int]:
    import psutil  # here, not at the top: reading a vault never asks (import wrdsvault stays cheap)

    usage = psutil.disk_usage(path)
    return int(usage.total), int(usage.free)


@attrs.frozen(kw_only=True)
class DiskState:
    """The vault file system's fill level (`Warehouse.disk`, `VaultStatus.disk`).

    Attributes:
        total_bytes: size of the file system.
        free_bytes: bytes this user may still write (``f_bavail``).
        used_fraction: ``1 - free_bytes / total_bytes``.
        level: ``"ok"``, ``"warning"``, ``"critical"`` or ``"refuse"`` against the watermarks.
    """

    total_bytes: int
    free_bytes: int
    used_fraction: float
    level: Level

    def to_json(self) -> dict[str, Any]:
        return attrs.asdict(self)


@attrs.define
class DiskGuard:
    """Checks free space against the watermarks and a write's expected size."""

    path: Path
    warn: float = 0.80
    critical: float = 0.90
    refuse: float = 0.95
    usage: UsageProvider = psutil_usage
    #: What to do about a full disk (``wrdsvault gc --dry-run`` and what it would free).
    hint: Callable[[], str] | None = None

    def _hint(self) -> str:
        if self.hint is None:
            return ""
        try:
            text = self.hint()
        except Exception:  # a hint must never turn a warning into a failure
            log.debug("could not compute the disk hint", exc_info=True)
            return ""
        return f"; {text}" if text else ""

    def state(self) -> DiskState:
        total, free = self.usage(str(self.path))
        used = 1.0 - free / total if total > 0 else 1.0
        level: Level = "ok"
        if used >= self.refuse:
            level = "refuse"
        elif used >= self.critical:
            level = "critical"
        elif used >= self.warn:
            level = "warning"
        return DiskState(total_bytes=total, free_bytes=free, used_fraction=used, level=level)

    def check(self, expected_bytes: int) -> DiskState:
        """Raise `DiskSpaceError` if writing ``expected_bytes`` is not safe; log watermarks.

        Raises:
            DiskSpaceError: the file system is at or above the refuse watermark, or less than
                twice ``expected_bytes`` is free.
        """
        st = self.state()
        needed = 2 * max(expected_bytes, 0)
        if st.level == "refuse":
            raise DiskSpaceError(
                path=str(self.path),
                needed_bytes=needed,
                free_bytes=st.free_bytes,
                reason=f"the file system is {st.used_fraction:.0%} full, at or above the "
                f"{self.refuse:.0%} watermark where wrdsvault stops writing{self._hint()}",
            )
        if st.free_bytes < needed:
            raise DiskSpaceError(
                path=str(self.path),
                needed_bytes=needed,
                free_bytes=st.free_bytes,
                reason=f"a sync needs twice its expected size ({expected_bytes:,} bytes) "
                f"free{self._hint()}",
            )
        if st.level == "critical":
            log.error(
                "vault file system %s is %.0f%% full (critical)%s",
                self.path,
                100 * st.used_fraction,
                self._hint(),
            )
        elif st.level == "warning":
            log.warning(
                "vault file system %s is %.0f%% full%s",
                self.path,
                100 * st.used_fraction,
                self._hint(),
            )
        return st
