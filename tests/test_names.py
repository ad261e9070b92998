"""Hostile dataset names, tags and refs are refused before any path join or SQL.

Properties (Hypothesis, strategies in ``tests/_helpers/strategies.py``):

* `validate_dataset` accepts exactly ``^[a-z][a-z0-9_]{0,62}\\.[a-z][a-z0-9_]{0,62}$`` (fullmatch).
* Every public entry point that takes a user string raises a `WrdsVaultError` subclass (or
  ``TypeError`` for a non-str) and writes nothing, inside or outside the vault.
* `Layout` never returns a path outside the vault root.
* Refs: ISO dates and datetimes resolve as-of; impossible dates are invalid names.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import wrdsvault
from _helpers import strategies as S
from _helpers.disk import copy_vault, entry_digests, entry_paths
from _helpers.proc import strip_env
from wrdsvault import (
    InvalidNameError,
    InvalidValueError,
    SnapshotNotFoundError,
    UnknownDatasetError,
    Warehouse,
    WrdsVaultError,
)
from wrdsvault._storage.layout import Layout
from wrdsvault.datasets import BUILTIN_SPECS, validate_dataset
from wrdsvault.sources import SampleSource

#: A small source: two years, a few securities (the vault only needs to exist and hold files).
SOURCE_PARAMS = {"seed": 0, "years": range(2021, 2023), "n_securities": 12}
SNAPSHOT_ID_PATTERN = r"[0-9]{8}T[0-9]{12}Z-[0-9a-f]{8}"
SHA = "0123456789abcdef" * 4
FAKE_ROOT = Path("/nonexistent/wrdsvault-names/vault")
ALLOWED = (WrdsVaultError, TypeError)


class World:
    """A vault with two commits and a tag, next to a folder outside the vault."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.outside = base / "outside"
        self.outside.mkdir()
        (self.outside / "secret.txt").write_text("not vault data\n")
        self.wh = Warehouse(base / "vault", source=SampleSource(**SOURCE_PARAMS, vintage=1))
        self.first = self.wh.sync("crsp.msf").snapshot_id
        self.second = self.wh.sync("ff.factors_monthly").snapshot_id
        assert self.first is not None and self.second is not None and self.first < self.second
        self.wh.tag("paper", self.first)
        self.snap = self.wh.snapshot("latest")
        self.first_at = self.wh.snapshot(self.first).committed_at
        self.second_at = self.snap.committed_at


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    """The shared vault; built once (syncing is the slow part), never written by the tests."""
    with pytest.MonkeyPatch.context() as mp:
        strip_env(mp)
        w = World(tmp_path_factory.mktemp("names"))
    yield w
    w.snap.close()
    w.wh.close()


@pytest.fixture
def unchanged(world: World) -> Iterator[None]:
    """Assert that the test changed no file or folder under the vault's parent folder."""
    before = entry_digests(world.base)
    yield
    assert entry_digests(world.base) == before


# -- the dataset-name pattern -------------------------------------------------------------------


@settings(max_examples=300)
@given(S.any_dataset_strings())
def test_validate_dataset_accepts_exactly_the_pattern(name: str) -> None:
    """validate_dataset accepts a string if and only if the pattern fullmatches it."""
    if re.fullmatch(S.DATASET_PATTERN, name):
        assert validate_dataset(name) == name
    else:
        with pytest.raises(InvalidNameError) as info:
            validate_dataset(name)
        assert info.value.value == name


@settings(max_examples=50)
@given(S.non_strings())
def test_validate_dataset_refuses_non_strings_with_type_error(value: object) -> None:
    """A non-str dataset name is a TypeError, never a path or a view name."""
    with pytest.raises(TypeError):
        validate_dataset(value)


