"""Crash safety of `Warehouse.sync` (docs/design/commit-protocol.md): real processes, SIGKILL.

A child process (``_writer_child.py``, run by path) opens a vault holding a vintage-1 snapshot and
syncs vintage 2 of two datasets in one call. It is killed with SIGKILL either by itself at a named
`CrashPoint` (``WRDSVAULT_TEST_CRASHPOINT``): every member of the enum, plus later hits of the
points reached once per partition; or by the parent after a random delay. Then, in the parent:

* the vault opens and ``HEAD`` names the old snapshot (crash before the ``HEAD`` rename) or the new
  one (from ``head-renamed`` on); its fingerprint and query answers are exactly those of a clean
  reference vault at that vintage; every listed snapshot passes ``verify=True`` and answers queries;
  no manifest newer than ``HEAD`` is listed;
* the next writer breaks the dead child's lock, removes the garbage (``tmp/`` empty, no ``*.tmp``,
  no uncommitted manifest), commits vintage 2 if the child had not, and ends with exactly the old
  and the new snapshot, both verifying.

The first sync of an empty vault is also killed around its manifest and HEAD writes (recovery has
a separate branch for manifests without a HEAD).
"""

from __future__ import annotations

import json
import random
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import attrs
import pytest

from _helpers.disk import copy_vault, manifests_on_disk, require_head, temp_files, tmp_entries
from _helpers.proc import TESTS_DIR, child_env
from _helpers.sources import sample_from_json
from wrdsvault import Snapshot, SnapshotNotFoundError, VaultSettings, Warehouse
from wrdsvault._storage.crashpoints import ENV_VAR, CrashPoint
from wrdsvault.sources import SampleSource

pytestmark = pytest.mark.crash

CHILD: Path = TESTS_DIR / "crash" / "_writer_child.py"
DATASETS = ("crsp.msf", "ff.factors_monthly")
#: Per dataset: the year column and a numeric column whose per-year sum pins the content.
QUERY_COLUMNS = {
    "crsp.msf": ("date", "ret"),
    "crsp.dsf": ("date", "ret"),
    "ff.factors_monthly": ("date", "mktrf"),
}
#: The order in which a sync reaches the points (the enum's order, per its docstring).
POINTS = list(CrashPoint)
COMMIT_POINT = CrashPoint.HEAD_RENAMED
#: Points reached once per staged or published partition: also crash at their second hit, in the
#: middle of a multi-partition sync.
PER_PARTITION = (
    CrashPoint.PARTITION_WRITE_STARTED,
    CrashPoint.PARTITION_WRITTEN,
    CrashPoint.PARTITION_FSYNCED,
    CrashPoint.PARTITION_STAGED,
    CrashPoint.PUBLISH_DIR_CREATED,
    CrashPoint.PARTITION_RENAMED,
    CrashPoint.PARTITION_DIR_FSYNCED,
)
#: Vintage 2 rewrites two years of each dataset: four partitions, crsp.msf's first. Hits 3 and 4
#: land in the second dataset, after the first one's partitions were staged or published.
LATER_HITS = (
    (CrashPoint.PARTITION_WRITE_STARTED, 3),
    (CrashPoint.PARTITION_STAGED, 4),
    (CrashPoint.PARTITION_RENAMED, 4),
)
CASES = (
    [pytest.param(p, 1, id=p.value) for p in CrashPoint]
    + [pytest.param(p, 2, id=f"{p.value}:2") for p in PER_PARTITION]
    + [pytest.param(p, n, id=f"{p.value}:{n}") for p, n in LATER_HITS]
)
CHILD_TIMEOUT_S = 60.0


@attrs.frozen
class State:
    """What a reader sees in one snapshot: its data fingerprint and the query answers."""

    fingerprint: str
    answers: dict[str, list[tuple[Any, ...]]]


