"""A vault shared by a group: one folder, a writer host and a reader host (docs/scale-out.md).

A test cannot have two machines, so host B is a real process in its own UTS and PID namespaces
with its own host name (``unshare``): to the lock and the leases it is another host, whose pids
mean nothing here. Host A is this process. Nothing of the lock or the leases is mocked.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from _helpers.children import EventChild
from _helpers.disk import set_age
from _helpers.proc import TESTS_DIR, child_env
from wrdsvault import LockHeldError, Warehouse
from wrdsvault.sources import SampleSource

READER = TESTS_DIR / "leases" / "_reader_child.py"
LOCKER = TESTS_DIR / "lock" / "_lock_child.py"
HOST_B = "host-b"
FOUR_HOURS_AND_MORE = 4 * 3600.0 + 600.0


@pytest.fixture(scope="module")
def host_b() -> list[str]:
    """An argv prefix that runs a command as host B (own host name, own PID namespace)."""
    if shutil.which("unshare") is None or shutil.which("hostname") is None:
        pytest.skip("needs unshare(1) and hostname(1)")
    inner = ["sh", "-c", f'hostname {HOST_B} && exec "$@"', "sh"]
    base = ["unshare", "--uts", "--pid", "--fork", "--kill-child", "--mount-proc"]
    probe = [sys.executable, "-c", "import socket; print(socket.gethostname())"]
    for prefix in (base, [base[0], "--user", "--map-root-user", *base[1:]]):
        try:
            out = subprocess.run(
                [*prefix, *inner, *probe], capture_output=True, text=True, timeout=30, check=False
            )
        except OSError:
            continue
        if out.returncode == 0 and out.stdout.strip() == HOST_B:
            return [*prefix, *inner]
    pytest.skip("needs UTS and PID namespaces (root or user namespaces)")


@pytest.fixture
def children() -> Iterator[list[EventChild]]:
    """Host B's processes; every one is killed at teardown."""
    started: list[EventChild] = []
    yield started
    for child in started:
        child.close()


@pytest.fixture
def shared(tmp_path: Path) -> Iterator[tuple[Warehouse, list[str]]]:
    """The shared folder as host A (the writer) opens it: two snapshots of crsp.msf."""
    wh = Warehouse(tmp_path / "vault", source=SampleSource(years=range(2020, 2022), vintage=1))
    wh.sync("crsp.msf")
    wh.source = SampleSource(years=range(2020, 2022), vintage=2)
    wh.sync("crsp.msf")
    yield wh, [s.snapshot_id for s in wh.snapshots()]
    wh.close()


def _only_files_of(wh: Warehouse, sid: str) -> list[Path]:
    """The data files that snapshot ``sid`` names and the latest snapshot does not."""
    with wh.snapshot(sid) as old, wh.snapshot() as new:
        latest = {p.path for p in new.dataset("crsp.msf").partitions}
        return [
            wh.root / p.path for p in old.dataset("crsp.msf").partitions if p.path not in latest
        ]


def test_a_reader_on_host_b_keeps_its_files_from_gc_on_host_a(
    shared: tuple[Warehouse, list[str]], host_b: list[str], children: list[EventChild]
) -> None:
    """Host B's lease keeps its snapshot through host A's gc, even once host B died, until the
    lease has been silent for longer than lease_stale_after_s by the file server's clock."""
    wh, (old, _new) = shared
    only_old = _only_files_of(wh, old)
    assert only_old, "vintage 2 must change a year of crsp.msf"
    cfg = {"root": str(wh.root), "refs": [old], "sql": "SELECT count(*) FROM crsp.msf"}
    reader = EventChild([*host_b, sys.executable, str(READER), "snapshot", json.dumps(cfg)])
    children.append(reader)
    held = reader.expect("held")
    assert held["leased"] == [True]
    (lease,) = (wh.root / "leases").iterdir()
    assert json.loads(lease.read_text())["host"] == HOST_B

    plan = wh.gc(keep_last=1)
    assert plan.expired == () and all(p.exists() for p in only_old)
    reader.sigkill()  # host B dies: its lease stays behind, and its pid means nothing here
    assert lease.exists()
    again = wh.gc(keep_last=1)
    assert again.expired == () and all(p.exists() for p in only_old)

    set_age(lease, FOUR_HOURS_AND_MORE)  # silent for longer than lease_stale_after_s (4 h)
    freed = wh.gc(keep_last=1)
    assert freed.expired == (old,)
    assert not any(p.exists() for p in only_old)


def test_host_a_cannot_take_host_bs_live_lock_and_takes_a_dead_hosts_stale_one(
    shared: tuple[Warehouse, list[str]], host_b: list[str], children: list[EventChild]
) -> None:
    """Host B's lock is never judged by its pid on host A: a sync there waits while host B
    lives and after it died, and breaks the lock only once its heartbeat is older than
    lock_stale_after_s."""
    wh, _ = shared
    cfg = {"path": str(wh.root / ".lock"), "heartbeat_s": 60.0, "file_mode": 0o600}
    writer = EventChild(
        [*host_b, sys.executable, str(LOCKER), "hold", json.dumps(cfg)], env=child_env()
    )
    children.append(writer)
    held = writer.expect("held")
    info = wh.lock_info()
    assert info.owner["host"] == HOST_B and not info.same_host and info.state == "held"
    with pytest.raises(LockHeldError) as err:
        wh.tag("while-b-writes")
    assert err.value.holder["host"] == HOST_B

    writer.sigkill()  # host B dies holding the lock: its pid is gone, but not on this host
    with pytest.raises(LockHeldError):
        wh.tag("after-b-died")
    set_age(wh.root / ".lock", FOUR_HOURS_AND_MORE)  # no heartbeat for longer than 4 h
    wh.tag("after-b-was-silent")
    assert "after-b-was-silent" in wh.tags()
    assert wh.lock_info().free
    assert held["token"]