def test_key_columns_refuse_a_bare_string() -> None:
    """A key given as one string is a TypeError, not one column per character."""
    from wrdsvault import DatasetSpec
    from wrdsvault.validation import KeyNotNull, Rule, SqlRule, UniqueKey

    spec = DatasetSpec(name="crsp.msf", primary_key=["permno", "date"])
    assert spec.primary_key == ("permno", "date")
    assert UniqueKey(iter(["permno"])).columns == ("permno",)
    for make in (
        lambda: DatasetSpec(name="crsp.msf", primary_key="permno"),
        lambda: KeyNotNull("permno"),
        lambda: UniqueKey("permno"),
    ):
        with pytest.raises(TypeError, match="not the string 'permno'"):
            make()
    # The frozen built-in rules satisfy the (read-only ``name``) Rule protocol at run time too.
    assert isinstance(SqlRule("r", "select 1"), Rule)
    assert isinstance(UniqueKey(("permno",)), Rule)


@pytest.mark.parametrize(
    ("name", "ok"),
    [
        ("a.b", True),
        ("a" * 63 + "." + "b" * 63, True),
        ("a" + "_" * 62 + ".z9_", True),
        ("a" * 64 + ".b", False),
        ("a." + "b" * 64, False),
        ("crsp.msf\n", False),
        ("\u0441rsp.msf", False),
        ("crsp\uff0emsf", False),
        ("crsp.m\u017ff", False),
        ("crsp.ms\u212a", False),
    ],
)
def test_dataset_name_limits_and_lookalikes(name: str, ok: bool) -> None:
    """Each part holds 1 to 63 ASCII characters; look-alikes and a trailing newline are refused."""
    if ok:
        assert validate_dataset(name) == name
    else:
        with pytest.raises(InvalidNameError):
            validate_dataset(name)


# -- Layout: the only code that turns names into paths --------------------------------------------


def assert_inside(path: Path, folder: Path) -> None:
    """``path`` lies lexically inside ``folder`` with no '.', '..' or NUL anywhere."""
    text = str(path)
    assert "\x00" not in text
    assert os.path.normpath(text) == text
    assert folder in path.parents


@settings(max_examples=200)
@given(st.one_of(S.hostile_refs(), st.from_regex(SNAPSHOT_ID_PATTERN, fullmatch=True)))
def test_layout_manifest_never_leaves_snapshots(snapshot_id: str) -> None:
    """Layout.manifest returns a file directly in snapshots/ or raises InvalidNameError."""
    layout = Layout(FAKE_ROOT)
    try:
        path = layout.manifest(snapshot_id)
    except InvalidNameError:
        assert not re.fullmatch(SNAPSHOT_ID_PATTERN, snapshot_id)
        return
    assert re.fullmatch(SNAPSHOT_ID_PATTERN, snapshot_id)
    assert_inside(path, FAKE_ROOT)
    assert path.parent == layout.snapshots_dir
    assert path.name == f"{snapshot_id}.json"


@settings(max_examples=200)
@given(st.one_of(S.hostile_tags(), S.valid_tags()))
def test_layout_tag_never_leaves_tags(name: str) -> None:
    """Layout.tag returns a file directly in tags/ or raises InvalidNameError ('latest' too)."""
    layout = Layout(FAKE_ROOT)
    valid = re.fullmatch(S.TAG_PATTERN, name) is not None and name != "latest"
    try:
        path = layout.tag(name)
    except InvalidNameError:
        assert not valid
        return
    assert valid
    assert_inside(path, FAKE_ROOT)
    assert path.parent == layout.tags_dir
    assert path.name == name


@settings(max_examples=200)
@given(
    dataset=st.one_of(S.any_dataset_strings(), S.non_strings()),
    year=st.one_of(st.none(), st.integers(-5, 12_000), st.booleans(), st.floats(), st.text()),
    sha256=st.one_of(st.just(SHA), st.from_regex(r"[0-9a-fA-F]{63,65}", fullmatch=True), st.text()),
)
def test_layout_partition_relpath_stays_under_data(
    dataset: object, year: object, sha256: str
) -> None:
    """partition_relpath returns data/<lib>/<table>/<part>/<hash>.parquet or refuses its input."""
    layout = Layout(FAKE_ROOT)
    try:
        rel = layout.partition_relpath(dataset, year, sha256)  # type: ignore[arg-type]
    except (InvalidNameError, TypeError):
        return
    assert isinstance(dataset, str) and re.fullmatch(S.DATASET_PATTERN, dataset)
    assert re.fullmatch(r"[0-9a-f]{64}", sha256)
    library, table = dataset.split(".")
    part = "all" if year is None else f"{year:04d}"
    assert rel == f"data/{library}/{table}/{part}/{sha256[:16]}.parquet"
    assert_inside(layout.resolve_relpath(rel), layout.data_dir)


