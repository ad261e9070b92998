"""The reliability suite's shared code (tests/reliability): answers, children, faults, checks.

Imported as ``from _helpers import reliability as S`` by the test modules and by the child
scripts of tests/reliability (see the ``_helpers`` package). It imports only the standard
library and wrdsvault, so a child pays nothing extra for it.

``WRDSVAULT_SOAK_MINUTES`` is read here, at import (collection) time: the autouse ``clean_env``
fixture of tests/conftest.py strips every ``WRDSVAULT_*`` variable before each test runs.
"""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from _helpers.disk import copy_vault, leftovers, manifests_on_disk, read_head
from _helpers.proc import TESTS_DIR, child_env, wait_for
from _helpers.sources import sample_from_json

HERE = TESTS_DIR / "reliability"
SYNC_CHILD = HERE / "_sync_child.py"
RW_CHILD = HERE / "_rw_child.py"
PYTHON = sys.executable

#: Minutes of soak (0: the bounded CI amount). Read at import, before clean_env strips it.
SOAK_MINUTES: float = float(os.environ.get("WRDSVAULT_SOAK_MINUTES") or 0)

#: The datasets every sync of this suite writes (one commit for both).
DATASETS = ("crsp.msf", "ff.factors_monthly")
#: The small scenario of the crash and fault tests: vintage 2 rewrites 2 of 5 years of each dataset
#: (four partitions), like tests/crash. ``years`` as [first, last] so that it travels as JSON.
SMALL = {"seed": 0, "years": [2019, 2023], "n_securities": 40}
CHILD_TIMEOUT_S = 90.0

#: One statement answers for both datasets, per year: rows, the exact sum of crsp.msf ``ret``
#: (a decimal, in millionths) and the sum of ff ``mktrf`` (a double).
ANSWER_SQL = (
    "select 'crsp.msf' as ds, year(date) as y, count(*) as n, "
    "cast(sum(ret) * 1000000 as bigint) as s, null::double as f from crsp.msf group by y "
    "union all "
    "select 'ff.factors_monthly', year(date), count(*), null, sum(mktrf) "
    "from ff.factors_monthly group by 2 order by ds, y"
)
FLOAT_TOLERANCE = 1e-9

Answer = dict[str, list[list[Any]]]


# -- the sync child ------------------------------------------------------------------------


def sync_config(vintage: int, source: dict[str, Any] | None = None) -> str:
    """The CONFIG_JSON argument of ``_sync_child.py``."""
    return json.dumps(
        {"source": {**(source or SMALL), "vintage": vintage}, "datasets": list(DATASETS)}
    )


def sync_child_argv(root: Path, vintage: int, source: dict[str, Any] | None = None) -> list[str]:
    """The command line of a ``_sync_child.py`` run syncing ``vintage`` into ``root``."""
    return [PYTHON, str(SYNC_CHILD), str(root), sync_config(vintage, source)]


def parse_child_result(stdout: str) -> dict[str, Any] | None:
    """The JSON line ``_sync_child.py`` prints last, or None (killed before it printed)."""
    lines = [ln for ln in stdout.splitlines() if ln.startswith("{")]
    return json.loads(lines[-1]) if lines else None


# -- answers ---------------------------------------------------------------------------------


def answers_from_rows(rows: Iterable[dict[str, Any]]) -> Answer:
    """Normalise the rows of `ANSWER_SQL` into {dataset: [[year, rows, sum], ...]}."""
    out: Answer = {}
    for row in rows:
        value = row["s"] if row["ds"] == "crsp.msf" else row["f"]
        out.setdefault(row["ds"], []).append([int(row["y"]), int(row["n"]), value])
    return out


def snapshot_answers(snap: Any) -> Answer:
    """`ANSWER_SQL` on a `Snapshot` (pyarrow result: decimals stay exact)."""
    return answers_from_rows(snap.arrow(ANSWER_SQL).to_pylist())


