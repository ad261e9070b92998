"""Integrity: verify, schema drift under each policy, validation rules, quarantine, disk guard."""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import subprocess
import sys
import textwrap
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import wrdsvault
from _helpers.proc import child_env
from wrdsvault.cli import main
from wrdsvault.datasets import DatasetSpec
from wrdsvault.sources.base import PartitionInfo, TableInfo
from wrdsvault.testing import set_disk_usage
from wrdsvault.validation import (
    DatesInYear,
    KeyNotNull,
    MaxDateGap,
    MonthlyContinuity,
    NoRowDrop,
    PartitionData,
    RowCountMatchesSource,
    SqlRule,
    UniqueKey,
)


def field(name: str, typ: pa.DataType, declared: str) -> pa.Field:
    return pa.field(name, typ, metadata={b"source_type": declared.encode()})


BASE = [
    field("permno", pa.int32(), "integer"),
    field("date", pa.date32(), "date"),
    field("ret", pa.decimal128(10, 6), "numeric(10,6)"),
    field("ticker", pa.string(), "varchar(8)"),
]


def month_ends(year: int) -> list[dt.date]:
    return [dt.date(year, m, 28) for m in range(1, 13)]


class TableSource:
    """A source serving crafted rows: {year: list of row dicts}, with a given schema."""

    name = "crafted"

    def __init__(
        self,
        rows: dict[int, list[dict[str, Any]]],
        fields: Sequence[pa.Field] = BASE,
        *,
        marker: str = "v1",
        announce: dict[int, int] | None = None,
    ) -> None:
        self.rows = rows
        self.schema = pa.schema(list(fields))
        self.marker = marker
        self.announce = announce or {}

    def describe(self, spec: DatasetSpec) -> TableInfo:
        return TableInfo(schema=self.schema, change_marker=self.marker, comment=self.marker)

    def partitions(self, spec: DatasetSpec) -> list[PartitionInfo]:
        return [
            PartitionInfo(year=y, row_count=self.announce.get(y, len(r)), marker=None)
            for y, r in sorted(self.rows.items())
        ]

    def read_partition(
        self, spec: DatasetSpec, year: int | None, *, batch_rows: int = 131_072
    ) -> Iterator[pa.RecordBatch]:
        natural = {f.name: f for f in [*BASE, pa.field("extra", pa.int32())]}
        table = pa.Table.from_pylist(
            self.rows[year], schema=pa.schema([natural[f.name] for f in self.schema])
        )
        yield from table.cast(self.schema).to_batches(batch_rows)

    def close(self) -> None:
        pass


def panel(years: Sequence[int], permnos: Sequence[int] = (10001, 10002)) -> dict[int, list]:
    return {
        y: [
            {"permno": p, "date": d, "ret": None, "ticker": f"T{p}", "extra": 1}
            for p in permnos
            for d in month_ends(y)
        ]
        for y in years
    }


# -- verify -------------------------------------------------------------------------------------


