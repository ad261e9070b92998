"""Process identity and proof of death: who a process is, and when it is provably gone.

A record written by a process (the writer lock's owner record, docs/locking.md) carries
`own_identity`: pid, start time, host name, boot id, PID namespace and machine id. Another process
reads it back and asks whether its writer is still alive:

* on the same host (host name, boot id and PID namespace all equal ours, `same_host`) the PID
  means something: the writer is dead when that process is gone, a zombie, or has another start
  time (a reused PID; `same_host_death`). "unknown" (a process we may not inspect) is alive;
* on this machine in an earlier boot (same machine id and host name, another boot id,
  `earlier_boot`) every process of that boot is gone, provided the record's heartbeat stopped
  before this boot began (`earlier_boot_death`);
* anywhere else a PID means nothing here, and only the age of a heartbeat can tell (the caller's
  business: it needs the file server's clock).

Why these proofs and not simpler ones: docs/design/lock.md.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
from functools import cache
from pathlib import Path
from typing import Any, Final

# psutil is imported where needed, only on the paths Linux's /proc cannot serve: a reader's
# lease is taken on every snapshot open, and `import wrdsvault` must stay cheap.

#: Files that hold the machine id on Linux (systemd, then D-Bus), first readable one wins.
MACHINE_ID_FILES: Final = ("/etc/machine-id", "/var/lib/dbus/machine-id")
#: A record of an earlier boot is judged dead only after this many of its heartbeat intervals
#: without a beat (besides our uptime): a live clone that shares our machine id beats more often.
EARLIER_BOOT_BEATS: Final = 3
_MACHINE_ID_RE: Final = re.compile(
    r"[0-9a-f]{32}|[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
)


@cache
def _boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        import psutil

        return f"boot-{psutil.boot_time():.0f}"


def _parse_machine_id(text: str) -> str | None:
    """A machine id from the text of a machine-id file (None: empty or not an id)."""
    value = text.strip().lower()
    return value if _MACHINE_ID_RE.fullmatch(value) else None


def _parse_ioreg(text: str) -> str | None:
    """The IOPlatformUUID from ``ioreg -rd1 -c IOPlatformExpertDevice`` output (macOS)."""
    match = re.search(r'"IOPlatformUUID"\s*=\s*"([0-9A-Fa-f-]{36})"', text)
    return match.group(1).lower() if match else None


@cache
def _machine_id() -> str | None:
    """This machine's stable id (survives reboots), or None where there is none.

    Linux: ``/etc/machine-id`` (or the D-Bus copy). macOS: the IOPlatformUUID. Elsewhere, or if
    unreadable: None, and locks of an earlier boot are judged by heartbeat age as on another host.
    """
    for name in MACHINE_ID_FILES:
        try:
            found = _parse_machine_id(Path(name).read_text())
        except (OSError, UnicodeDecodeError):
            continue
        if found is not None:
            return found
    if sys.platform == "darwin":
        try:
            out = subprocess.run(
                ["/usr/sbin/ioreg", "-rd1", "-c", "IOPlatformExpertDevice"],
                capture_output=True,
                text=True,
                timeout=5,
                check=False,
            )
        except (OSError, subprocess.SubprocessError):
            return None
        return _parse_ioreg(out.stdout)
    return None


def uptime_s() -> float:
    """Seconds since this machine booted, sleep included (by its own clock, not the wall clock)."""
    try:
        return time.clock_gettime(time.CLOCK_BOOTTIME)
    except (AttributeError, OSError):  # not Linux
        import psutil

        return time.time() - psutil.boot_time()


@cache
def _pid_namespace() -> str:
    try:
        return os.readlink("/proc/self/ns/pid")
    except OSError:
        return ""


def _parse_stat(stat: str) -> tuple[str, str]:
    # comm (field 2) may contain spaces and ")": the fixed fields start after the last ")".
    fields = stat[stat.rfind(")") + 2 :].split()
    return fields[0], fields[19]  # state, starttime (clock ticks since boot)


def process_start(pid: int) -> str | None:
    """A stable start-time token for ``pid``: None if no such process exists (or a zombie).

    On Linux this is the start time in clock ticks since boot from /proc (immune to wall-clock
    steps, psutil #2526); elsewhere psutil's create_time rounded to 10 ms. "unknown" when the
    process exists but cannot be inspected (EPERM is not death): callers must treat it as alive.
    """
    if pid <= 0:
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        pass  # alive, owned by someone else
    try:
        state, ticks = _parse_stat(Path(f"/proc/{pid}/stat").read_text())
    except FileNotFoundError:
        if Path("/proc/self/stat").exists():
            # Linux, but /proc hides the process (hidepid) or it exited since kill(0).
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return None
            except PermissionError:
                pass
            return "unknown"
        import psutil

        try:
            return f"ct:{psutil.Process(pid).create_time():.2f}"
        except psutil.NoSuchProcess:
            return None
        except psutil.AccessDenied:
            return "unknown"
    except (OSError, IndexError):
        return "unknown"
    if state in ("Z", "X"):
        # Exited, waiting to be reaped: dead, unless a thread-group leader whose threads run on.
        try:
            if len(os.listdir(f"/proc/{pid}/task")) <= 1:
                return None
        except OSError:
            return None
    return f"ticks:{ticks}"


def _own_start() -> str | None:
    # /proc/self, not /proc/<getpid()>: in a PID namespace whose /proc is the parent's, getpid()
    # names another process there.
    try:
        return f"ticks:{_parse_stat(Path('/proc/self/stat').read_text())[1]}"
    except (OSError, IndexError):
        return process_start(os.getpid())


def own_identity() -> dict[str, Any]:
    """The fields that identify this process to other processes."""
    return {
        "pid": os.getpid(),
        "start": _own_start(),
        "host": socket.gethostname(),
        "boot_id": _boot_id(),
        "pid_ns": _pid_namespace(),
        "machine_id": _machine_id(),
    }


def same_host(record: dict[str, Any]) -> bool:
    """Whether ``record`` was written in this boot of this host, in our PID namespace."""
    me = own_identity()
    return all(record.get(k) == me[k] for k in ("host", "boot_id", "pid_ns"))


def earlier_boot(record: dict[str, Any]) -> bool:
    """Whether ``record`` was written on this machine (same machine id and host name) in an
    earlier boot: every process of that boot is gone. Records without a machine id (older
    wrdsvault, or a machine without one) are never judged so."""
    me = own_identity()
    machine = record.get("machine_id")
    return (
        isinstance(machine, str)
        and me["machine_id"] is not None
        and machine == me["machine_id"]
        and record.get("host") == me["host"]
        and record.get("boot_id") != me["boot_id"]
    )


def same_host_death(record: dict[str, Any]) -> str | None:
    """Why the writer of ``record`` (a `same_host` record with a valid ``pid``) is provably dead.

    None: it may be alive (its process runs with the recorded start time, or cannot be inspected).
    """
    pid = record["pid"]
    start = process_start(pid)
    if start is None:
        return f"owner process {pid} is gone"
    if start not in (record.get("start"), "unknown"):
        return f"owner pid {pid} now belongs to another process (start time differs)"
    return None


def earlier_boot_death(record: dict[str, Any], age_s: float) -> str | None:
    """Why the writer of ``record`` (last heartbeat ``age_s`` ago) died with an earlier boot.

    None unless `earlier_boot` and the heartbeat stopped before this boot began (and more than
    `EARLIER_BOOT_BEATS` of its intervals ago): a record that beat since (a clone sharing our
    machine id, or a boot id that is not stable) is alive somewhere. Durations, not instants, are
    compared, so the skew between the file server's clock and ours does not enter.
    """
    if not earlier_boot(record):
        return None
    uptime = uptime_s()
    beat = record.get("heartbeat_s")
    beat_s = float(beat) if isinstance(beat, (int, float)) and beat > 0 else 0.0
    if age_s > max(uptime, EARLIER_BOOT_BEATS * beat_s):
        return (
            f"owner pid {record['pid']} ran in an earlier boot of this machine (boot id "
            f"{record.get('boot_id')}); no heartbeat for {age_s:.0f} s, this boot is "
            f"{uptime:.0f} s old"
        )
    return None