@settings(max_examples=300)
@given(S.hostile_relpaths())
def test_layout_resolve_relpath_never_leaves_data(relpath: str) -> None:
    """resolve_relpath maps a manifest path into data/ or raises InvalidNameError."""
    layout = Layout(FAKE_ROOT)
    try:
        path = layout.resolve_relpath(relpath)
    except InvalidNameError:
        return
    assert_inside(path, layout.data_dir)
    assert path == FAKE_ROOT / relpath


@settings(max_examples=30)
@given(S.non_strings())
def test_layout_refuses_non_strings(value: object) -> None:
    """Non-str ids, tags and manifest paths are refused, never joined."""
    layout = Layout(FAKE_ROOT)
    for call in (layout.manifest, layout.tag, layout.resolve_relpath):
        with pytest.raises((InvalidNameError, TypeError)):
            call(value)  # type: ignore[arg-type]


QUARANTINE_ENTRY_PATTERN = r"[0-9]{8}T[0-9]{6}Z-[a-z0-9_.-]{1,80}-[0-9a-f]{4}"


@settings(max_examples=200)
@given(
    st.one_of(
        S.hostile_refs(),
        S.hostile_relpaths(),
        st.from_regex(QUARANTINE_ENTRY_PATTERN, fullmatch=True),
    )
)
def test_layout_quarantine_entry_never_leaves_quarantine(name: str) -> None:
    """Layout.quarantine_entry returns a folder right in quarantine/ or raises InvalidNameError."""
    layout = Layout(FAKE_ROOT)
    valid = re.fullmatch(QUARANTINE_ENTRY_PATTERN, name) is not None and name not in (".", "..")
    try:
        path = layout.quarantine_entry(name)
    except InvalidNameError:
        assert not valid
        return
    assert valid
    assert_inside(path, FAKE_ROOT)
    assert path.parent == layout.quarantine_dir
    assert path.name == name


@settings(max_examples=200)
@given(
    tx_id=st.one_of(st.text(max_size=20), st.from_regex(r"[0-9a-f]{16}", fullmatch=True)),
    dataset=S.any_dataset_strings(),
    year=st.one_of(st.none(), st.integers(-5, 12_000)),
)
def test_layout_staging_and_checkpoints_stay_under_tmp(
    tx_id: str, dataset: str, year: int | None
) -> None:
    """Staging and checkpoint paths lie where documented in tmp/, or the input is refused."""
    layout = Layout(FAKE_ROOT)
    try:
        staged = layout.staged_partition(tx_id, dataset, year)
    except InvalidNameError:
        staged = None
    if staged is not None:
        assert re.fullmatch(r"[0-9a-f]{16}", tx_id)
        assert_inside(staged, layout.tmp_dir)
        assert staged.parent == layout.staging(tx_id) == layout.tmp_dir / f"tx-{tx_id}"
    try:
        data, record = layout.checkpoint(dataset, year)
    except InvalidNameError:
        assert re.fullmatch(S.DATASET_PATTERN, dataset) is None or not (
            year is None or 0 < year < 10_000
        )
        return
    library, table = dataset.split(".")
    assert data.parent == record.parent == layout.resume_dir / library / table
    assert_inside(data, layout.resume_dir)
    assert (data.suffix, record.suffix) == (".parquet", ".json")


