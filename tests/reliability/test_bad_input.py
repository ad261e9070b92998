"""Malformed and truncated files on disk, and what verify, doctor and quarantine make of them.

Hostile names, refs and SQL through the Python API are covered by tests/test_names.py and
tests/test_query_sandbox.py; here a few go through the CLI. The bulk of this module damages one
file of a vault holding two snapshots (vintage 1 tagged ``paper``, vintage 2 latest): manifests
(truncated, empty, garbage, JSON of the wrong shape, deeply nested, a number out of range, a path
outside ``data/``, a newer ``format_version``, another snapshot's manifest), ``HEAD`` (empty,
garbage, an id with no manifest), ``vault.json`` (truncated, garbage, wrong types, newer
version, ...), the lock file (empty, garbage, a JSON list, huge, a folder, an old torn one), a
Parquet file (truncated, zeroed blocks, bit flips), tags and quarantine entries.

For each case every read entry point (``snapshots``, ``snapshot(ref, verify=True)``, ``verify``,
``status``, ``doctor``, ``quarantine``, ``tags``, ``schema_history``, queries) either works or
raises the `WrdsVaultError` the case expects; ``verify`` and ``doctor`` report what they must;
nothing on disk changes (tree hashed before and after, the lock's own ``.lock*`` files aside);
the CLI exits 0 or 1 with a ``wrdsvault:`` message and never a traceback; a sync either works
or fails with a wrdsvault error without touching committed files. Queries on a damaged Parquet
file run in a child process (``_read_child.py``): they may fail (with a wrdsvault error) or, as
docs/design/sandbox.md explains, answer wrongly without verify, in which case ``verify()`` and
``snapshot(verify=True)`` must flag it: never a silently wrong answer when verify was asked for.

A third-party exception reaching the user raises `LeakedError`, a damage ``doctor()`` fails to
report raises `DoctorMissed`, both after every other check, so that a case marked
``xfail(strict=True, raises=...)`` for a known bug still fails on any other problem (every bug
this module found is fixed; the mechanism stays for the next one).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import random
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NamedTuple

import pytest

from _helpers import disk
from _helpers import reliability as S
from _helpers.proc import child_env
from _helpers.sources import sample_from_json
from wrdsvault import (
    IntegrityError,
    LockHeldError,
    SnapshotNotFoundError,
    VaultFormatError,
    Warehouse,
    WrdsVaultError,
)
from wrdsvault.cli import main as cli_main

READ_CHILD = Path(__file__).with_name("_read_child.py")


# -- the damaged vaults --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def two_snapshots(
    small_vaults: dict[str, Any], tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Any]:
    """A vault with vintage 1 (tagged ``paper``) and vintage 2 (latest) of the small scenario."""
    root = disk.copy_vault(small_vaults["template"], tmp_path_factory.mktemp("bad-input") / "vault")
    with Warehouse(root, source=sample_from_json(S.SMALL, 2)) as wh:
        report = wh.sync(list(S.DATASETS))
        assert report.committed
        wh.tag("paper", small_vaults["old_id"])
        msf = wh.snapshot().dataset("crsp.msf")
    shared = [p.path for p in msf.partitions if p.year == 2019]
    return {
        "template": root,
        "head_id": report.snapshot_id,
        "paper_id": small_vaults["old_id"],
        "shared_parquet": shared[0],
        "answers": {"latest": small_vaults["new_answers"], "paper": small_vaults["old_answers"]},
    }


def _manifest(which: str) -> Callable[[Path, dict[str, Any]], Path]:
    def path(root: Path, info: dict[str, Any]) -> Path:
        return root / "snapshots" / f"{info['head_id' if which == 'head' else 'paper_id']}.json"

    return path


HEAD_MANIFEST = _manifest("head")
PAPER_MANIFEST = _manifest("paper")


def write(locate: Callable[[Path, dict[str, Any]], Path], data: bytes) -> Any:
    def damage(root: Path, info: dict[str, Any]) -> None:
        locate(root, info).write_bytes(data)

    return damage


def edit(locate: Callable[[Path, dict[str, Any]], Path], fn: Callable[[bytes], bytes]) -> Any:
    def damage(root: Path, info: dict[str, Any]) -> None:
        path = locate(root, info)
        path.write_bytes(fn(path.read_bytes()))

    return damage


def edit_json(locate: Callable[[Path, dict[str, Any]], Path], fn: Callable[[Any], None]) -> Any:
    def change(raw: bytes) -> bytes:
        obj = json.loads(raw)
        fn(obj)
        return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode() + b"\n"

    return edit(locate, change)


def fixed(name: str) -> Callable[[Path, dict[str, Any]], Path]:
    return lambda root, info: root / name


def parquet(root: Path, info: dict[str, Any]) -> Path:
    return root / info["shared_parquet"]


def garbage(n: int, seed: int = 0) -> bytes:
    return random.Random(seed).randbytes(n)  # noqa: S311 (test data)


def _set_path(obj: Any) -> None:
    """Point the latest snapshot's own 2021 crsp.msf file (no other snapshot has it) outside."""
    (part,) = [p for p in obj["datasets"]["crsp.msf"]["partitions"] if p["year"] == 2021]
    part["path"] = "data/../../../etc/passwd"