@attrs.frozen
class Reference:
    """The states of a vault synced without crashes to vintage 1, then to vintage 2."""

    old: State
    new: State


@attrs.frozen
class Scenario:
    """A vault synced to vintage 1 of ``datasets_v1``, then (the killed sync) vintage 2."""

    #: `SampleSource` arguments but the vintage, ``years`` as ``[first, last]`` (JSON for a child).
    source_args: dict[str, Any]
    datasets_v1: tuple[str, ...] = DATASETS
    datasets_v2: tuple[str, ...] = DATASETS

    def source(self, vintage: int) -> SampleSource:
        """The scenario's source at ``vintage``."""
        return sample_from_json(self.source_args, vintage)

    def datasets(self, vintage: int) -> tuple[str, ...]:
        """What the sync of ``vintage`` syncs, in one call."""
        return self.datasets_v1 if vintage == 1 else self.datasets_v2

    def child_argv(self, root: Path, vintage: int) -> list[str]:
        """The command line of a child process running the sync of ``vintage`` on ``root``."""
        kw = json.dumps({**self.source_args, "vintage": vintage})
        return [sys.executable, str(CHILD), str(root), kw, *self.datasets(vintage)]


#: Small enough for ~1 s per case on 2 cores; vintage 2 rewrites 2 of 5 years of each dataset.
SMALL = Scenario({"seed": 0, "years": [2019, 2023], "n_securities": 40})


def answers(snap: Snapshot) -> dict[str, list[tuple[Any, ...]]]:
    """Per dataset and year: row count and the rounded sum of one numeric column."""
    out = {}
    for name in snap.datasets:
        date_col, num_col = QUERY_COLUMNS[name]
        df = snap.query(
            f'select year("{date_col}") as y, count(*) as n, round(sum("{num_col}"), 6) as s '
            f"from {name} group by y order by y"
        )
        out[name] = [(int(y), int(n), float(s)) for y, n, s in df.itertuples(index=False)]
    return out


def state(snap: Snapshot) -> State:
    """The fingerprint and answers of ``snap``."""
    return State(fingerprint=snap.fingerprint, answers=answers(snap))


def sync_in_parent(root: Path, scenario: Scenario, vintage: int) -> str:
    """Run the sync of ``vintage`` in this process; return the new snapshot id."""
    with Warehouse(root, source=scenario.source(vintage)) as wh:
        report = wh.sync(scenario.datasets(vintage))
        assert report.committed, report
        assert report.snapshot_id is not None
        return report.snapshot_id


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> Reference:
    """A vault synced without crashes: vintage 1, then vintage 2 (the expected two states)."""
    root = tmp_path_factory.mktemp("reference") / "vault"
    states = []
    for vintage in (1, 2):
        with Warehouse(root, source=SMALL.source(vintage), settings=VaultSettings()) as wh:
            assert wh.sync(SMALL.datasets(vintage)).committed
            with wh.snapshot(verify=True) as snap:
                states.append(state(snap))
    old, new = states
    assert old.fingerprint != new.fingerprint, "vintage 2 must change the data"
    assert old.answers != new.answers, "the queries must tell vintage 1 from vintage 2"
    return Reference(old=old, new=new)


@pytest.fixture(scope="module")
def small_template(
    tmp_path_factory: pytest.TempPathFactory, reference: Reference
) -> tuple[Path, str]:
    """A vault holding one snapshot, vintage 1, synced in this process: (root, snapshot id)."""
    root = tmp_path_factory.mktemp("template") / "vault"
    Warehouse(root, settings=VaultSettings(), create=True).close()  # vault.json, default settings
    old_id = sync_in_parent(root, SMALL, 1)
    with Warehouse(root, create=False) as wh, wh.snapshot(verify=True) as snap:
        assert snap.id == old_id
        assert state(snap) == reference.old
    return root, old_id