@settings(max_examples=200)
@given(
    nonce=st.one_of(
        S.hostile_refs(), st.from_regex(r"[0-9a-f]{8,64}|ino[0-9]{1,12}", fullmatch=True)
    ),
    k=st.integers(-3, 100),
)
def test_layout_lock_claims_stay_beside_the_lock(nonce: str, k: int) -> None:
    """A lock claim is .lock.claim.<nonce>.<k> beside .lock, and its nonce reads back."""
    files = Layout(FAKE_ROOT).lock_files
    try:
        claim = files.claim(nonce, k)
    except InvalidNameError:
        assert k < 0 or not re.fullmatch(r"[0-9a-f]{8,64}|ino[0-9]+", nonce)
        return
    assert claim.parent == FAKE_ROOT
    assert claim.name == f".lock.claim.{nonce}.{k}"
    assert files.claim_nonce(claim.name) == nonce
    assert files.sibling(claim.name) == claim


# -- public entry points on a real vault ----------------------------------------------------------


def test_world_is_as_built(world: World) -> None:
    """The shared vault has two snapshots, a tag and the synced datasets (a sanity check)."""
    assert [s.snapshot_id for s in world.wh.snapshots()] == [world.first, world.second]
    assert world.wh.tags() == {"paper": world.first}
    assert world.snap.datasets == ("crsp.msf", "ff.factors_monthly")


def test_sync_refuses_hostile_names_and_writes_nothing(world: World, unchanged: None) -> None:
    """Warehouse.sync(name) raises InvalidNameError or UnknownDatasetError and writes nothing."""
    before = entry_paths(world.base)

    @settings(max_examples=60)
    @given(st.one_of(S.hostile_dataset_names(), S.valid_dataset_names()))
    def check(name: str) -> None:
        if name in BUILTIN_SPECS:  # a real dataset would (rightly) be synced
            return
        with pytest.raises((InvalidNameError, UnknownDatasetError)) as info:
            world.wh.sync(name)
        if re.fullmatch(S.DATASET_PATTERN, name):
            assert isinstance(info.value, UnknownDatasetError)
        else:
            assert isinstance(info.value, InvalidNameError)
        # A hostile name in a list with a valid one: refused before anything is synced.
        with pytest.raises((InvalidNameError, UnknownDatasetError)):
            world.wh.sync(["ff.factors_monthly", name])
        assert entry_paths(world.base) == before

    check()


@pytest.mark.parametrize(
    "name",
    [
        "crsp.msf; copy (select 1) to 'x.csv'",
        "crsp.m'sf",
        'crsp."msf"',
        "crsp.msf --",
        "it's.a vault",
        "crsp.msf\n",
        "../data.msf",
    ],
)
def test_sync_refuses_sql_shaped_names(world: World, unchanged: None, name: str) -> None:
    """Names built to inject into view DDL are refused before any SQL or path exists."""
    with pytest.raises(InvalidNameError):
        world.wh.sync(name)
    with pytest.raises(InvalidNameError):
        world.wh.sync("abc.def", date_column=name)
    with pytest.raises(InvalidValueError):
        world.wh.sync("ff.factors_monthly", years=[name])  # type: ignore[list-item]


@settings(max_examples=30)
@given(S.non_strings().filter(lambda v: v != b""))  # b"": see test_sync_of_empty_bytes
def test_sync_refuses_non_strings(world: World, value: object) -> None:
    """sync() of a non-str name raises TypeError or InvalidNameError and syncs nothing."""
    before = entry_paths(world.base)
    with pytest.raises(ALLOWED) as info:
        world.wh.sync(value)  # type: ignore[arg-type]
    assert isinstance(info.value, (TypeError, InvalidNameError))
    assert entry_paths(world.base) == before