def source_answers(source: Any, memo: dict[Any, list[Any]] | None = None) -> Answer:
    """The answers computed from the source's own batches (pyarrow), never from the vault.

    ``memo`` caches per (dataset, year, seed, size, vintage, last year): what a year's rows depend
    on (`SampleSource` docstring), so a commit's answers cost only the years new to the memo.
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    from wrdsvault.datasets import builtin_spec

    out: Answer = {}
    for name, column in (("crsp.msf", "ret"), ("ff.factors_monthly", "mktrf")):
        spec = builtin_spec(name)
        info = source.describe(spec)
        rows = []
        for part in source.partitions(spec):
            key = (
                name,
                part.year,
                source.seed,
                source.n_securities,
                source.profile,
                source.vintage,
                max(source.years),
            )
            if memo is not None and key in memo:
                rows.append(memo[key])
                continue
            table = pa.Table.from_batches(
                list(source.read_partition(spec, part.year, batch_rows=1 << 20)), info.schema
            )
            total = pc.sum(table[column]).as_py()
            if name == "crsp.msf":
                total = None if total is None else int(total * 1_000_000)
            row = [int(part.year), table.num_rows, total]
            if memo is not None:
                memo[key] = row
            rows.append(row)
        out[name] = sorted(rows)
    return out


def same_answer(a: Answer | None, b: Answer | None) -> bool:
    """Equal answers: counts and decimal sums exactly, double sums within `FLOAT_TOLERANCE`."""
    if a is None or b is None or sorted(a) != sorted(b):
        return False
    for name in a:
        if len(a[name]) != len(b[name]):
            return False
        for (ya, na, sa), (yb, nb, sb) in zip(a[name], b[name], strict=True):
            if (ya, na) != (yb, nb):
                return False
            if isinstance(sa, float) or isinstance(sb, float):
                if sa is None or sb is None or not math.isclose(sa, sb, abs_tol=FLOAT_TOLERANCE):
                    return False
            elif sa != sb:
                return False
    return True


# -- children --------------------------------------------------------------------------------


def run_sync_child(
    root: Path,
    vintage: int,
    *,
    crashpoint: str | None = None,
    source: dict[str, Any] | None = None,
    timeout_s: float = CHILD_TIMEOUT_S,
) -> tuple[int, dict[str, Any] | None, str]:
    """Run ``_sync_child.py`` (optionally armed to SIGKILL itself); (status, result, stderr)."""
    env = child_env(**({"WRDSVAULT_TEST_CRASHPOINT": crashpoint} if crashpoint else {}))
    proc = subprocess.run(
        sync_child_argv(root, vintage, source),
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout_s,
    )
    return proc.returncode, parse_child_result(proc.stdout), proc.stderr


# -- strace ----------------------------------------------------------------------------------

#: One line of ``strace -f -y`` output: pid, syscall, the rest.
STRACE_LINE = re.compile(r"^(\d+)\s+(\w+)\((.*)$")
#: The syscalls a fault can be injected into, by family (the architecture decides which exist).
FAMILIES: dict[str, tuple[str, ...]] = {
    "write": ("write", "pwrite64", "writev"),
    "fsync": ("fsync",),
    "fdatasync": ("fdatasync",),
    "rename": ("rename", "renameat", "renameat2"),
    "link": ("link", "linkat"),
}
ALL_TRACED = tuple(sorted({s for group in FAMILIES.values() for s in group}))


def strace_argv(
    log: Path | str, *, trace: Sequence[str], inject: tuple[str, str, int] | None = None
) -> list[str]:
    """The strace prefix: follow forks, quiet, fd paths (-y), log to ``log``, maybe inject."""
    argv = ["strace", "-f", "-qq", "-y", "--seccomp-bpf", "-o", str(log)]
    argv += ["-e", "trace=" + ",".join(trace)]
    if inject is not None:
        syscall, err, k = inject
        argv += ["-e", f"inject={syscall}:error={err}:when={k}"]
    return argv


def sync_occurrences(log_text: str) -> list[tuple[str, int, str]]:
    """(syscall, n-th call of that syscall by the main thread, arguments) of the sync's calls.

    strace counts ``when=k`` per thread, and the sync runs on the child's main thread (its first
    line): calls between the child's BEGIN and END markers on stderr are the sync's.
    """
    lines = log_text.splitlines()
    main = lines[0].split()[0] if lines else ""
    counts: dict[str, int] = {}
    out: list[tuple[str, int, str]] = []
    begun = False
    for line in lines:
        m = STRACE_LINE.match(line)
        if m is None or m.group(1) != main:
            continue
        name, args = m.group(2), m.group(3)
        counts[name] = counts.get(name, 0) + 1
        if '"BEGIN\\n"' in args:
            begun = True
        elif '"END\\n"' in args:
            break
        elif begun:
            out.append((name, counts[name], args))
    return out


def injected_lines(log_text: str) -> list[int]:
    """Indexes of the log lines strace marked ``(INJECTED)``."""
    return [i for i, line in enumerate(log_text.splitlines()) if "(INJECTED)" in line]


# -- readers under write load (test_readers_under_load.py, test_soak.py) ---------------------


def commit_source(i: int) -> dict[str, Any]:
    """The source of the i-th commit of a readers round: small, always different from the last.

    Vintages alternate (vintage 2 appends December of the last year and restates the year two
    before it) and every second commit adds a year, so each commit rewrites two or three
    partitions per dataset and no two snapshots of a round give the same answers.
    """
    return {"seed": 0, "n_securities": 30, "years": [2010, 2012 + i // 2], "vintage": 1 + i % 2}


def check_observations(expected: dict[str, Any], observations: list[dict[str, Any]]) -> list[str]:
    """Every problem in the readers' observations (empty: the run was correct).

    ``expected``: snapshot id -> {"sequence", "expected"} (answers computed from the source).
    An observation is a failed query (``error``), or the answer of a pinned or latest snapshot
    (``snapshot_id``, ``sequence``), or of ``Warehouse.arrow`` on the latest snapshot, bracketed
    by the ``HEAD`` it read before (``h0``) and after (``h1``). Checks: no failed query; each
    answer equals the expected answer of its snapshot (of one snapshot between h0 and h1 for
    ``Warehouse.arrow``), never a mix; what a reader sees as latest never moves backwards.
    """
    problems: list[str] = []
    ids = sorted(expected)
    seen_latest: dict[int, str] = {}
    for obs in observations:
        who = f"reader {obs['reader']} ({obs['kind']}, t={obs['t']:.3f})"
        if "error" in obs:
            problems.append(f"{who}: failed query: {obs['error']}")
            continue
        if obs["kind"] == "query":
            lo, hi = obs["h0"], obs["h1"]
            candidates = [sid for sid in ids if lo <= sid <= hi]
            if not candidates:
                problems.append(f"{who}: HEAD {lo}..{hi} names no committed snapshot")
            elif not any(same_answer(obs["answer"], expected[s]["expected"]) for s in candidates):
                problems.append(
                    f"{who}: the latest answer matches none of {candidates} (a mix of generations "
                    f"or a wrong file): {obs['answer']}"
                )
        else:
            sid = obs["snapshot_id"]
            lo = hi = sid
            if sid not in expected:
                problems.append(f"{who}: snapshot {sid} was never committed by the writer")
                continue
            if obs["sequence"] != expected[sid]["sequence"]:
                problems.append(f"{who}: snapshot {sid} has sequence {obs['sequence']}")
            if not same_answer(obs["answer"], expected[sid]["expected"]):
                problems.append(
                    f"{who}: snapshot {sid} answered {obs['answer']}, expected "
                    f"{expected[sid]['expected']}"
                )
        if obs["kind"] in ("latest", "query"):
            before = seen_latest.get(obs["reader"], "")
            if lo < before:
                problems.append(f"{who}: latest moved backwards from {before} to {lo}")
            seen_latest[obs["reader"]] = max(before, hi)
    return problems


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """The JSON lines of ``path`` (a torn last line, from a killed child, is dropped)."""
    out: list[dict[str, Any]] = []
    if not path.exists():
        return out
    for line in path.read_text().splitlines():
        try:
            out.append(json.loads(line))
        except ValueError:
            continue
    return out


def readers_round(
    workdir: Path,
    *,
    commits: int,
    readers: int,
    rate_hz: float,
    min_queries: int,
    broken: bool = False,
    seed: int = 0,
    timeout_s: float = 240.0,
    threads: int = 1,
) -> dict[str, Any]:
    """One writer process commits ``commits`` snapshots while ``readers`` processes query.

    The first snapshot is committed here (every reader pins it at start). Returns the expected
    answers per snapshot, every observation, the problems `check_observations` found, and
    counts. ``broken``: the writer also rewrites a Parquet file of the first snapshot in place
    after each commit (the negative control). ``threads``: query threads per reader process.
    """
    from wrdsvault import Warehouse

    workdir.mkdir(parents=True, exist_ok=True)
    root = workdir / "vault"
    memo: dict[Any, list[Any]] = {}
    first = sample_from_json(commit_source(0))
    expected0 = source_answers(first, memo)
    with Warehouse(root, source=first) as wh:
        report = wh.sync(list(DATASETS))
        assert report.committed and report.snapshot_id is not None, report
    expected: dict[str, Any] = {report.snapshot_id: {"sequence": 1, "expected": expected0}}
    stop = workdir / "stop"
    procs = []
    env = child_env()
    try:
        for r in range(readers):
            cfg = {
                "root": str(root),
                "reader": r,
                "log": str(workdir / f"reader-{r}.jsonl"),
                "stop": str(stop),
                "rate_hz": rate_hz,
                "seed": seed * 1000 + r,
                "min_queries": min_queries,
                "threads": threads,
            }
            procs.append(_start_rw(["reader", json.dumps(cfg)], workdir / f"reader-{r}.err", env))
        for p in procs:
            _expect_line(p, "ready", workdir)
        cfg = {
            "root": str(root),
            "first": 1,
            "commits": commits,
            "log": str(workdir / "writer.jsonl"),
            "broken": broken,
            "pause_s": 0.05,
        }
        started = time.monotonic()
        writer = _start_rw(["writer", json.dumps(cfg)], workdir / "writer.err", env, pipe=False)
        procs.append(writer)
        status = writer.wait(timeout=timeout_s)
        duration = time.monotonic() - started
        if status != 0:
            err = (workdir / "writer.err").read_text()
            msg = f"the writer exited with {status}: {err[-3000:]}"
            raise AssertionError(msg)
        stop.touch()
        for r, p in enumerate(procs[:readers]):
            if p.wait(timeout=timeout_s) != 0:
                err = (workdir / f"reader-{r}.err").read_text()
                msg = f"reader {r} exited with {p.returncode}: {err[-3000:]}"
                raise AssertionError(msg)
    finally:
        stop.touch()
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
            if p.stdout is not None:
                p.stdout.close()
    for line in read_jsonl(workdir / "writer.jsonl"):
        expected[line["snapshot_id"]] = {"sequence": line["sequence"], "expected": line["expected"]}
    observations = []
    for r in range(readers):
        observations += read_jsonl(workdir / f"reader-{r}.jsonl")
    return {
        "root": root,
        "expected": expected,
        "observations": observations,
        "problems": check_observations(expected, observations),
        "commits": len(expected) - 1,
        "queries": len(observations),
        "writer_s": duration,
    }


def _start_rw(
    args: list[str], err: Path, env: dict[str, str], *, pipe: bool = True
) -> subprocess.Popen[str]:
    with err.open("w") as errf:
        return subprocess.Popen(
            [PYTHON, str(RW_CHILD), *args],
            stdout=subprocess.PIPE if pipe else subprocess.DEVNULL,
            stderr=errf,
            text=True,
            env=env,
        )


def _expect_line(proc: subprocess.Popen[str], want: str, workdir: Path) -> None:
    assert proc.stdout is not None
    line = proc.stdout.readline().strip()
    if line != want:
        errs = "\n".join(p.read_text()[-2000:] for p in workdir.glob("*.err"))
        msg = f"a child said {line!r}, not {want!r}; stderr:\n{errs}"
        raise AssertionError(msg)


# -- I/O faults (test_io_faults.py, test_soak.py) ----------------------------------------------


class LeakedError(AssertionError):
    """An error that is not a wrdsvault error reached the caller (a known bug class, see docs)."""


class MisreportedCommit(AssertionError):
    """The sync said "nothing was committed" although HEAD names its new snapshot."""


#: What a fault at each phase of a sync must leave (see `check_fault_case`), in protocol order.
PHASES = ("lock", "staging", "publish", "manifest", "manifest-dir", "head", "head-dir", "release")
#: Calls outside the commit protocol's order: per-year checkpoints (``tmp/resume/``), written
#: during staging and removed after the commit. A fault there costs only the checkpoint: the
#: sync goes on and commits.
SIDE_PHASES = ("checkpoint",)


def _paths(args: str) -> list[str]:
    """The paths strace -y printed for an fd (``3</a/b>``) or quoted (``"/a/b"``) argument."""
    fd = re.match(r"^\d+<([^>]*)>", args)
    if fd:
        return [fd.group(1)]
    return re.findall(r'"([^"]*)"', args)


def classify(occurrences: list[tuple[str, int, str]], root: Path) -> list[dict[str, Any]]:
    """Name the file and the commit-protocol phase of each traced call of a sync.

    Returns dicts ``family, syscall, k, target, phase``; ``target`` is ``lock-record``,
    ``lock-epoch``, ``staged:<file>``, ``publish:<file>``, ``publish-dir:<dir>``, ``manifest``,
    ``manifest-dir``, ``head`` or ``root-dir#<n>`` (the n-th fsync of the vault folder: after the
    lock epoch, after the HEAD rename, after the lock's removal).
    """
    prefix = str(root) + "/"
    out = []
    root_fsyncs = 0
    seen: dict[tuple[str, str], int] = {}
    for syscall, k, args in occurrences:
        family = next(f for f, names in FAMILIES.items() if syscall in names)
        paths = _paths(args)
        # link(staged, checkpoint): named by where it links to
        resume = str(root / "tmp" / "resume") + "/"
        path = next((p for p in paths if p.startswith(resume)), paths[0] if paths else "")
        rel = "" if path == str(root) else path.removeprefix(prefix)
        name = rel.rsplit("/", 1)[-1]
        if rel == "tmp" or rel.startswith("tmp/resume"):
            # .2021.json.<hex>.tmp -> 2021.json; numbered, as one folder is fsynced many times
            short = re.sub(r"/\.([^/]+)\.[0-9a-f]+\.tmp$", r"/\1", rel)
            count = seen[(family, short)] = seen.get((family, short), 0) + 1
            target, phase = f"checkpoint:{short}#{count}", "checkpoint"
        elif name.startswith("..lock.epoch."):
            target, phase = "lock-epoch", "lock"
        elif name.startswith("..lock."):
            target, phase = "lock-record", "lock"
        elif rel.startswith("tmp/tx-"):
            if family == "rename":
                target, phase = f"publish:{name}", "publish"
            else:
                target, phase = f"staged:{name}", "staging"
        elif rel.startswith("data/"):
            target, phase = f"publish-dir:{rel}", "publish"
        elif rel.startswith("snapshots/."):
            target, phase = "manifest", "manifest"
        elif rel == "snapshots":
            target, phase = "manifest-dir", "manifest-dir"
        elif name.startswith(".HEAD."):
            target, phase = "head", "head"
        elif rel == "" and family in ("fsync", "fdatasync"):
            root_fsyncs += 1
            target = f"root-dir#{root_fsyncs}"
            phase = {1: "lock", 2: "head-dir", 3: "release"}.get(root_fsyncs, "unknown")
        else:
            target, phase = f"other:{rel}", "unknown"
        out.append({"family": family, "syscall": syscall, "k": k, "target": target, "phase": phase})
    return out


def pick_site(
    plan: list[dict[str, Any]], family: str, target: str, pick: int | str
) -> dict[str, Any]:
    """The call of ``family`` on ``target`` (a regex, fullmatch) at ``pick``: 1-based, -1 = last,
    ``"middle"``. Raises LookupError when the dry run made no such call."""
    calls = [c for c in plan if c["family"] == family and re.fullmatch(target, c["target"])]
    if not calls:
        msg = f"the dry run made no {family} call on {target}"
        raise LookupError(msg)
    if pick == "middle":
        return calls[len(calls) // 2]
    assert isinstance(pick, int)
    return calls[pick - 1 if pick > 0 else pick]


def fault_case_argv(
    root: Path, log: Path, syscall: str, err: str, k: int, vintage: int = 2
) -> list[str]:
    """strace running ``_sync_child.py`` with ``err`` injected into the k-th ``syscall``."""
    trace = sorted({syscall, "fsync", *FAMILIES["rename"]})
    return strace_argv(log, trace=trace, inject=(syscall, err, k)) + sync_child_argv(root, vintage)


def dry_run(template: Path, workdir: Path) -> tuple[list[dict[str, Any]], Path]:
    """Trace one clean vintage-2 sync of a copy of ``template``; return its classified calls."""
    root = copy_vault(template, workdir / "dry-vault")
    log = workdir / "dry.strace"
    argv = strace_argv(log, trace=ALL_TRACED) + sync_child_argv(root, 2)
    proc = subprocess.run(
        argv, env=child_env(), capture_output=True, text=True, timeout=CHILD_TIMEOUT_S
    )
    result = parse_child_result(proc.stdout)
    if proc.returncode != 0 or not result or not result.get("ok"):
        msg = (
            f"the traced dry run failed (is ptrace allowed here?): status {proc.returncode}, "
            f"{result}, stderr: {proc.stderr[-2000:]}"
        )
        raise RuntimeError(msg)
    return classify(sync_occurrences(log.read_text()), root), root


def run_fault_case(template: Path, workdir: Path, syscall: str, err: str, k: int) -> dict[str, Any]:
    """Inject ``err`` into the k-th ``syscall`` of a vintage-2 sync of a copy of ``template``."""
    root = copy_vault(template, workdir / "vault")
    log = workdir / "fault.strace"
    proc = subprocess.run(
        fault_case_argv(root, log, syscall, err, k),
        env=child_env(),
        capture_output=True,
        text=True,
        timeout=CHILD_TIMEOUT_S,
    )
    return {
        "root": root,
        "status": proc.returncode,
        "result": parse_child_result(proc.stdout),
        "stderr": proc.stderr,
        "log": log.read_text() if log.exists() else "",
    }


def _fsync_rules(log: str, root: Path, phase: str) -> list[str]:
    """After an injected fsync error: no fsync retry of that file, no commit (HEAD rename)."""
    lines = log.splitlines()
    hit = injected_lines(log)
    if not hit:
        return ["strace injected nothing (the call was never reached)"]
    failed = lines[hit[0]]
    m = STRACE_LINE.match(failed)
    paths = _paths(m.group(3)) if m else []
    problems = []
    head = f'"{root}/HEAD"'
    for line in lines[hit[0] + 1 :]:
        lm = STRACE_LINE.match(line)
        if lm is None:
            continue
        name, args = lm.group(2), lm.group(3)
        if (
            name in FAMILIES["rename"]
            and head in args
            and "= 0" in args
            and phase not in ("release", *SIDE_PHASES)
        ):
            problems.append(f"HEAD was replaced after the failed fsync: {line}")
        if (
            name in ("fsync", "fdatasync")
            and paths
            and _paths(args)[:1] == paths
            and not Path(paths[0]).is_dir()
        ):
            problems.append(f"the failed fsync was retried: {line}")
    return problems


def check_fault_case(
    run: dict[str, Any],
    *,
    old_id: str,
    new_fingerprint: str,
    family: str,
    err: str,
    phase: str,
) -> dict[str, Any]:
    """Check everything a sync that met an injected I/O error must leave; return facts.

    Order matters: every state check runs first (an AssertionError), the known-bug checks last
    (`LeakedError`, `MisreportedCommit`), so a test marked xfail for a known bug still fails on
    any other problem. ``phase`` may be ``"unknown"`` (soak: a random call): then HEAD may be
    old or new, and only the phase-independent rules apply.
    """
    from wrdsvault import DiskSpaceError, Warehouse
    from wrdsvault.errors import WrdsVaultError

    root: Path = run["root"]
    result = run["result"]
    where = f"{family} {err} ({phase}); child: {result}; stderr tail: {run['stderr'][-1500:]}"
    assert run["status"] == 0 and result is not None, f"the child crashed: {where}"
    assert injected_lines(run["log"]), f"strace injected nothing: {where}"
    head = read_head(root)
    committed = head != old_id
    if phase in ("head-dir", "release"):
        assert committed, f"the fault came after the HEAD rename, HEAD must be new: {where}"
    elif phase in SIDE_PHASES:
        assert committed, f"a fault in a checkpoint must not stop the commit: {where}"
        assert result["ok"], f"a fault in a checkpoint must not fail the sync: {where}"
    elif phase != "unknown":
        assert not committed, f"HEAD moved although the fault came before the commit: {where}"
        assert not result["ok"], f"the sync claims success although it did not commit: {where}"
    if result["ok"]:
        assert committed == bool(result["committed"]), where
    left = leftovers(root)
    assert left["lock"] == [], f"the lock was not released: {where}"
    assert left["staging"] == [], f"staging left in tmp/: {left}; {where}"
    assert left["temp"] == [], f"temp files left: {left}; {where}"
    if not committed and phase in ("publish", "manifest", "manifest-dir", "head"):
        # every year was staged before the fault: a retry must not download any of them again
        assert len(left["checkpoint"]) == 4, f"checkpoints missing: {left}; {where}"
    if result["ok"] and phase not in SIDE_PHASES:
        assert left["checkpoint"] == [], f"a commit left checkpoints: {left}; {where}"
    if family == "fsync":
        problems = _fsync_rules(run["log"], root, phase)
        assert not problems, f"{problems}; {where}"

    with Warehouse(root, create=False) as wh:
        listed = [s.snapshot_id for s in wh.snapshots()]
        assert listed == ([old_id, head] if committed else [old_id]), (listed, where)
        report = wh.verify(all_snapshots=True)
        assert report.ok, f"verify(all_snapshots=True) failed: {report.summary()}; {where}"
        with wh.snapshot("latest", verify=True) as snap:
            if committed:
                assert snap.fingerprint == new_fingerprint, where
        entries = wh.quarantine()
        if phase in ("lock", "release") or result["ok"]:
            assert entries == [], f"a quarantine entry for a failure outside staging: {where}"
        elif phase == "head-dir":  # committed: an entry (of an empty staging) is optional
            assert len(entries) <= 1, f"more than one quarantine entry: {entries}; {where}"
        elif phase != "unknown":  # failed inside the writer, after staging: one entry
            assert len(entries) == 1, f"expected one quarantine entry, got {entries}; {where}"
        for entry in entries:
            assert (entry.path / "reason.json").is_file(), f"{entry.path} has no reason.json"
            assert entry.error == result["type"], (entry.reason, where)
            if phase == "staging":
                names = [f["name"] for f in entry.reason["files"]]
                assert any(n.endswith(".parquet") for n in names), (entry.reason, where)
        kinds = {f.kind for f in wh.doctor().findings}
        # checkpoint: the finished years of a failed sync, kept so that the retry resumes
        allowed = {"quarantine", "orphan-file", "uncommitted-manifest", "checkpoint"}
        assert kinds <= allowed, f"doctor found {kinds}; {where}"
        if phase in ("manifest-dir", "head"):
            assert "uncommitted-manifest" in kinds, (kinds, where)
        if phase in ("manifest", "manifest-dir", "head"):
            assert "orphan-file" in kinds, (kinds, where)
        if entries:
            assert "quarantine" in kinds, (kinds, where)
        repaired = wh.doctor(repair=True)
        assert [e.name for e in wh.quarantine()] == [e.name for e in entries], "repair purged"
        after = wh.doctor()
        assert after.ok, f"not healthy after repair: {after.summary()}; {where}"
        # repair keeps checkpoints: they are a failed sync's finished work, not garbage
        assert {f.kind for f in after.findings} <= {"quarantine", "checkpoint"}, (
            after.summary(),
            where,
        )
        assert manifests_on_disk(root) == listed, "repair must keep every committed manifest"
    # A retry without injection succeeds and converges on the new data.
    with Warehouse(root, source=sample_from_json(SMALL, 2)) as wh:
        retry = wh.sync(list(DATASETS))
        assert retry.committed == (not committed), (retry, where)
        if not committed and phase in ("publish", "manifest", "manifest-dir", "head"):
            for d in retry.datasets:  # resumed from the checkpoints, not read again
                assert d.years_resumed == d.years_written != (), (d, where)
        final = read_head(root)
        assert [s.snapshot_id for s in wh.snapshots()] == [old_id, final], where
        with wh.snapshot("latest", verify=True) as snap:
            assert snap.fingerprint == new_fingerprint, where
        assert wh.verify(all_snapshots=True).ok, where
        assert {f.kind for f in wh.doctor().findings} <= {"quarantine"}, where
        assert [e.name for e in wh.quarantine()] == [e.name for e in entries], "entry vanished"
    assert leftovers(root)["lock"] == [], where

    # Known bug classes last (tests expecting them are xfail(raises=...)).
    if not result["ok"]:
        if not result["module"].startswith("wrdsvault"):
            msg = f"a raw {result['module']}.{result['type']} escaped sync(): {where}"
            raise LeakedError(msg)
        assert "Traceback" not in result["message"], where
        if err == "ENOSPC":
            assert result["type"] == DiskSpaceError.__name__, f"ENOSPC: not DiskSpaceError: {where}"
        else:
            assert result["type"] in {c.__name__ for c in _subclasses(WrdsVaultError)}, where
        if committed and "Nothing was committed" in result["message"]:
            msg = (
                f"HEAD names the new snapshot {head}; the error says nothing was committed: {where}"
            )
            raise MisreportedCommit(msg)
    return {"committed": committed, "repaired": list(repaired.repaired), "result": result}


def _subclasses(cls: type) -> list[type]:
    out = [cls]
    sub: type
    for sub in cls.__subclasses__():
        out += _subclasses(sub)
    return out


# -- crashes during recovery (test_recovery_crashes.py, test_soak.py) --------------------------


class DoctorMissed(AssertionError):
    """``doctor()`` did not name a leftover that recovery (and ``doctor --repair``) removes."""


#: What a dead writer (or two) may leave, as doctor names it.
CRASH_LEFTOVERS = {
    "stale-lock",
    "staging",
    "temp-file",
    "uncommitted-manifest",
    "orphan-file",
    "checkpoint",  # not garbage: the next sync resumes from it
}


def kill_during_recovery(root: Path, vintage: int, *, pad_files: int = 20_000) -> dict[str, Any]:
    """Pad the dead writer's staging with many files, start the next writer, SIGKILL it while
    its recovery is deleting them. Returns how many pad files were left (0 < left < pad_files).
    """
    staging = sorted((root / "tmp").iterdir())
    assert staging, "the first writer left no staging folder to recover"
    folder = staging[0]
    for i in range(pad_files):
        os.close(os.open(folder / f"pad-{i:05d}", os.O_WRONLY | os.O_CREAT, 0o600))
    proc = subprocess.Popen(
        sync_child_argv(root, vintage),
        env=child_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )

    def recovering() -> bool:
        """The child is deleting the pad files (a few hundred are gone), or it has ended."""
        try:
            left = len(os.listdir(folder))
        except FileNotFoundError:
            left = 0
        return proc.poll() is not None or left < pad_files - 200

    try:
        # Polled often: the recovery deletes ~20k files in well under a second.
        wait_for(recovering, "the next writer's recovery", timeout_s=CHILD_TIMEOUT_S, poll_s=0.002)
    finally:
        proc.kill()
        status = proc.wait()
    try:
        left = sum(1 for n in os.listdir(folder) if n.startswith("pad-"))
    except FileNotFoundError:
        left = 0
    return {"status": status, "left": left, "pad_files": pad_files}


def kill_at_random_time(root: Path, vintage: int, delay_s: float) -> dict[str, Any]:
    """Start the next writer and SIGKILL it ``delay_s`` after it starts its sync (BEGIN)."""
    proc = subprocess.Popen(
        sync_child_argv(root, vintage),
        env=child_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stderr is not None
    try:
        for line in proc.stderr:
            if line.strip() == "BEGIN":
                break
        time.sleep(delay_s)  # the random moment of the kill is what this tests, not a wait
    finally:
        proc.kill()
        status = proc.wait()
        proc.stderr.close()
    return {"status": status, "delay_s": delay_s}


def second_writer(root: Path, vintage: int, mode: str, rng: Any) -> dict[str, Any]:
    """Run the writer after a crash, killed as ``mode`` says: ``point:<crash point>[:n]``,
    ``mid-recovery`` or ``random``. Returns what happened (``status`` -9 when it was killed)."""
    if mode.startswith("point:"):
        status, result, err = run_sync_child(root, vintage, crashpoint=mode.removeprefix("point:"))
        assert status == -9, f"the writer never reached {mode}: {status} {result} {err[-2000:]}"
        return {"status": status}
    if mode == "mid-recovery":
        out = kill_during_recovery(root, vintage)
        assert 0 < out["left"] < out["pad_files"], f"the kill missed the recovery: {out}"
        return out
    if mode == "random":
        return kill_at_random_time(root, vintage, rng.uniform(0.0, 0.2))
    msg = f"unknown mode {mode!r}"
    raise ValueError(msg)


def check_converges(
    root: Path,
    *,
    old_id: str | None,
    vintage: int,
    fingerprint: str,
    repair_first: bool,
) -> dict[str, Any]:
    """After dead writers: readers see a committed state; doctor names the leftovers; (repair,
    then) a third writer converges on ``fingerprint``; doctor then reports nothing to fix.

    A leftover doctor failed to name raises `DoctorMissed` at the very end (after every other
    check), so a test marked xfail for that known bug still fails on anything else."""
    from wrdsvault import Warehouse

    head = read_head(root)
    committed = head is not None and head != old_id
    with Warehouse(root, create=False) as wh:
        listed = [s.snapshot_id for s in wh.snapshots()]
        expected = [s for s in (old_id, head if committed else None) if s is not None]
        assert listed == expected, (listed, expected, leftovers(root))
        assert wh.verify(all_snapshots=True).ok
        if committed:
            with wh.snapshot(verify=True) as snap:
                assert snap.fingerprint == fingerprint
        found = wh.doctor().findings
        kinds = {f.kind for f in found}
        assert kinds <= CRASH_LEFTOVERS, f"doctor found {kinds}: {[f.path for f in found]}"
        left = leftovers(root)
        missed = [
            f"{what} {left[key]} not reported (doctor found {sorted(kinds)})"
            for key, what in (
                ("lock", "stale-lock"),
                ("staging", "staging"),
                ("uncommitted", "uncommitted-manifest"),
                ("checkpoint", "checkpoint"),
            )
            if left[key] and what not in kinds
        ]
        if repair_first:
            wh.doctor(repair=True)
            after = wh.doctor()
            assert after.ok, after.summary()
            assert {f.kind for f in after.findings} <= {"checkpoint"}, after.summary()
            assert [s.snapshot_id for s in wh.snapshots()] == listed
    with Warehouse(root, source=sample_from_json(SMALL, vintage)) as wh:
        report = wh.sync(list(DATASETS))
        assert report.committed == (not committed), report
        final = read_head(root)
        assert final is not None
        if committed:
            assert final == head, "recovery never replaces a committed snapshot"
        snaps = [s.snapshot_id for s in wh.snapshots()]
        assert snaps == [s for s in (old_id, final) if s is not None], snaps
        with wh.snapshot(verify=True) as snap:
            assert snap.fingerprint == fingerprint
            assert same_answer(
                snapshot_answers(snap), source_answers(sample_from_json(SMALL, vintage))
            )
        assert wh.verify(all_snapshots=True).ok
        report_after = wh.doctor()
        assert {f.kind for f in report_after.findings} <= {"quarantine"}, report_after.summary()
    left = leftovers(root)
    assert left == {"staging": [], "checkpoint": [], "temp": [], "lock": [], "uncommitted": []}, (
        left
    )
    if missed:
        raise DoctorMissed("; ".join(missed))
    return {"committed_by_crashed": committed, "kinds": sorted(kinds)}


# -- the soak (test_soak.py) -------------------------------------------------------------------

#: Crash points a sync reaches once per staged or published partition (4 in the small scenario).
PER_PARTITION = (
    "partition-write-started",
    "partition-written",
    "partition-fsynced",
    "partition-staged",
    "checkpoint-linked",
    "checkpoint-recorded",
    "publish-dir-created",
    "partition-renamed",
    "partition-dir-fsynced",
)
#: Points a sync reaches even when it commits nothing (the data is already current).
NO_CHANGE_POINTS = ("lock-acquired", "staging-created", "staging-removed", "lock-released")


def random_point(rng: Any, *, changed: bool) -> str:
    """A random crash point (``name[:n]``) that a vintage-2 sync reaches."""
    from wrdsvault._storage.crashpoints import CrashPoint

    if not changed:
        return str(rng.choice(NO_CHANGE_POINTS))
    point = rng.choice([p.value for p in CrashPoint])
    return f"{point}:{rng.randint(1, 4)}" if point in PER_PARTITION else point


def random_crash_round(
    workdir: Path, template: Path, old_id: str, fingerprint: str, rng: Any
) -> dict[str, Any]:
    """Kill a writer at a random point, then 1-2 next writers at random points or moments
    (during recovery too), then check that a last writer converges. Returns what happened."""
    root = copy_vault(template, workdir / "vault")
    first = random_point(rng, changed=True)
    status, result, err = run_sync_child(root, 2, crashpoint=first)
    assert status == -9, (first, status, result, err[-1500:])
    kills = [first]
    for _ in range(rng.randint(1, 2)):
        changed = read_head(root) == old_id
        staged = bool(leftovers(root)["staging"])
        modes = ["random", "point:" + random_point(rng, changed=changed)]
        if staged:
            modes.append("mid-recovery")
        mode = rng.choice(modes)
        out = second_writer(root, 2, mode, rng)
        kills.append(mode if out["status"] == -9 else f"{mode} (finished first)")
    facts = check_converges(
        root, old_id=old_id, vintage=2, fingerprint=fingerprint, repair_first=rng.random() < 0.5
    )
    killed = sum(1 for k in kills if "finished" not in k)
    return {"kills": kills, "killed": killed, **facts}


def random_fault_round(
    workdir: Path,
    template: Path,
    plan: list[dict[str, Any]],
    old_id: str,
    fingerprint: str,
    rng: Any,
) -> dict[str, Any]:
    """Inject a random error into a random traced call of a sync, then check the outcome.

    The family is drawn first (write and fsync 4, rename 2, link 1: uniform over the ~285 calls
    would be parquet writes nearly always), then one of its calls.

    Returns ``{"call", "err", "outcome"}`` with outcome ``ok``, or the name of the known bug
    class hit (``LeakedError`` / ``MisreportedCommit`` / ``DoctorMissed``); any other failure
    raises.
    """
    weights = {"write": 4, "fsync": 4, "rename": 2, "link": 1, "fdatasync": 1}
    families = sorted({c["family"] for c in plan})
    family = rng.choices(families, weights=[weights[f] for f in families])[0]
    call = rng.choice([c for c in plan if c["family"] == family])
    err = rng.choice(["ENOSPC", "EDQUOT", "EIO"]) if family == "write" else "EIO"
    run = run_fault_case(template, workdir, call["syscall"], err, call["k"])
    try:
        check_fault_case(
            run,
            old_id=old_id,
            new_fingerprint=fingerprint,
            family=call["family"],
            err="ENOSPC" if err == "EDQUOT" else err,
            phase=call["phase"],
        )
    except (LeakedError, MisreportedCommit, DoctorMissed) as exc:
        return {"call": call, "err": err, "outcome": type(exc).__name__, "detail": str(exc)[:300]}
    return {"call": call, "err": err, "outcome": "ok"}