@pytest.fixture
def vault_v1(tmp_path: Path, small_template: tuple[Path, str]) -> tuple[Path, str]:
    """A private copy of the vintage-1 template (a sync per test would double the run time)."""
    template, old_id = small_template
    return copy_vault(template, tmp_path / "vault"), old_id


def check_garbage_left(root: Path, point: CrashPoint, old_id: str) -> None:
    """The killed child left exactly the debris its crash point implies (so recovery has work)."""
    i = POINTS.index(point)
    lock_held = point is not CrashPoint.LOCK_RELEASED
    assert (root / ".lock").exists() == lock_held, "the dead child's lock file"
    staging = (
        POINTS.index(CrashPoint.STAGING_CREATED) <= i < POINTS.index(CrashPoint.STAGING_REMOVED)
    )
    assert bool(tmp_entries(root)) == staging, f"tmp/ holds {tmp_entries(root)}"
    temps = temp_files(root)
    manifest_temp = point in (CrashPoint.MANIFEST_TEMP_WRITTEN, CrashPoint.MANIFEST_TEMP_FSYNCED)
    head_temp = point in (CrashPoint.HEAD_TEMP_WRITTEN, CrashPoint.HEAD_TEMP_FSYNCED)
    assert any(t.startswith("snapshots/.") for t in temps) == manifest_temp, temps
    assert any(t.startswith(".HEAD.") for t in temps) == head_temp, temps
    written = POINTS.index(CrashPoint.MANIFEST_RENAMED) <= i
    assert len(manifests_on_disk(root)) == (2 if written else 1)
    committed = POINTS.index(COMMIT_POINT) <= i
    assert (require_head(root) != old_id) == committed


def check_readers(root: Path, reference: Reference, old_id: str, *, committed: bool) -> str:
    """A reader sees the old or the new state; every snapshot verifies. Return HEAD."""
    head = require_head(root)
    with Warehouse(root, create=False) as wh:
        listed = [info.snapshot_id for info in wh.snapshots()]
        assert listed[0] == old_id
        assert listed[-1] == head, "the latest listed snapshot is HEAD"
        assert all(sid <= head for sid in listed), "a manifest newer than HEAD is listed"
        uncommitted = [sid for sid in manifests_on_disk(root) if sid > head]
        assert not set(uncommitted) & set(listed)
        if committed:
            assert head != old_id
            assert listed == [old_id, head]
        else:
            assert listed == [old_id]
        expected = reference.new if committed else reference.old
        for sid in listed:
            with wh.snapshot(sid, verify=True) as snap:
                assert state(snap) == (reference.old if sid == old_id else reference.new)
        with wh.snapshot("latest", verify=True) as snap:
            assert snap.id == head
            assert state(snap) == expected
        assert wh.query("select count(*) as n from crsp.msf")["n"][0] == sum(
            n for _, n, _ in expected.answers["crsp.msf"]
        )
    return head


def check_next_writer(
    root: Path,
    scenario: Scenario,
    reference: Reference,
    old_id: str,
    head: str,
    *,
    lock_temps_ok: bool = False,
) -> None:
    """The next writer breaks the stale lock, cleans the garbage and ends at vintage 2.

    ``lock_temps_ok``: the child may have died while writing its lock record (a random kill);
    recovery leaves ``.lock.*.tmp`` files younger than a minute alone, by design (they may belong
    to a live contender), so they may remain.
    """
    with Warehouse(root, source=scenario.source(2)) as wh:
        # lock_timeout_s is 0: the dead child's lock must be broken at once, not waited for.
        report = wh.sync(scenario.datasets(2))
        assert report.committed == (head == old_id), report
        new_id = require_head(root)
        assert report.snapshot_id == new_id
        if head != old_id:
            assert new_id == head, "a committed snapshot is never replaced by recovery"
        assert [info.snapshot_id for info in wh.snapshots()] == [old_id, new_id]
        for sid, expected in ((old_id, reference.old), (new_id, reference.new)):
            with wh.snapshot(sid, verify=True) as snap:
                assert state(snap) == expected
    assert tmp_entries(root) == [], "tmp/ must be empty after the next writer"
    temps = temp_files(root)
    if lock_temps_ok:
        temps = [t for t in temps if not t.startswith(".lock.")]
    assert temps == []
    assert manifests_on_disk(root) == [old_id, new_id], "uncommitted manifests must be removed"
    assert not (root / ".lock").exists(), "the next writer released its lock"