def test_verify_names_a_flipped_and_a_truncated_file(
    vault: wrdsvault.Warehouse, capsys: pytest.CaptureFixture[str]
) -> None:
    """verify() reports the altered file and the truncated one; the CLI exits 1."""
    vault.sync(["crsp.msf", "ff.factors_monthly"])
    assert vault.verify().ok
    snap = vault.snapshot()
    flipped, truncated = snap.files("crsp.msf")[0], snap.files("ff.factors_monthly")[-1]
    raw = bytearray(flipped.read_bytes())
    raw[len(raw) // 3] ^= 0x40
    flipped.write_bytes(bytes(raw))
    truncated.write_bytes(truncated.read_bytes()[:-100])

    report = vault.verify()
    assert not report.ok
    by_problem = {f.problem: f for f in report.faults}
    assert set(by_problem) == {"sha256", "size"}
    assert by_problem["sha256"].dataset == "crsp.msf"
    assert by_problem["sha256"].year == snap.dataset("crsp.msf").partitions[0].year
    assert by_problem["size"].dataset == "ff.factors_monthly"
    # Counted from the manifest: files() itself refuses to hand out the truncated file now.
    assert report.files_checked == len(snap.dataset("crsp.msf").partitions) + len(
        snap.dataset("ff.factors_monthly").partitions
    )

    code = main(["verify", "--vault", str(vault.root)])
    out = capsys.readouterr().out
    assert code == 1
    assert str(flipped.relative_to(vault.root)) in out
    assert str(truncated.relative_to(vault.root)) in out


def test_verify_all_covers_every_snapshot_and_damaged_manifests(
    vault: wrdsvault.Warehouse, make_source: Any
) -> None:
    """verify(all_snapshots=True) hashes shared files once and reports a damaged manifest."""
    vault.sync("crsp.msf")
    vault.source = make_source(2)
    vault.sync("crsp.msf")
    first, second = vault.snapshots()
    report = vault.verify(all_snapshots=True)
    assert report.ok
    assert report.snapshots == (first.snapshot_id, second.snapshot_id)
    unique = {p for s in (first, second) for p in vault.snapshot(s.snapshot_id).files("crsp.msf")}
    assert report.files_checked == len(unique)

    manifest = vault.root / "snapshots" / f"{first.snapshot_id}.json"
    manifest.write_bytes(manifest.read_bytes().replace(b'"row_count":', b'"row_count":9', 1))
    fresh = wrdsvault.Warehouse(vault.root)
    report = fresh.verify(all_snapshots=True)
    assert [f.problem for f in report.faults] == ["manifest"]


def test_verify_of_missing_file(vault: wrdsvault.Warehouse) -> None:
    """A deleted file is reported as missing, not raised."""
    vault.sync("ff.factors_monthly")
    path = vault.snapshot().files("ff.factors_monthly")[0]
    path.unlink()
    assert [f.problem for f in vault.verify().faults] == ["missing"]


def test_verify_refuses_a_symlinked_partition_folder(
    vault: wrdsvault.Warehouse, capsys: pytest.CaptureFixture[str]
) -> None:
    """A year folder swapped for a symlink to an intact copy: the reader refuses, verify too."""
    vault.sync("crsp.msf")
    snap = vault.snapshot()
    folder = snap.files("crsp.msf")[0].parent
    inside = sorted(str(p.relative_to(vault.root)) for p in folder.iterdir())
    copy = vault.root.parent / "copy-of-year"
    folder.rename(copy)
    folder.symlink_to(copy, target_is_directory=True)
    with pytest.raises(wrdsvault.IntegrityError, match="symlink"):
        vault.snapshot().query("select count(*) from crsp.msf")
    with pytest.raises(wrdsvault.IntegrityError, match="symlink"):
        vault.snapshot().files("crsp.msf")
    report = vault.verify(all_snapshots=True)
    assert not report.ok
    assert sorted(f.path for f in report.faults) == inside
    assert {f.problem for f in report.faults} == {"not-a-file"}
    assert all(str(folder.relative_to(vault.root)) in f.detail for f in report.faults)
    assert main(["verify", "--all", "--vault", str(vault.root)]) == 1
    assert "all files intact" not in capsys.readouterr().out


READ_UNDER_STRACE = """
import json, sys
from wrdsvault import Warehouse
out = {}
with Warehouse(sys.argv[1], create=False) as wh:
    try:
        wh.snapshot(verify=True).close()
        out["snapshot"] = "opened"
    except Exception as exc:
        out["snapshot"] = f"{type(exc).__module__}.{type(exc).__name__}"
    out["verify"] = [[f.problem, f.path] for f in wh.verify().faults]
print(json.dumps(out))
"""


@pytest.mark.skipif(shutil.which("strace") is None, reason="needs strace to inject I/O errors")
@pytest.mark.parametrize(
    ("syscalls", "err"),
    [("read", "EIO"), ("openat", "EACCES"), ("newfstatat,statx,lstat", "EACCES")],
)
def test_snapshot_verify_turns_an_os_error_into_integrity_error(
    vault: wrdsvault.Warehouse, syscalls: str, err: str
) -> None:
    """snapshot(verify=True) raises IntegrityError, as verify() reports, when a file fails I/O."""
    vault.sync("ff.factors_monthly")
    victim = vault.snapshot().files("ff.factors_monthly")[0]
    proc = subprocess.run(
        [
            *("strace", "-f", "-qq", "-o", os.devnull, "-P", str(victim)),
            *("-e", f"trace={syscalls}", "-e", f"inject={syscalls}:error={err}"),
            *(sys.executable, "-c", READ_UNDER_STRACE, str(vault.root)),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["snapshot"] == "wrdsvault.errors.IntegrityError", out
    assert out["verify"] == [["unreadable", str(victim.relative_to(vault.root))]], out


# -- schema drift ---------------------------------------------------------------------------------

NARROW_RET = field("ret", pa.decimal128(8, 6), "numeric(8,6)")
WIDE_TICKER = field("ticker", pa.string(), "varchar(12)")
TEXT_PERMNO = field("permno", pa.string(), "varchar(8)")
DOUBLE_PERMNO = field("permno", pa.float64(), "double precision")

DRIFTS = {
    "added": ([*BASE, field("extra", pa.int32(), "integer")], ("added",)),
    "removed": (BASE[:3], ("removed",)),
    "retyped": ([TEXT_PERMNO, *BASE[1:]], ("retyped",)),
    "widened_int": ([DOUBLE_PERMNO, *BASE[1:]], ("widened",)),
    "narrowed": ([*BASE[:2], NARROW_RET, BASE[3]], ("narrowed",)),
    "widened_text": ([*BASE[:3], WIDE_TICKER], ("widened",)),
    "reordered": ([BASE[1], BASE[0], *BASE[2:]], ("reordered",)),
}
ALLOWED = {
    "strict": set(),
    "additive": {"added"},
    "accept": set(DRIFTS),
}


@pytest.mark.parametrize("policy", ["strict", "additive", "accept"])
@pytest.mark.parametrize("case", list(DRIFTS))
def test_schema_drift_by_class_and_policy(tmp_path: Path, case: str, policy: str) -> None:
    """Each drift class is classified; strict refuses all, additive only additions, accept all."""
    rows = panel([2020, 2021])
    wh = wrdsvault.Warehouse(tmp_path / "v", source=TableSource(rows))
    wh.sync("crsp.msf")
    before = wh.snapshot().id
    fields, kinds = DRIFTS[case]
    wh.source = TableSource(rows, fields, marker="v2")
    if case in ALLOWED[policy]:
        report = wh.sync("crsp.msf", drift=policy)
        assert report.committed
        assert report["crsp.msf"].drift is not None
        assert report["crsp.msf"].drift.kinds == kinds
        assert [c.name for c in wh.snapshot().dataset("crsp.msf").columns] == [
            f.name for f in fields
        ]
        history = wh.schema_history("crsp.msf")
        assert len(history) == 2
        assert history[1].drift is not None
        assert history[1].drift.kinds == kinds
        assert "crsp.msf" in wh.status().drift
        old = wh.snapshot(before)  # readers of the old snapshot keep the old schema
        assert [c.name for c in old.dataset("crsp.msf").columns] == [f.name for f in BASE]
    else:
        with pytest.raises(wrdsvault.SchemaDriftError) as err:
            wh.sync("crsp.msf", drift=policy)
        assert err.value.drift.kinds == kinds
        assert err.value.policy == policy
        assert wh.snapshot().id == before
        entries = wh.quarantine()
        assert len(entries) == 1
        assert entries[0].error == "SchemaDriftError"


def test_drift_policy_from_vault_settings_per_dataset(tmp_path: Path) -> None:
    """drift_policies in the settings apply per dataset; the call's drift= overrides them."""
    settings = wrdsvault.VaultSettings(drift_policies={"crsp.msf": "additive"})
    rows = panel([2020])
    wh = wrdsvault.Warehouse(tmp_path / "v", source=TableSource(rows), settings=settings)
    wh.sync("crsp.msf")
    wh.source = TableSource(rows, DRIFTS["added"][0], marker="v2")
    assert wh.sync("crsp.msf").committed
    wh.source = TableSource(rows, DRIFTS["added"][0][:3], marker="v3")
    with pytest.raises(wrdsvault.SchemaDriftError):
        wh.sync("crsp.msf")
    assert wh.sync("crsp.msf", drift={"crsp.msf": "accept"}).committed


def test_drift_with_years_filter_would_mix_schemas_and_is_refused(tmp_path: Path) -> None:
    """An accepted drift on only some years would leave mixed schemas: refused, say why."""
    rows = panel([2020, 2021])
    wh = wrdsvault.Warehouse(tmp_path / "v", source=TableSource(rows))
    wh.sync("crsp.msf")
    wh.source = TableSource(rows, DRIFTS["added"][0], marker="v2")
    with pytest.raises(wrdsvault.SyncError, match="omit years="):
        wh.sync("crsp.msf", years=[2021], drift="accept")


def test_a_refused_drift_keeps_its_reason_and_says_nothing_was_staged(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Drift is refused before any year is read: the quarantine entry holds only reason.json,
    and the warning says so instead of promising staged files."""
    rows = panel([2020])
    wh = wrdsvault.Warehouse(tmp_path / "v", source=TableSource(rows))
    wh.sync("crsp.msf")
    wh.source = TableSource(rows, DRIFTS["added"][0], marker="v2")
    with caplog.at_level("WARNING", logger="wrdsvault"), pytest.raises(wrdsvault.SchemaDriftError):
        wh.sync("crsp.msf")
    (entry,) = wh.quarantine()
    assert sorted(p.name for p in entry.path.iterdir()) == ["reason.json"]
    warned = [r.getMessage() for r in caplog.records if "failed;" in r.getMessage()]
    assert len(warned) == 1
    assert "reason (nothing was staged) kept in" in warned[0]
    assert "staged files" not in warned[0]


# -- validation -----------------------------------------------------------------------------------


def crafted(tmp_path: Path, rows: dict[int, list], **kw: Any) -> wrdsvault.Warehouse:
    return wrdsvault.Warehouse(tmp_path / "v", source=TableSource(rows, **kw))


def bad(rows: dict[int, list], year: int, **change: Any) -> dict[int, list]:
    rows[year][3] = {**rows[year][3], **change}
    return rows


@pytest.mark.parametrize(
    ("rule", "rows", "announce"),
    [
        ("key_not_null", bad(panel([2020]), 2020, permno=None), None),
        ("unique_key", bad(panel([2020]), 2020, date=month_ends(2020)[2]), None),
        ("dates_in_year", bad(panel([2020]), 2020, date=dt.date(2019, 12, 31)), None),
        ("row_count_matches_source", panel([2020]), {2020: 25}),
    ],
)
def test_builtin_rule_failure_quarantines_and_commits_nothing(
    tmp_path: Path, rule: str, rows: dict, announce: dict | None
) -> None:
    """A failing built-in rule raises ValidationFailedError naming rule, partition and rows."""
    wh = crafted(tmp_path, rows, announce=announce)
    with pytest.raises(wrdsvault.ValidationFailedError) as err:
        wh.sync("crsp.msf")
    finding = next(f for f in err.value.report.findings if f.rule == rule)
    assert finding.year == 2020
    assert finding.dataset == "crsp.msf"
    if rule != "row_count_matches_source":
        assert finding.examples
    assert rule in str(err.value)
    assert wh.snapshots() == []
    (entry,) = wh.quarantine()
    reason = json.loads((entry.path / "reason.json").read_text())
    assert reason["error"] == "ValidationFailedError"
    assert any(f["rule"] == rule for f in reason["evidence"]["report"]["findings"])
    assert "crsp.msf-2020.parquet" in [f["name"] for f in reason["files"]]
    assert (entry.path / "crsp.msf-2020.parquet").is_file()
    assert err.value.quarantine_path == str(entry.path)


def test_monthly_gap_and_daily_gap_rules(tmp_path: Path) -> None:
    """A missing month fails monthly continuity; a 10-day hole fails the daily gap rule."""
    rows = panel([2020])
    rows[2020] = [r for r in rows[2020] if r["date"].month != 6]
    with pytest.raises(wrdsvault.ValidationFailedError, match="monthly_continuity"):
        crafted(tmp_path / "m", rows).sync("crsp.msf")

    days = [dt.date(2020, 1, 1) + dt.timedelta(d) for d in range(60) if not 20 <= d < 31]
    daily = {2020: [{"permno": 1, "date": d, "ret": None, "ticker": "A"} for d in days]}
    with pytest.raises(wrdsvault.ValidationFailedError, match="max_date_gap"):
        crafted(tmp_path / "d", daily).sync("crsp.dsf")


def test_sudden_row_drop_against_previous_snapshot(tmp_path: Path) -> None:
    """A year that loses more than half its rows since the last snapshot fails no_row_drop."""
    wh = crafted(tmp_path, panel([2020], permnos=range(10001, 10011)))
    wh.sync("crsp.msf")
    wh.source = TableSource(panel([2020], permnos=range(10001, 10004)), marker="v2")
    with pytest.raises(wrdsvault.ValidationFailedError, match="no_row_drop"):
        wh.sync("crsp.msf")
    assert wh.sync("crsp.msf", validate=False).committed  # the user can decide otherwise


def test_rules_pass_on_clean_data(tmp_path: Path) -> None:
    """Clean crafted data passes every built-in rule."""
    assert crafted(tmp_path, panel([2020, 2021])).sync("crsp.msf").committed


def test_custom_sql_rule(tmp_path: Path) -> None:
    """A user SqlRule runs on every staged partition and fails the sync when it returns rows."""
    rule = SqlRule("ticker_upper", "select * from partition where ticker <> upper(ticker)", "lower")
    rows = bad(panel([2020]), 2020, ticker="t1")
    wh = wrdsvault.Warehouse(tmp_path / "v", source=TableSource(rows), rules={"crsp.msf": [rule]})
    with pytest.raises(wrdsvault.ValidationFailedError, match="ticker_upper") as err:
        wh.sync("crsp.msf")
    assert err.value.report.findings[0].examples[0]["ticker"] == "t1"


def test_each_rule_directly(tmp_path: Path) -> None:
    """Every built-in rule passes good data and flags bad data when called on its own."""
    import pyarrow.parquet as pq

    spec = wrdsvault.BUILTIN_SPECS["crsp.msf"]

    def data(rows: list[dict], announce: int | None = None, prev: Any = None) -> PartitionData:
        path = tmp_path / f"p{len(list(tmp_path.iterdir()))}.parquet"
        pq.write_table(pa.Table.from_pylist(rows, schema=pa.schema(BASE)), path)
        return PartitionData(
            spec=spec,
            year=2020,
            path=path,
            row_count=len(rows),
            source_row_count=announce,
            previous=prev,
            columns=[f.name for f in BASE],
        )

    good = panel([2020])[2020]
    for rule in (
        RowCountMatchesSource(),
        KeyNotNull(spec.primary_key),
        UniqueKey(spec.primary_key),
        DatesInYear(),
        MonthlyContinuity(),
        MaxDateGap(40),
        NoRowDrop(),
    ):
        assert rule.check(data(good, announce=len(good))) is None, rule
    assert RowCountMatchesSource().check(data(good, announce=1)) is not None
    assert KeyNotNull(spec.primary_key).check(data(bad(panel([2020]), 2020, date=None)[2020]))
    assert MaxDateGap(7).check(data(good)) is not None  # monthly data has month-long gaps


# -- disk guard -----------------------------------------------------------------------------------


def usage(used_fraction: float, total: int = 10**12) -> Any:
    return lambda _path: (total, int(total * (1 - used_fraction)))


@pytest.mark.parametrize(
    ("used", "level"),
    [
        (0.79, "ok"),
        (0.80, "warning"),
        (0.8999, "warning"),
        (0.90, "critical"),
        (0.9499, "critical"),
        (0.95, "refuse"),
        (0.99, "refuse"),
    ],
)
def test_watermarks(
    tmp_path: Path, make_source: Any, used: float, level: str, caplog: pytest.LogCaptureFixture
) -> None:
    """80% warns, 90% is critical, 95% refuses with DiskSpaceError; below 80% is quiet."""
    wh = wrdsvault.Warehouse(tmp_path / "v", source=make_source(), create=True)
    set_disk_usage(wh, usage(used))
    assert wh.disk().level == level
    if level == "refuse":
        with pytest.raises(wrdsvault.DiskSpaceError, match="95%") as err:
            wh.sync("ff.factors_monthly")
        assert err.value.free_bytes == int(10**12 * (1 - used))
        assert wh.snapshots() == []
    else:
        caplog.clear()
        assert wh.sync("ff.factors_monthly").committed
        logged = {r.levelname for r in caplog.records if "full" in r.getMessage()}
        assert logged == {"ok": set(), "warning": {"WARNING"}, "critical": {"ERROR"}}[level]


def test_twice_the_expected_bytes_must_be_free(tmp_path: Path, make_source: Any) -> None:
    """A sync whose estimate needs more than half the free space is refused before writing."""
    wh = wrdsvault.Warehouse(tmp_path / "v", source=make_source())
    set_disk_usage(wh, lambda _p: (10**12, 10_000))
    with pytest.raises(wrdsvault.DiskSpaceError, match="twice") as err:
        wh.sync("crsp.msf")
    assert err.value.needed_bytes > 10_000
    assert not list((wh.root / "data").rglob("*.parquet")) if (wh.root / "data").exists() else True


def test_watermarks_are_configurable(tmp_path: Path, make_source: Any) -> None:
    """disk_*_fraction settings move the watermarks."""
    settings = wrdsvault.VaultSettings(disk_refuse_fraction=0.5)
    wh = wrdsvault.Warehouse(tmp_path / "v", source=make_source(), settings=settings)
    set_disk_usage(wh, usage(0.6))
    with pytest.raises(wrdsvault.DiskSpaceError, match="50%"):
        wh.sync("ff.factors_monthly")


def test_disk_full_mid_write_leaves_previous_snapshot(tmp_path: Path, make_source: Any) -> None:
    """A write that hits the file-size limit (EFBIG, like ENOSPC) fails cleanly; retry works.

    The error does not claim a figure it cannot know: ``needed_bytes`` is None, not 0.
    """
    wh = wrdsvault.Warehouse(tmp_path / "v", source=make_source())
    wh.sync("ff.factors_monthly")
    before = wh.snapshot().id
    child = textwrap.dedent(
        """
        import resource, signal, sys, json
        import wrdsvault
        from wrdsvault.sources import SampleSource
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)   # get EFBIG instead of being killed
        resource.setrlimit(resource.RLIMIT_FSIZE, (20_000, 20_000))
        wh = wrdsvault.Warehouse(sys.argv[1], source=SampleSource(
            seed=0, years=range(2019, 2024), n_securities=60))
        try:
            wh.sync("crsp.dsf")
        except wrdsvault.DiskSpaceError as exc:
            print(json.dumps({"error": type(exc).__name__, "msg": str(exc),
                              "needed": exc.needed_bytes, "free": exc.free_bytes}))
        """
    )
    proc = subprocess.run(
        [sys.executable, "-c", child, str(wh.root)],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
        env=child_env(),
    )
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["error"] == "DiskSpaceError"
    assert "EFBIG" in result["msg"]
    assert result["needed"] is None and "needed: unknown" in result["msg"]
    assert isinstance(result["free"], int) and result["free"] > 0
    assert wh.snapshot().id == before
    assert wh.verify().ok
    assert [e.error for e in wh.quarantine()] == ["DiskSpaceError"]
    assert list((wh.root / "tmp").iterdir()) == []
    assert wh.sync("crsp.dsf").committed  # the retry, without the limit, succeeds


# -- quarantine CLI -------------------------------------------------------------------------------


def test_quarantine_list_show_purge(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """quarantine list/show/purge via the CLI; nothing is deleted until purge."""
    wh = crafted(tmp_path, bad(panel([2020]), 2020, permno=None))
    for _ in range(2):
        with pytest.raises(wrdsvault.ValidationFailedError):
            wh.sync("crsp.msf")
    vault = ["--vault", str(wh.root)]
    assert main(["quarantine", "list", *vault, "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert len(listed) == 2
    name = listed[0]["name"]
    assert main(["quarantine", "show", name, *vault]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown[0]["error"] == "ValidationFailedError"
    assert main(["quarantine", "show", "../../etc", *vault]) == 1
    assert main(["quarantine", "purge", *vault]) == 1  # needs names or --all
    capsys.readouterr()
    assert main(["quarantine", "purge", name, *vault]) == 0
    assert [e.name for e in wh.quarantine()] == [listed[1]["name"]]
    assert main(["quarantine", "purge", "--all", *vault]) == 0
    assert wh.quarantine() == []


@pytest.mark.parametrize("codec", ["snappy", "none", "lz4", "gzip"])
def test_every_codec_syncs_with_the_default_level(tmp_path: Path, codec: str) -> None:
    """Codecs without levels (snappy, none) ignore the default level instead of failing a sync."""
    from wrdsvault.settings import VaultSettings
    from wrdsvault.sources import SampleSource

    settings = VaultSettings(compression=codec)  # type: ignore[arg-type]
    with wrdsvault.Warehouse(
        tmp_path / "v",
        source=SampleSource(seed=0, years=range(2020, 2021), n_securities=10),
        settings=settings,
    ) as wh:
        wh.sync("crsp.msf")
        files = wh.snapshot().files("crsp.msf")
        assert files
        meta = pq.ParquetFile(files[0]).metadata
        want = "UNCOMPRESSED" if codec == "none" else codec.upper()
        assert meta.row_group(0).column(0).compression == want
        assert wh.query("select count(*) as n from crsp.msf")["n"][0] > 0