def test_sync_of_empty_bytes_is_a_type_error(world: World, unchanged: None) -> None:
    """sync(b'') is a non-str name: TypeError like any other bytes value."""
    with pytest.raises(TypeError):
        world.wh.sync(b"")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("datasets", "years"),
    [([], None), (["ff.factors_monthly", "ff.factors_monthly"], None), ("ff.factors_monthly", [])],
    ids=["empty-list", "named-twice", "empty-years"],
)
def test_sync_argument_errors_are_wrdsvault_errors(
    world: World, unchanged: None, datasets: object, years: object
) -> None:
    """Malformed sync() arguments raise InvalidNameError (names) or InvalidValueError (years)."""
    expected = InvalidValueError if years == [] else InvalidNameError
    with pytest.raises(expected):
        world.wh.sync(datasets, years=years)  # type: ignore[arg-type]


def test_snapshot_refuses_hostile_refs_and_writes_nothing(world: World, unchanged: None) -> None:
    """Warehouse.snapshot(ref) raises InvalidNameError/SnapshotNotFoundError or opens a real one."""
    before = entry_paths(world.base)

    @settings(max_examples=80)
    @given(st.one_of(S.hostile_refs(), S.non_strings()))
    def check(ref: object) -> None:
        try:
            snap = world.wh.snapshot(ref)  # type: ignore[arg-type]
        except (InvalidNameError, SnapshotNotFoundError):
            pass
        except TypeError:
            assert not isinstance(ref, str)
        else:
            assert snap.id in (world.first, world.second)
            snap.close()
        assert entry_paths(world.base) == before

    check()


def _refs_that_cannot_resolve(ref: object) -> bool:
    """True for refs no snapshot answers to: not 'latest', not the tag, not a date or datetime."""
    return not (
        isinstance(ref, str) and (ref in ("latest", "paper") or re.match(r"\d{4}-\d{2}-\d{2}", ref))
    )


def test_tag_refuses_hostile_names_and_refs_and_writes_nothing(
    world: World, unchanged: None
) -> None:
    """Warehouse.tag(name, ref) refuses hostile names and refs; no tag file appears."""
    before = entry_paths(world.base)

    @settings(max_examples=60)
    @given(
        name=st.one_of(S.hostile_tags(), S.non_strings()).filter(
            lambda n: not (isinstance(n, str) and re.fullmatch(S.TAG_PATTERN, n)) or n == "latest"
        ),
        ref=st.one_of(S.hostile_refs(), S.non_strings()).filter(_refs_that_cannot_resolve),
    )
    def check(name: object, ref: object) -> None:
        with pytest.raises(InvalidNameError):
            world.wh.tag(name, world.first)  # type: ignore[arg-type]
        with pytest.raises(ALLOWED) as info:
            world.wh.tag("probe", ref)  # type: ignore[arg-type]
        assert isinstance(info.value, (InvalidNameError, SnapshotNotFoundError, TypeError))
        assert entry_paths(world.base) == before

    check()
    assert world.wh.tags() == {"paper": world.first}


def test_snapshot_files_and_dataset_refuse_hostile_names(world: World, unchanged: None) -> None:
    """Snapshot.files/dataset raise InvalidNameError, UnknownDatasetError or TypeError."""

    @settings(max_examples=120)
    @given(st.one_of(S.hostile_dataset_names(), S.valid_dataset_names(), S.non_strings()))
    def check(name: object) -> None:
        for call in (world.snap.files, world.snap.dataset):
            if name in world.snap.datasets:
                call(name)  # type: ignore[arg-type]
                continue
            with pytest.raises(ALLOWED) as info:
                call(name)  # type: ignore[arg-type]
            if not isinstance(name, str):
                assert isinstance(info.value, TypeError)
            elif re.fullmatch(S.DATASET_PATTERN, name):
                assert isinstance(info.value, UnknownDatasetError)
            else:
                assert isinstance(info.value, InvalidNameError)

    check()


def test_snapshot_files_are_inside_the_vault(world: World) -> None:
    """The pinned files of every dataset are regular files under data/ of the real root."""
    for name in world.snap.datasets:
        paths = world.snap.files(name)
        assert paths
        for path in paths:
            assert_inside(path, world.wh.root / "data")
            assert path.is_file() and not path.is_symlink()