@pytest.mark.parametrize(("point", "nth"), CASES)
def test_sigkill_at_crash_point(
    vault_v1: tuple[Path, str], reference: Reference, point: CrashPoint, nth: int
) -> None:
    """A writer SIGKILLed at a crash point leaves the old (before HEAD's rename) or new snapshot."""
    root, old_id = vault_v1
    env = child_env(**{ENV_VAR: f"{point.value}:{nth}"})
    proc = subprocess.run(
        SMALL.child_argv(root, 2),
        env=env,
        capture_output=True,
        text=True,
        timeout=CHILD_TIMEOUT_S,
    )
    assert proc.returncode == -signal.SIGKILL, (
        f"the vintage-2 sync never reached {point.value} (hit {nth}); exit status "
        f"{proc.returncode}\nstdout: {proc.stdout}\nstderr: {proc.stderr}"
    )
    check_garbage_left(root, point, old_id)
    committed = POINTS.index(point) >= POINTS.index(COMMIT_POINT)
    head = check_readers(root, reference, old_id, committed=committed)
    check_next_writer(root, SMALL, reference, old_id, head)


# -- the first sync of an empty vault ------------------------------------------------------------

#: Before HEAD exists, recovery takes another branch (manifests without a HEAD): crash the very
#: first sync around the manifest and HEAD writes, and at both ends.
FIRST_SYNC_POINTS = (
    CrashPoint.LOCK_ACQUIRED,
    CrashPoint.PARTITION_RENAMED,
    CrashPoint.MANIFEST_TEMP_FSYNCED,
    CrashPoint.MANIFEST_RENAMED,
    CrashPoint.HEAD_TEMP_FSYNCED,
    CrashPoint.HEAD_RENAMED,
    CrashPoint.LOCK_RELEASED,
)


@pytest.mark.parametrize("point", FIRST_SYNC_POINTS, ids=lambda p: p.value)
def test_sigkill_during_first_sync(tmp_path: Path, reference: Reference, point: CrashPoint) -> None:
    """A first sync SIGKILLed before HEAD's rename leaves an empty vault; after it, the snapshot."""
    root = tmp_path / "vault"
    Warehouse(root, create=True).close()
    env = child_env(**{ENV_VAR: point.value})
    proc = subprocess.run(
        SMALL.child_argv(root, 1),
        env=env,
        capture_output=True,
        text=True,
        timeout=CHILD_TIMEOUT_S,
    )
    assert proc.returncode == -signal.SIGKILL, (proc.returncode, proc.stdout, proc.stderr)
    committed = POINTS.index(point) >= POINTS.index(COMMIT_POINT)
    assert (root / "HEAD").exists() == committed
    with Warehouse(root, create=False) as wh:
        listed = [info.snapshot_id for info in wh.snapshots()]
        if committed:
            assert listed == [require_head(root)]
            with wh.snapshot(verify=True) as snap:
                assert state(snap) == reference.old
        else:
            assert listed == []
            with pytest.raises(SnapshotNotFoundError):
                wh.snapshot()
    with Warehouse(root, source=SMALL.source(1)) as wh:
        report = wh.sync(SMALL.datasets(1))
        assert report.committed == (not committed), report
        head = require_head(root)
        assert [info.snapshot_id for info in wh.snapshots()] == [head]
        with wh.snapshot(verify=True) as snap:
            assert state(snap) == reference.old
    assert tmp_entries(root) == []
    assert temp_files(root) == []
    assert manifests_on_disk(root) == [head], "the uncommitted manifest must be removed"
    assert not (root / ".lock").exists()