def _swap_manifest(root: Path, info: dict[str, Any]) -> None:
    HEAD_MANIFEST(root, info).write_bytes(PAPER_MANIFEST(root, info).read_bytes())


def _settings(key: str, value: Any) -> Callable[[Any], None]:
    def change(obj: Any) -> None:
        obj["settings"][key] = value

    return change


def _zero(offset: int | None, size: int = 4096) -> Callable[[bytes], bytes]:
    def change(raw: bytes) -> bytes:
        start = len(raw) - size if offset is None else offset
        return raw[:start] + bytes(size) + raw[start + size :]

    return change


def _flip(where: float) -> Callable[[bytes], bytes]:
    def change(raw: bytes) -> bytes:
        i = int(len(raw) * where)
        return raw[:i] + bytes([raw[i] ^ 0x10]) + raw[i + 1 :]

    return change


def _flip_in_column(column: str) -> Callable[[Path, dict[str, Any]], None]:
    """Flip one bit in the middle of ``column``'s pages: the column the answers sum up."""

    def damage(root: Path, info: dict[str, Any]) -> None:
        import pyarrow.parquet as pq

        path = parquet(root, info)
        group = pq.ParquetFile(path).metadata.row_group(0)
        (chunk,) = [
            group.column(i)
            for i in range(group.num_columns)
            if group.column(i).path_in_schema == column
        ]
        start = chunk.dictionary_page_offset or chunk.data_page_offset
        raw = bytearray(path.read_bytes())
        raw[start + chunk.total_compressed_size // 2] ^= 0x10
        path.write_bytes(bytes(raw))

    return damage


def _old_lock(data: bytes) -> Any:
    def damage(root: Path, info: dict[str, Any]) -> None:
        (root / ".lock").write_bytes(data)
        past = time.time() - 3600
        os.utime(root / ".lock", (past, past))

    return damage


def _mkdir(name: str) -> Any:
    def damage(root: Path, info: dict[str, Any]) -> None:
        (root / name).mkdir(parents=True, exist_ok=True)

    return damage


def _quarantine(reason: bytes | None) -> Any:
    def damage(root: Path, info: dict[str, Any]) -> None:
        entry = root / "quarantine" / "20250101T000000Z-crsp.msf-abcd"
        entry.mkdir(parents=True)
        (entry / "crsp.msf-2021.parquet").write_bytes(b"PAR1 partial")
        if reason is not None:
            (entry / "reason.json").write_bytes(reason)

    return damage


def _tag(content: bytes) -> Any:
    return write(fixed("tags/paper"), content)


def _as_format_1(root: Path, info: dict[str, Any]) -> None:
    """Rewrite the vault as format 1 wrote it: version 1, fingerprints without paths."""
    disk.rewrite_as_format_1(root)


def _set_path_format_1(root: Path, info: dict[str, Any]) -> None:
    """A format-1 vault whose latest manifest names its 2021 crsp.msf file outside data/.

    Format 1's fingerprint does not cover paths, so the altered manifest stays "valid".
    """
    _as_format_1(root, info)
    path = HEAD_MANIFEST(root, info)
    obj = json.loads(path.read_bytes())
    _set_path(obj)
    obj["fingerprint"] = disk.format_1_fingerprint(obj)
    path.write_bytes(disk.canonical(obj) + b"\n")


class Bad(NamedTuple):
    """One damaged vault and what wrdsvault must make of it."""

    id: str
    damage: Callable[[Path, dict[str, Any]], None]
    #: Entry point -> the error it must raise (every other one must work).
    raises: dict[str, type[WrdsVaultError]] | None = None
    #: `verify(all_snapshots=True).ok` (None: verify is expected to raise).
    verify_ok: bool | None = True
    #: Finding kinds doctor() must report.
    doctor: frozenset[str] = frozenset()
    #: CLI commands that must exit 1 (every other one exits 0).
    cli_fail: frozenset[str] = frozenset()
    #: ``Warehouse(root, create=False)`` must fail with VaultFormatError (None: either way).
    unopenable: bool | None = False
    #: A damaged Parquet file: queries run in a child.
    parquet: bool = False
    #: A sync must fail with this error (None: it may work or fail with any wrdsvault error).
    sync_raises: type[WrdsVaultError] | None = None
    marks: tuple[Any, ...] = ()
    #: Entry point -> an error it may raise (or work): where the fix of a known bug may reach.
    may_raise: dict[str, type[WrdsVaultError]] | None = None
    #: CLI commands that may exit 0 or 1.
    cli_may_fail: frozenset[str] = frozenset()
    #: Finding kinds doctor() may report besides ``doctor`` (consequences of the damage).
    doctor_may: frozenset[str] = frozenset()


V = VaultFormatError
#: A damaged HEAD manifest: the latest snapshot cannot open, listing all of them fails.
HEAD_MANIFEST_DAMAGE = {
    "snapshots": V,
    "latest": V,
    "status": V,
    "history": V,
    "query": V,
}
HEAD_MANIFEST_CLI = frozenset({"snapshots", "status", "verify", "doctor", "query"})
#: A damaged HEAD file: nothing that resolves a ref works.
HEAD_DAMAGE = {
    "snapshots": V,
    "latest": V,
    "paper": V,
    "verify": V,
    "status": V,
    "history": V,
    "query": V,
    "query-paper": V,
}
ALL_CLI = frozenset(
    {"snapshots", "status", "verify", "doctor", "quarantine", "query", "query-paper"}
)
HEAD_CLI = ALL_CLI - {"quarantine"}
#: With HEAD unreadable no snapshot is known to be committed: doctor may call tags dangling.
TAGS_OF_HEAD = frozenset({"damaged-tag"})
DAMAGED = frozenset({"damaged-manifest"})
PARQUET = {"latest": IntegrityError, "paper": IntegrityError}
NEWER = {"format_version": 99}

CASES = [
    # manifests: the latest one
    Bad("manifest-truncated", edit(HEAD_MANIFEST, lambda b: b[: len(b) // 2]),
        HEAD_MANIFEST_DAMAGE, False, DAMAGED, HEAD_MANIFEST_CLI),
    Bad("manifest-empty", write(HEAD_MANIFEST, b""),
        HEAD_MANIFEST_DAMAGE, False, DAMAGED, HEAD_MANIFEST_CLI),
    Bad("manifest-garbage", write(HEAD_MANIFEST, garbage(3000)),
        HEAD_MANIFEST_DAMAGE, False, DAMAGED, HEAD_MANIFEST_CLI),
    Bad("manifest-json-list", write(HEAD_MANIFEST, b"[1, 2, 3]\n"),
        HEAD_MANIFEST_DAMAGE, False, DAMAGED, HEAD_MANIFEST_CLI),
    Bad("manifest-wrong-shape", write(HEAD_MANIFEST, b'{"format_version": 1, "datasets": []}'),
        HEAD_MANIFEST_DAMAGE, False, DAMAGED, HEAD_MANIFEST_CLI),
    Bad("manifest-datasets-wrong-types",
        edit_json(HEAD_MANIFEST, lambda o: o["datasets"]["crsp.msf"].update(partitions=[7])),
        HEAD_MANIFEST_DAMAGE, False, DAMAGED, HEAD_MANIFEST_CLI),
    Bad("manifest-newer-format", edit_json(HEAD_MANIFEST, lambda o: o.update(NEWER)),
        HEAD_MANIFEST_DAMAGE, False, DAMAGED, HEAD_MANIFEST_CLI),
    Bad("manifest-of-another-snapshot", _swap_manifest,
        HEAD_MANIFEST_DAMAGE, False, DAMAGED, HEAD_MANIFEST_CLI),
    Bad("manifest-deeply-nested", write(HEAD_MANIFEST, b"[" * 100_000),
        HEAD_MANIFEST_DAMAGE, False, DAMAGED, HEAD_MANIFEST_CLI),
    Bad("manifest-number-out-of-range",
        edit(HEAD_MANIFEST, lambda b: b.replace(b'"sequence":2', b'"sequence":1e400')),
        HEAD_MANIFEST_DAMAGE, False, DAMAGED, HEAD_MANIFEST_CLI),
    Bad("manifest-path-outside-data", edit_json(HEAD_MANIFEST, _set_path),
        {"latest": WrdsVaultError, "query": WrdsVaultError}, False, DAMAGED,
        frozenset({"verify", "doctor", "query"}),
        may_raise={"snapshots": V, "status": V, "history": V},
        cli_may_fail=frozenset({"snapshots", "status"})),
    Bad("format-1-manifest-path-outside-data", _set_path_format_1,
        {"latest": WrdsVaultError, "query": WrdsVaultError}, False, DAMAGED,
        frozenset({"verify", "doctor", "query"}),
        may_raise={"snapshots": V, "status": V, "history": V},
        cli_may_fail=frozenset({"snapshots", "status"})),
    # manifests: an older one
    Bad("older-manifest-truncated", edit(PAPER_MANIFEST, lambda b: b[:100]),
        {"snapshots": V, "paper": V, "status": V, "history": V, "query-paper": V}, False,
        DAMAGED, frozenset({"snapshots", "status", "verify", "doctor", "query-paper"})),
    # HEAD
    Bad("head-empty", write(fixed("HEAD"), b""), HEAD_DAMAGE, None,
        frozenset({"damaged-head"}), HEAD_CLI, sync_raises=V,
        doctor_may=TAGS_OF_HEAD),
    Bad("head-garbage", write(fixed("HEAD"), garbage(40) + b"\n"), HEAD_DAMAGE, None,
        frozenset({"damaged-head"}), HEAD_CLI, sync_raises=V,
        doctor_may=TAGS_OF_HEAD),
    Bad("head-unknown-id", write(fixed("HEAD"), b"20991231T235959000000Z-0badc0de\n"),
        HEAD_DAMAGE, None, frozenset({"damaged-head"}), HEAD_CLI,
        doctor_may=TAGS_OF_HEAD),
    # vault.json
    Bad("vault-json-truncated", edit(fixed("vault.json"), lambda b: b[: len(b) // 2]),
        unopenable=True, cli_fail=ALL_CLI),
    Bad("vault-json-empty", write(fixed("vault.json"), b""), unopenable=True, cli_fail=ALL_CLI),
    Bad("vault-json-garbage", write(fixed("vault.json"), garbage(500)),
        unopenable=True, cli_fail=ALL_CLI),
    Bad("vault-json-list", write(fixed("vault.json"), b"[]"), unopenable=True, cli_fail=ALL_CLI),
    Bad("vault-json-version-not-int",
        edit_json(fixed("vault.json"), lambda o: o.update(format_version="one")),
        unopenable=True, cli_fail=ALL_CLI),
    Bad("vault-json-settings-not-object",
        edit_json(fixed("vault.json"), lambda o: o.update(settings=[1])),
        unopenable=True, cli_fail=ALL_CLI),
    Bad("vault-json-setting-wrong-type",
        edit_json(fixed("vault.json"), _settings("lock_timeout_s", "soon")),
        unopenable=True, cli_fail=ALL_CLI),
    Bad("vault-json-newer-version", edit_json(fixed("vault.json"), lambda o: o.update(NEWER)),
        unopenable=True, cli_fail=ALL_CLI),
    Bad("vault-json-deeply-nested", write(fixed("vault.json"), b"[" * 100_000),
        unopenable=True, cli_fail=ALL_CLI),
    Bad("vault-json-version-out-of-range",
        write(fixed("vault.json"), b'{"format_version": 1e400, "settings": {}}'),
        unopenable=True, cli_fail=ALL_CLI),
    Bad("vault-json-drift-policies-not-object",
        edit_json(fixed("vault.json"), _settings("drift_policies", ["crsp.msf"])),
        unopenable=True, cli_fail=ALL_CLI),
    Bad("vault-json-compression-level-not-int",
        edit_json(fixed("vault.json"), _settings("compression_level", "max")),
        unopenable=None, sync_raises=V),
    # the writer lock (a fresh unreadable record counts as held for 30 s)
    Bad("lock-empty", write(fixed(".lock"), b""), doctor=frozenset({"held-lock"}),
        cli_fail=frozenset({"doctor"}), sync_raises=LockHeldError),
    Bad("lock-garbage-json", write(fixed(".lock"), b'{"pid": 12, "token": '),
        doctor=frozenset({"held-lock"}), cli_fail=frozenset({"doctor"}),
        sync_raises=LockHeldError),
    Bad("lock-json-list", write(fixed(".lock"), b"[1, 2, 3]"),
        doctor=frozenset({"held-lock"}), cli_fail=frozenset({"doctor"}),
        sync_raises=LockHeldError),
    Bad("lock-huge", write(fixed(".lock"), b'{"pid": ' + b"7" * (4 << 20) + b"}"),
        doctor=frozenset({"held-lock"}), cli_fail=frozenset({"doctor"}),
        sync_raises=LockHeldError),
    Bad("lock-old-garbage", _old_lock(garbage(100)), doctor=frozenset({"stale-lock"}),
        cli_fail=frozenset({"doctor"})),
    Bad("lock-huge-nested", write(fixed(".lock"), b"[" * (1 << 20)),
        doctor=frozenset({"held-lock"}), cli_fail=frozenset({"doctor"}),
        sync_raises=LockHeldError),
    Bad("lock-is-a-folder", _mkdir(".lock"), doctor=frozenset({"held-lock"}),
        cli_fail=frozenset({"doctor"})),
    # Parquet (the 2019 crsp.msf file, shared by both snapshots)
    Bad("parquet-truncated", edit(parquet, lambda b: b[: len(b) // 2]), PARQUET, False,
        cli_fail=frozenset({"verify"}), parquet=True),
    Bad("parquet-truncated-footer", edit(parquet, lambda b: b[:-8]), PARQUET, False,
        cli_fail=frozenset({"verify"}), parquet=True),
    Bad("parquet-zeroed-data-block", edit(parquet, _zero(4)), PARQUET, False,
        cli_fail=frozenset({"verify"}), parquet=True),
    Bad("parquet-zeroed-middle-block", edit(parquet, _zero(8192)), PARQUET, False,
        cli_fail=frozenset({"verify"}), parquet=True),
    Bad("parquet-zeroed-footer-block", edit(parquet, _zero(None)), PARQUET, False,
        cli_fail=frozenset({"verify"}), parquet=True),
    Bad("parquet-bit-flip-data", edit(parquet, _flip(0.3)), PARQUET, False,
        cli_fail=frozenset({"verify"}), parquet=True),
    Bad("parquet-bit-flip-late-data", edit(parquet, _flip(0.6)), PARQUET, False,
        cli_fail=frozenset({"verify"}), parquet=True),
    Bad("parquet-bit-flip-footer", edit(parquet, _flip(0.97)), PARQUET, False,
        cli_fail=frozenset({"verify"}), parquet=True),
    Bad("parquet-bit-flip-summed-column", _flip_in_column("ret"), PARQUET, False,
        cli_fail=frozenset({"verify"}), parquet=True),
    # tags
    Bad("tag-garbage", _tag(b"not a snapshot id\n"),
        {"paper": SnapshotNotFoundError, "query-paper": SnapshotNotFoundError},
        doctor=frozenset({"damaged-tag"}), cli_fail=frozenset({"query-paper"})),
    Bad("tag-binary-garbage", _tag(b"\x00\xff\xfe garbage\n"),
        {"paper": SnapshotNotFoundError, "query-paper": SnapshotNotFoundError},
        doctor=frozenset({"damaged-tag"}), cli_fail=frozenset({"query-paper"})),
    Bad("tag-names-no-snapshot", _tag(b"20200101T000000000000Z-00000000\n"),
        {"paper": SnapshotNotFoundError, "query-paper": SnapshotNotFoundError},
        doctor=frozenset({"damaged-tag"}), cli_fail=frozenset({"query-paper"})),
    Bad("tag-is-a-folder", lambda root, info: ((root / "tags/paper").unlink(),
                                               (root / "tags/paper").mkdir()),
        {"paper": SnapshotNotFoundError, "query-paper": SnapshotNotFoundError},
        doctor=frozenset({"damaged-tag"}), cli_fail=frozenset({"query-paper"})),
    # quarantine entries
    Bad("quarantine-without-reason", _quarantine(None), doctor=frozenset({"quarantine"})),
    Bad("quarantine-reason-garbage", _quarantine(garbage(200)),
        doctor=frozenset({"quarantine"})),
    Bad("quarantine-reason-not-object", _quarantine(b'["error"]'),
        doctor=frozenset({"quarantine"})),
    Bad("quarantine-reason-deeply-nested", _quarantine(b"[" * 100_000),
        doctor=frozenset({"quarantine"})),
]  # fmt: skip


# -- the checks ----------------------------------------------------------------------------------


def _closing_snapshot(ref: str) -> Callable[[Warehouse], Any]:
    def open_and_close(wh: Warehouse) -> str:
        with wh.snapshot(ref, verify=True) as snap:
            return snap.id

    return open_and_close


def _query(ref: str | None) -> Callable[[Warehouse], Any]:
    def run(wh: Warehouse) -> Any:
        if ref is None:
            return S.answers_from_rows(wh.arrow(S.ANSWER_SQL).to_pylist())
        with wh.snapshot(ref) as snap:
            return S.snapshot_answers(snap)

    return run


ENTRY_POINTS: dict[str, Callable[[Warehouse], Any]] = {
    "snapshots": lambda wh: wh.snapshots(),
    "latest": _closing_snapshot("latest"),
    "paper": _closing_snapshot("paper"),
    "verify": lambda wh: wh.verify(all_snapshots=True),
    "status": lambda wh: wh.status(),
    "doctor": lambda wh: wh.doctor(),
    "quarantine": lambda wh: wh.quarantine(),
    "tags": lambda wh: wh.tags(),
    "history": lambda wh: wh.schema_history("crsp.msf"),
    "query": _query(None),
    "query-paper": _query("paper"),
}
CLI = {
    "snapshots": ["snapshots"],
    "status": ["status"],
    "verify": ["verify", "--all"],
    "doctor": ["doctor"],
    "quarantine": ["quarantine", "list"],
    "query": ["query", "select count(*) as n from crsp.msf"],
    "query-paper": ["query", "select count(*) as n from crsp.msf", "--snapshot", "paper"],
}
QUERIES = ("query", "query-paper")


def _wrdsvault(exc: BaseException) -> bool:
    return type(exc).__module__.startswith("wrdsvault")


def run_cli(argv: list[str]) -> tuple[int | str, str, str]:
    """``wrdsvault.cli.main(argv)`` in-process: (exit status or what escaped, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            status: int | str = cli_main(argv)
    except BaseException as exc:  # main() must not raise; record what escaped
        status = f"raised {type(exc).__module__}.{type(exc).__name__}: {exc}"[:300]
    return status, out.getvalue(), err.getvalue()


class Outcome:
    """What went wrong, by class: plain problems, leaked exceptions, damage doctor missed."""

    def __init__(self) -> None:
        self.problems: list[str] = []
        self.leaks: list[str] = []
        self.missed: list[str] = []
        #: doctor().ok in-process (None: doctor raised or was not run).
        self.doctor_healthy: bool | None = None

    def raised(self, where: str, exc: BaseException) -> None:
        if not _wrdsvault(exc):
            self.leaks.append(f"{where}: raw {type(exc).__module__}.{type(exc).__name__}: {exc}")

    def finish(self) -> None:
        assert not self.problems, "\n".join(self.problems + self.leaks + self.missed)
        if self.leaks:
            raise S.LeakedError("\n".join(self.leaks))
        if self.missed:
            raise S.DoctorMissed("\n".join(self.missed))


def check_entry_points(case: Bad, root: Path, outcome: Outcome) -> None:
    """Every read entry point works or raises what the case expects; verify/doctor report it."""
    with Warehouse(root, create=False) as wh:
        for name, fn in ENTRY_POINTS.items():
            if case.parquet and name in QUERIES:
                continue  # DuckDB on a damaged file: in the child
            expected = (case.raises or {}).get(name)
            optional = (case.may_raise or {}).get(name)
            try:
                value = fn(wh)
            except Exception as exc:
                outcome.raised(name, exc)
                if name == "doctor" and _wrdsvault(exc):
                    outcome.missed.append(f"doctor() raised instead of reporting: {exc}")
                elif optional is not None and isinstance(exc, optional):
                    pass
                elif _wrdsvault(exc) and (expected is None or not isinstance(exc, expected)):
                    outcome.problems.append(
                        f"{name}: {type(exc).__name__} ({exc}), expected "
                        f"{expected.__name__ if expected else 'success'}"
                    )
                continue
            if expected is not None:
                outcome.problems.append(f"{name}: returned {value!r}, expected {expected.__name__}")
            elif name == "verify" and case.verify_ok is not None and value.ok != case.verify_ok:
                outcome.problems.append(f"verify().ok is {value.ok}: {value.summary()}")
            elif name == "doctor":
                outcome.doctor_healthy = value.ok
                kinds = {f.kind for f in value.findings}
                if not case.doctor <= kinds:
                    outcome.missed.append(
                        f"doctor() reported {sorted(kinds)}, not {sorted(case.doctor - kinds)}: "
                        f"{value.summary()}"
                    )
                if kinds - case.doctor - case.doctor_may - {"orphan-file", "quarantine"}:
                    outcome.problems.append(f"doctor() also reported {value.summary()}")


def check_cli(case: Bad, root: Path, outcome: Outcome, *, opened: bool) -> None:
    """Each command exits 0 or 1 as the case says, errors on stderr, never a traceback."""
    for name, argv in CLI.items():
        if case.parquet and name in QUERIES:
            continue
        status, out, err = run_cli([*argv, "--vault", str(root)])
        where = f"wrdsvault {' '.join(argv)}"
        if isinstance(status, str):
            outcome.leaks.append(f"{where}: {status}")
            continue
        if "Traceback" in err or "Traceback" in out:
            outcome.leaks.append(f"{where}: a traceback on the terminal: {err[-1000:]}")
            continue
        want = 1 if name in case.cli_fail or not opened else 0
        if name == "doctor" and outcome.doctor_healthy is not None:
            want = 0 if outcome.doctor_healthy else 1  # whatever doctor() said, the CLI says
        if status != want and name not in case.cli_may_fail:
            outcome.problems.append(f"{where}: exit {status}, expected {want}; {err[-500:]}")
        if (
            status == 1
            and name not in ("verify", "doctor")
            and (not err.startswith("wrdsvault: ") or len(err) < 30)
        ):
            outcome.problems.append(f"{where}: exit 1 without a message on stderr: {err!r}")


def check_queries_in_child(
    root: Path, two_snapshots: dict[str, Any], outcome: Outcome
) -> dict[str, int]:
    """Queries on a damaged Parquet file: a wrdsvault error or an answer, never a crash."""
    proc = subprocess.run(
        [S.PYTHON, str(READ_CHILD), str(root)],
        env=child_env(),
        capture_output=True,
        text=True,
        timeout=S.CHILD_TIMEOUT_S,
    )
    if proc.returncode != 0:
        outcome.problems.append(f"the query child died ({proc.returncode}): {proc.stderr[-2000:]}")
        return {}
    results = json.loads(proc.stdout.strip().splitlines()[-1])
    tally = {"failed": 0, "right": 0, "silently-wrong": 0}
    for name, res in results.items():
        if name.startswith("cli-"):
            if not isinstance(res["exit"], int):
                outcome.leaks.append(f"{name}: {res['exit']}")
            elif "Traceback" in res["stderr"]:
                outcome.leaks.append(f"{name}: a traceback: {res['stderr'][-800:]}")
            elif res["exit"] not in (0, 1):
                outcome.problems.append(f"{name}: exit {res['exit']}")
            continue
        if not res["ok"]:
            tally["failed"] += 1
            if not res["module"].startswith("wrdsvault"):
                outcome.leaks.append(f"{name}: raw {res['module']}.{res['type']}: {res['message']}")
            continue
        ref = "paper" if name.endswith("paper") else "latest"
        right = S.same_answer(res["answer"], two_snapshots["answers"][ref])
        tally["right" if right else "silently-wrong"] += 1
    return tally


def check_sync(root: Path, outcome: Outcome, expected: type[WrdsVaultError] | None) -> None:
    """A write on the damaged vault: works, or fails with a wrdsvault error and keeps commits."""
    before = disk.committed_digests(root)
    try:
        with Warehouse(root, source=sample_from_json(S.SMALL, 1)) as wh:
            report = wh.sync(list(S.DATASETS))
    except Exception as exc:
        outcome.raised("sync", exc)
        after = disk.committed_digests(root)
        if after != before:
            outcome.problems.append(
                f"a failed sync changed committed files: {disk.digest_diff(before, after)}"
            )
        if _wrdsvault(exc) and expected is not None and not isinstance(exc, expected):
            outcome.problems.append(f"sync: {type(exc).__name__} ({exc}), expected {expected}")
        return
    if expected is not None:
        outcome.problems.append(f"sync: returned {report.summary()}, expected {expected.__name__}")


@pytest.fixture
def damaged(
    request: pytest.FixtureRequest, two_snapshots: dict[str, Any], tmp_path: Path
) -> Iterator[tuple[Bad, Path]]:
    """A private copy of the two-snapshot vault with the case's damage applied."""
    case: Bad = request.param
    root = disk.copy_vault(two_snapshots["template"], tmp_path / "vault")
    pristine = disk.entry_digests(root, skip_lock=True)
    case.damage(root, two_snapshots)
    after = disk.entry_digests(root, skip_lock=True)
    assert after != pristine or (root / ".lock").exists(), "the damage changed nothing"
    yield case, root


@pytest.mark.parametrize(
    "damaged", [pytest.param(c, id=c.id, marks=c.marks) for c in CASES], indirect=True
)
def test_damaged_file(damaged: tuple[Bad, Path], two_snapshots: dict[str, Any]) -> None:
    """A damaged on-disk file: clear wrdsvault errors, honest verify/doctor, nothing changed."""
    case, root = damaged
    outcome = Outcome()
    before = disk.entry_digests(root, skip_lock=True)
    opened = False
    try:
        Warehouse(root, create=False).close()
    except Exception as exc:
        outcome.raised("Warehouse()", exc)
        if _wrdsvault(exc) and not isinstance(exc, VaultFormatError):
            outcome.problems.append(f"Warehouse(): {type(exc).__name__}: {exc}")
        if case.unopenable is False:
            outcome.problems.append(f"Warehouse() failed: {type(exc).__name__}: {exc}")
    else:
        opened = True
        if case.unopenable:
            outcome.problems.append("Warehouse() opened a vault with a damaged vault.json")
        check_entry_points(case, root, outcome)
    check_cli(case, root, outcome, opened=opened)
    if case.parquet:
        tally = check_queries_in_child(root, two_snapshots, outcome)
        assert tally.get("right", 0) + tally.get("silently-wrong", 0) + tally.get("failed", 0) == 3
    after = disk.entry_digests(root, skip_lock=True)
    if after != before:
        outcome.problems.append(f"reading changed the vault: {disk.digest_diff(before, after)}")
    check_sync(root, outcome, case.sync_raises)
    outcome.finish()


def test_doctor_repair_keeps_damage_and_quarantine(
    two_snapshots: dict[str, Any], tmp_path: Path
) -> None:
    """doctor(repair=True) on damage: reports it, deletes none of it, and nothing committed."""
    root = disk.copy_vault(two_snapshots["template"], tmp_path / "vault")
    _quarantine(None)(root, two_snapshots)
    edit(PAPER_MANIFEST, lambda b: b[:100])(root, two_snapshots)
    edit(parquet, _flip(0.3))(root, two_snapshots)
    before = disk.entry_digests(root, skip_lock=True)
    with Warehouse(root, create=False) as wh:
        report = wh.doctor(repair=True)
        kinds = {f.kind for f in report.findings}
        assert {"quarantine", "damaged-manifest"} <= kinds, report.summary()
        assert report.repaired == (), report.summary()
        assert not report.ok
        assert not wh.verify(all_snapshots=True).ok
    after = disk.entry_digests(root, skip_lock=True)
    assert after == before, disk.digest_diff(before, after)


class RepairDeletedData(AssertionError):
    """doctor(repair=True) deleted a data file that a (damaged) committed manifest names."""


@pytest.mark.parametrize("fmt", [2, 1], ids=["format-2", "format-1"])
def test_repair_never_deletes_a_file_a_damaged_manifest_needs(
    two_snapshots: dict[str, Any], tmp_path: Path, fmt: int
) -> None:
    """Restoring a manifest whose path was altered after doctor --repair gives back the data."""
    root = disk.copy_vault(two_snapshots["template"], tmp_path / "vault")
    if fmt == 1:
        _as_format_1(root, two_snapshots)
    manifest = HEAD_MANIFEST(root, two_snapshots)
    backup = manifest.read_bytes()
    if fmt == 1:
        _set_path_format_1(root, two_snapshots)
    else:
        edit_json(HEAD_MANIFEST, _set_path)(root, two_snapshots)
    with Warehouse(root, create=False) as wh:
        assert not wh.verify().ok, "verify flags the altered path"
        wh.doctor(repair=True)
    manifest.write_bytes(backup)  # the user restores the manifest from a backup
    with Warehouse(root, create=False) as wh:
        try:
            with wh.snapshot(two_snapshots["head_id"], verify=True):
                pass
        except IntegrityError as exc:
            raise RepairDeletedData(str(exc)) from exc


def test_a_format_1_vault_still_opens(two_snapshots: dict[str, Any], tmp_path: Path) -> None:
    """A vault written by format 1 (fingerprint without paths) still opens, lists and verifies."""
    root = disk.copy_vault(two_snapshots["template"], tmp_path / "vault")
    _as_format_1(root, two_snapshots)
    with Warehouse(root, create=False) as wh:
        assert [s.snapshot_id for s in wh.snapshots()] == [
            two_snapshots["paper_id"],
            two_snapshots["head_id"],
        ]
        assert wh.verify(all_snapshots=True).ok
        with wh.snapshot("paper", verify=True) as snap:
            assert S.same_answer(S.snapshot_answers(snap), two_snapshots["answers"]["paper"])


HOSTILE = [
    ["query", "select 1; copy (select 1) to 'x.csv'"],
    ["query", "attach 'evil.duckdb'"],
    ["query", "select 1", "--snapshot", "../../etc/passwd"],
    ["query", "select 1", "--snapshot", "latest\nHEAD"],
    ["tag", "../x", "latest"],
    ["tag", "latest"],
    ["sync", "crsp.msf; drop table x", "--source", "sample"],
    ["sync", "../../etc.passwd", "--source", "sample"],
    ["quarantine", "show", "../../HEAD"],
    ["quarantine", "purge", "/etc"],
    ["verify", "--snapshot", "2025-02-30"],
]


@pytest.mark.parametrize("argv", HOSTILE, ids=lambda a: " ".join(a)[:40])
def test_hostile_cli_input(two_snapshots: dict[str, Any], tmp_path: Path, argv: list[str]) -> None:
    """Hostile refs, names and SQL through the CLI: exit 1, a message, no traceback, no write."""
    root = disk.copy_vault(two_snapshots["template"], tmp_path / "vault")
    before = disk.entry_digests(root, skip_lock=True)
    status, out, err = run_cli([*argv, "--vault", str(root)])
    assert status == 1, (status, out, err)
    assert err.startswith("wrdsvault: ") and "Traceback" not in err, err
    after = disk.entry_digests(root, skip_lock=True)
    assert after == before, disk.digest_diff(before, after)
