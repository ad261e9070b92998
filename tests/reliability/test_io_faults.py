"""I/O errors (EIO, ENOSPC) in a real writer process: clean failures, quarantine, recovery.

A child (``_sync_child.py``) syncs vintage 2 on top of a vintage-1 vault under
``strace -f -e inject=<syscall>:error=<ERRNO>:when=<k>``. A traced dry run first lists every
``write``, ``fsync``, ``fdatasync``, ``rename*`` and ``link`` the sync makes on its main thread
and names the file and protocol phase of each (`reliability.classify`); each case picks one call
by file, so that the cases stay the same when the data size changes: every fsync, rename and link
of the sync (16, 7 and 1 here; a test fails if the protocol gains one without a case), and of the
~260 writes those of the lock record, the manifest, HEAD, and the first, a middle and the last
write (footer) of the first staged Parquet file and the last write of the last one, each with
ENOSPC and EIO. ``fdatasync`` is not used (the case skips, saying so). Every call, writes
included, is hit at random by the soak (test_soak.py).

Each case (`reliability.check_fault_case`): the sync fails with a wrdsvault error (`DiskSpaceError`
for ENOSPC), HEAD is old (new only after the HEAD rename: the directory fsync after it and the
lock release), every listed snapshot verifies, no staging, temp file or lock is left, the failed
write is in quarantine with reason.json (exactly when it failed inside the writer), no fsync is
retried and nothing is committed after a failed fsync (from the strace log), ``doctor()``
describes the leftovers (orphan files, an uncommitted manifest, the quarantine entry),
``doctor(repair=True)`` leaves a healthy vault, and a retry without injection commits vintage 2.

Cases run two at a time in background threads (a module fixture starts every selected case at
once; each test waits for its own), which halves the run time on 2 cores.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from _helpers import reliability as S

pytestmark = pytest.mark.skipif(
    shutil.which("strace") is None,
    reason="strace is not installed: these tests inject EIO/ENOSPC with `strace -e inject=...` "
    "(apt-get install strace)",
)

#: (family, errno, target regex, pick, phase, marks). ``pick``: 1-based call on that target,
#: -1 the last, "middle".
MSF = r"staged:crsp\.msf-2021\.parquet"
FF = r"staged:ff\.factors_monthly-2023\.parquet"
SITES: list[tuple[str, str, str, int | str, str, tuple[Any, ...]]] = []
for _err in ("ENOSPC", "EIO"):
    SITES += [
        ("write", _err, "lock-record", 1, "lock", ()),
        ("write", _err, MSF, 1, "staging", ()),  # the Parquet magic: first byte of the sync
        ("write", _err, MSF, "middle", "staging", ()),  # a data page
        ("write", _err, MSF, -1, "staging", ()),  # the footer's closing magic
        ("write", _err, FF, -1, "staging", ()),  # the last staged file (second dataset)
        ("write", _err, "manifest", 1, "manifest", ()),
        ("write", _err, "head", 1, "head", ()),
    ]
#: Every fsync and rename of the sync, in protocol order (test_every_fsync_and_rename_has_a_case
#: fails when the protocol gains one that is not listed here).
STAGED = [
    r"crsp\.msf-2021\.parquet",
    r"crsp\.msf-2023\.parquet",
    r"ff\.factors_monthly-2021\.parquet",
    r"ff\.factors_monthly-2023\.parquet",
]
PUBLISHED = ["crsp/msf/2021", "crsp/msf/2023", "ff/factors_monthly/2021", "ff/factors_monthly/2023"]
SITES += [
    ("fsync", "EIO", "lock-record", 1, "lock", ()),
    ("fsync", "EIO", "lock-epoch", 1, "lock", ()),
    ("fsync", "EIO", r"root-dir#1", 1, "lock", ()),  # after the epoch file's rename
    *[("fsync", "EIO", f"staged:{f}", 1, "staging", ()) for f in STAGED],
    *[("fsync", "EIO", f"publish-dir:data/{d}", 1, "publish", ()) for d in PUBLISHED],
    ("fsync", "EIO", "manifest", 1, "manifest", ()),
    ("fsync", "EIO", "manifest-dir", 1, "manifest-dir", ()),
    ("fsync", "EIO", "head", 1, "head", ()),
    ("fsync", "EIO", r"root-dir#2", 1, "head-dir", ()),  # the ambiguous point
    ("fsync", "EIO", r"root-dir#3", 1, "release", ()),
    ("fdatasync", "EIO", r".*", 1, "unknown", ()),
    ("rename", "EIO", "lock-epoch", 1, "lock", ()),
    *[("rename", "EIO", f"publish:{f}", 1, "publish", ()) for f in STAGED],
    ("rename", "EIO", "manifest", 1, "manifest", ()),
    ("rename", "EIO", "head", 1, "head", ()),
    ("link", "EIO", "lock-record", 1, "lock", ()),
    # Checkpoints (tmp/resume/): every call is matched; the first, a middle and the last one
    # (the folder fsync after the commit removed them) are injected.
    ("fsync", "EIO", r"checkpoint:.*", 1, "checkpoint", ()),
    ("fsync", "EIO", r"checkpoint:.*", "middle", "checkpoint", ()),
    ("fsync", "EIO", r"checkpoint:.*", -1, "checkpoint", ()),
    ("rename", "EIO", r"checkpoint:.*", 1, "checkpoint", ()),
    ("rename", "EIO", r"checkpoint:.*", -1, "checkpoint", ()),
    ("link", "EIO", r"checkpoint:.*", 1, "checkpoint", ()),
    ("write", "ENOSPC", r"checkpoint:.*\.json#.*", 1, "checkpoint", ()),
]


def _case_id(site: tuple[Any, ...]) -> str:
    family, err, target, pick, _, _ = site
    short = target.replace("\\", "").replace("staged:", "").replace("publish:", "pub:")
    return f"{family}-{err}-{short}@{pick}"


CASES = [pytest.param(s[:5], id=_case_id(s), marks=s[5]) for s in SITES]


class FaultRunner:
    """Runs the selected fault cases two at a time in the background, after one dry run."""

    def __init__(self, template: Path, workdir: Path) -> None:
        self.template = template
        self.workdir = workdir
        self.plan, self.dry_root = S.dry_run(template, workdir)
        self.pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="fault-case")
        self.futures: dict[tuple[Any, ...], Future[dict[str, Any]] | None] = {}

    def submit(self, case: tuple[Any, ...]) -> None:
        if case in self.futures:
            return
        family, err, target, pick, _ = case
        try:
            call = S.pick_site(self.plan, family, target, pick)
        except LookupError:
            self.futures[case] = None
            return
        folder = self.workdir / f"case-{len(self.futures):02d}"
        folder.mkdir()
        self.futures[case] = self.pool.submit(
            self._run, folder, call["syscall"], err, call["k"], call
        )

    def _run(self, folder: Path, syscall: str, err: str, k: int, call: dict) -> dict[str, Any]:
        return {**S.run_fault_case(self.template, folder, syscall, err, k), "call": call}

    def get(self, case: tuple[Any, ...]) -> dict[str, Any] | None:
        self.submit(case)
        future = self.futures[case]
        return None if future is None else future.result(timeout=600)


@pytest.fixture(scope="module")
def runner(
    request: pytest.FixtureRequest,
    small_vaults: dict[str, Any],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[FaultRunner]:
    """The dry run, then every case of this module that pytest selected, started at once."""
    run = FaultRunner(small_vaults["template"], tmp_path_factory.mktemp("io-faults"))
    here = Path(__file__)
    for item in request.session.items:
        callspec = getattr(item, "callspec", None)
        if item.path == here and callspec is not None and "case" in callspec.params:
            run.submit(callspec.params["case"])
    yield run
    run.pool.shutdown(wait=True, cancel_futures=True)


def test_dry_run_names_every_call(runner: FaultRunner) -> None:
    """The traced clean sync makes the calls the cases target, each with a known phase."""
    plan = runner.plan
    # Writes to a pipe or socket are the process's own output (a log line, e.g. the disk-space
    # warning a sync prints on a filling disk), not calls of the commit protocol.
    # They are left out of every check below (a loaded machine can make the sync log a line).
    output = ("other:pipe:", "other:socket:")
    own = [c for c in plan if not (c["phase"] == "unknown" and c["target"].startswith(output))]
    unknown = [c for c in own if c["phase"] == "unknown"]
    assert unknown == [], f"calls the suite cannot place in the protocol: {unknown}"
    families = {c["family"] for c in own}
    assert {"write", "fsync", "rename", "link"} <= families, families
    phases = [S.PHASES.index(c["phase"]) for c in own if c["phase"] not in S.SIDE_PHASES]
    assert phases == sorted(phases), "the calls must follow the commit protocol's order"
    assert {c["phase"] for c in own} == {*S.PHASES, *S.SIDE_PHASES}


def test_every_fsync_and_rename_has_a_case(runner: FaultRunner) -> None:
    """Each fsync, fdatasync, rename and link of the traced sync is the target of a case."""
    exhaustive = ("fsync", "fdatasync", "rename", "link")
    missing = [
        c
        for c in runner.plan
        if c["family"] in exhaustive
        and not any(site[0] == c["family"] and re.fullmatch(site[2], c["target"]) for site in SITES)
    ]
    assert missing == [], f"calls without a fault case (add them to SITES): {missing}"
    targets = [(c["family"], c["target"]) for c in runner.plan if c["family"] in exhaustive]
    assert len(targets) == len(set(targets)), f"one case per call needs unique targets: {targets}"


@pytest.mark.parametrize("case", CASES)
def test_injected_io_error(
    runner: FaultRunner, small_vaults: dict[str, Any], case: tuple[Any, ...]
) -> None:
    """One injected EIO/ENOSPC: typed error, old (or consistent new) HEAD, clean retry."""
    family, err, target, _pick, phase = case
    run = runner.get(case)
    if run is None:
        pytest.skip(f"the sync makes no {family} call on {target} (dry run), nothing to inject")
    call = run["call"]
    assert call["phase"] == phase or phase == "unknown", call
    S.check_fault_case(
        run,
        old_id=small_vaults["old_id"],
        new_fingerprint=small_vaults["new_fingerprint"],
        family=family,
        err=err,
        phase=call["phase"],
    )