# -- kills at random times -----------------------------------------------------------------------

#: Random kills need a sync long enough to land all over it: half of it is building the sample
#: universe, the other half staging the daily file, new in vintage 2 (8 years, ~200k rows).
BIG = Scenario(
    {"seed": 0, "years": [2016, 2023], "n_securities": 150},
    datasets_v2=(*DATASETS, "crsp.dsf"),
)
RANDOM_SEED = 20240607
RANDOM_KILLS = 5


def start_child(root: Path, scenario: Scenario, vintage: int) -> subprocess.Popen[str]:
    """Start a child without a crash point; return once it reports ``ready`` (about to sync)."""
    proc = subprocess.Popen(
        scenario.child_argv(root, vintage),
        env=child_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert line == "ready\n", (line, proc.stderr.read() if proc.stderr else "")
    return proc


@pytest.fixture(scope="module")
def big_template(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str, float, Reference]:
    """A vintage-1 vault of the big scenario, the duration of its vintage-2 sync, both states."""
    base = tmp_path_factory.mktemp("big")
    template = base / "template"
    Warehouse(template, settings=VaultSettings(), create=True).close()  # default settings
    old_id = sync_in_parent(template, BIG, 1)
    timed = base / "timed"
    copy_vault(template, timed)
    proc = start_child(timed, BIG, 2)
    started = time.monotonic()
    assert proc.stdout is not None
    line = proc.stdout.readline()  # printed once sync() returned (the exit takes a while more)
    duration = time.monotonic() - started
    out, err = proc.communicate(timeout=CHILD_TIMEOUT_S)
    assert proc.returncode == 0, err
    assert line.startswith("committed "), (line, out, err)
    with Warehouse(timed, create=False) as wh:
        with wh.snapshot(old_id) as snap:
            old = state(snap)
        with wh.snapshot() as snap:
            new = state(snap)
    return template, old_id, duration, Reference(old=old, new=new)


def test_sigkill_at_random_times(
    tmp_path: Path, big_template: tuple[Path, str, float, Reference]
) -> None:
    """A writer SIGKILLed at random moments leaves the old or the new snapshot, recoverably."""
    template, old_id, duration, ref = big_template
    assert duration > 0.3, f"the sync takes {duration:.2f} s: too short to kill at random times"
    rng = random.Random(RANDOM_SEED)  # noqa: S311 (kill timing, not security)
    # One delay in each of RANDOM_KILLS equal slices of the sync, so kills spread over all of it.
    delays = [(k + rng.random()) / RANDOM_KILLS * 0.9 * duration for k in range(RANDOM_KILLS)]
    outcomes = []
    for k, delay in enumerate(delays):
        root = tmp_path / f"vault-{k}"
        copy_vault(template, root)
        proc = start_child(root, BIG, 2)
        time.sleep(delay)  # the random moment of the kill is what this tests, not a wait
        proc.send_signal(signal.SIGKILL)
        _, err = proc.communicate(timeout=CHILD_TIMEOUT_S)
        assert proc.returncode in (0, -signal.SIGKILL), err
        committed = require_head(root) != old_id
        staged = len(list((root / "tmp").rglob("*.parquet"))) if (root / "tmp").is_dir() else 0
        outcomes.append((round(delay, 3), proc.returncode, staged, committed))
        head = check_readers(root, ref, old_id, committed=committed)
        check_next_writer(root, BIG, ref, old_id, head, lock_temps_ok=True)
    killed = sum(rc == -signal.SIGKILL for _, rc, _, _ in outcomes)
    assert killed >= 2, (
        f"at least 2 of {RANDOM_KILLS} kills must land during the {duration:.2f} s sync; "
        f"(delay, exit status, staged files, committed): {outcomes}"
    )