# -- refs: as-of dates and datetimes ------------------------------------------------------------


def test_date_before_the_first_commit_lists_what_exists(world: World) -> None:
    """'2000-01-01' matches nothing; the error names the snapshots, the tag and the date range."""
    with pytest.raises(SnapshotNotFoundError) as info:
        world.wh.snapshot("2000-01-01")
    text = str(info.value)
    assert world.first in text and world.second in text
    assert "paper" in text
    assert info.value.newest == [world.second, world.first]
    assert info.value.committed_range == (world.first_at.isoformat(), world.second_at.isoformat())


def test_commit_day_and_later_dates_resolve_to_latest(world: World) -> None:
    """The commit day (UTC), today and later dates resolve to the latest snapshot."""
    day = world.second_at.date()
    today = datetime.now(timezone.utc).date()
    for ref in (day, today, day + timedelta(days=1), date(2200, 1, 1)):
        assert world.wh.snapshot(ref.isoformat()).id == world.second
    before = world.first_at.date() - timedelta(days=1)
    with pytest.raises(SnapshotNotFoundError):
        world.wh.snapshot(before.isoformat())


def test_datetimes_with_z_and_offsets_resolve_as_of(world: World) -> None:
    """'Z' and '+02:00' datetimes are instants: at or before the commit time counts."""
    plus2 = timezone(timedelta(hours=2))
    first, second = world.first_at, world.second_at
    cases = {
        first.strftime("%Y-%m-%dT%H:%M:%S.%fZ"): world.first,
        first.astimezone(plus2).isoformat(timespec="microseconds"): world.first,
        (second - timedelta(microseconds=1)).astimezone(plus2).isoformat(): world.first,
        second.astimezone(plus2).isoformat(timespec="microseconds"): world.second,
        second.strftime("%Y-%m-%dT%H:%M:%S.%f+0000"): world.second,
        (second + timedelta(minutes=1)).strftime("%Y-%m-%dT%H:%MZ"): world.second,
    }
    assert "+02:00" in "".join(cases)
    for ref, expected in cases.items():
        assert world.wh.snapshot(ref).id == expected, ref
    with pytest.raises(SnapshotNotFoundError):
        world.wh.snapshot((first - timedelta(microseconds=1)).strftime("%Y-%m-%dT%H:%M:%S.%fZ"))


@settings(max_examples=60)
@given(st.dates(min_value=date(1900, 1, 1), max_value=date(2200, 12, 31)))
def test_any_valid_date_resolves_as_of(world: World, day: date) -> None:
    """A date resolves to the last snapshot committed before the next midnight UTC, or to none."""
    bound = datetime.combine(day + timedelta(days=1), datetime.min.time(), tzinfo=timezone.utc)
    expected = [
        sid
        for sid, at in ((world.first, world.first_at), (world.second, world.second_at))
        if at < bound
    ]
    if expected:
        assert world.wh.snapshot(day.isoformat()).id == expected[-1]
    else:
        with pytest.raises(SnapshotNotFoundError):
            world.wh.snapshot(day.isoformat())


@settings(max_examples=60)
@given(
    when=st.datetimes(min_value=datetime(1900, 1, 2), max_value=datetime(2200, 12, 30)),
    offset_min=st.integers(-(23 * 60 + 59), 23 * 60 + 59),
)
def test_any_datetime_with_offset_resolves_as_of(
    world: World, when: datetime, offset_min: int
) -> None:
    """A datetime with an offset resolves to the last snapshot committed at or before it."""
    aware = when.replace(tzinfo=timezone(timedelta(minutes=offset_min)))
    expected = [
        sid
        for sid, at in ((world.first, world.first_at), (world.second, world.second_at))
        if at <= aware
    ]
    ref = aware.isoformat()
    if expected:
        assert world.wh.snapshot(ref).id == expected[-1]
    else:
        with pytest.raises(SnapshotNotFoundError):
            world.wh.snapshot(ref)


@pytest.mark.parametrize(
    "ref",
    [
        "2025-02-30",
        "2023-02-29",
        "2025-13-01",
        "2025-00-10",
        "2025-04-31T10:00",
        "2025-01-01T24:00",
        "2025-01-01T10:60",
        "2025-01-01T10:00:61Z",
        "2025-01-01T10:00+24:00",
        "0000-01-01",
    ],
)
def test_impossible_dates_are_invalid_names(world: World, ref: str) -> None:
    """A ref shaped like a date that no calendar has is an InvalidNameError, not 'not found'."""
    with pytest.raises(InvalidNameError) as info:
        world.wh.snapshot(ref)
    assert info.value.kind == "snapshot ref"


def test_leap_day_is_a_valid_date(world: World) -> None:
    """2024-02-29 exists: it is a valid ref that matches no snapshot (all commits are later)."""
    with pytest.raises(SnapshotNotFoundError):
        world.wh.snapshot("2024-02-29")


@pytest.mark.parametrize(
    ("ref", "latest"),
    [
        ("9999-12-31", True),
        ("9999-12-31T23:59:59.999999", True),
        ("9999-12-31T23:59-01:00", True),
        ("0001-01-01T00:00+01:00", False),
    ],
)
def test_as_of_at_the_ends_of_the_calendar(world: World, ref: str, latest: bool) -> None:
    """As-of refs at the calendar's ends resolve (latest) or are not found; nothing else escapes."""
    if latest:
        assert world.wh.snapshot(ref).id == world.second
    else:
        with pytest.raises(SnapshotNotFoundError):
            world.wh.snapshot(ref)


# -- tag names ------------------------------------------------------------------------------------


@pytest.fixture
def scratch(world: World, tmp_path: Path) -> Iterator[Warehouse]:
    """A copy of the shared vault that a test may write tags into."""
    root = tmp_path / "copy"
    copy_vault(world.wh.root, root)
    wh = Warehouse(root)
    yield wh
    wh.close()


@pytest.mark.parametrize(
    "name", ["latest", "../x", "x/../../y", "/abs", "a\\b", "1st", "-x", "", "x" * 65, "p\u0430per"]
)
def test_reserved_and_hostile_tag_names_are_refused(scratch: Warehouse, name: str) -> None:
    """'latest', traversal, separators, a leading digit and look-alikes are not tag names."""
    before = entry_digests(scratch.root)
    with pytest.raises(InvalidNameError) as info:
        scratch.tag(name)
    assert info.value.kind == "tag"
    assert entry_digests(scratch.root) == before


def test_moving_a_tag_needs_force(scratch: Warehouse, world: World) -> None:
    """A tag naming another snapshot is moved only with force=True; re-tagging is idempotent."""
    tag_file = scratch.root / "tags" / "paper"
    raw = tag_file.read_bytes()
    with pytest.raises(wrdsvault.TagExistsError, match="force=True") as info:
        scratch.tag("paper", world.second)
    assert (info.value.tag, info.value.current) == ("paper", world.first)
    assert info.value.requested == world.second
    assert tag_file.read_bytes() == raw
    assert scratch.tag("paper", world.first) == world.first
    assert scratch.tag("paper", world.second, force=True) == world.second
    assert scratch.tags()["paper"] == world.second
    assert scratch.snapshot("paper").id == world.second


def test_new_tag_pins_a_snapshot(scratch: Warehouse, world: World) -> None:
    """A valid tag names its snapshot; the tag file lies directly in tags/."""
    assert scratch.tag("v1.0_final-2", "paper") == world.first
    assert (scratch.root / "tags" / "v1.0_final-2").is_file()
    assert scratch.snapshot("v1.0_final-2").id == world.first


def test_public_names_are_the_documented_errors() -> None:
    """The errors these tests expect are the public ones (one tree, one base)."""
    for cls in (InvalidNameError, SnapshotNotFoundError, UnknownDatasetError):
        assert issubclass(cls, wrdsvault.WrdsVaultError)
