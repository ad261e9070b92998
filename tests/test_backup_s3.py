"""Backups in object storage (``wh.backup("s3://...")``), repair and restore from there.

Against a real S3-compatible server the tests start: moto's ``ThreadedMotoServer`` on 127.0.0.1
and a free port, reached through s3fs with ``endpoint_url`` (the ``s3`` extra; moto[server] is in
the ``test`` extra). Each test backs up into its own prefix of one bucket.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from wrdsvault import BackupError, MissingExtraError, Warehouse, WrdsVaultError
from wrdsvault._storage.crashpoints import ENV_VAR, BackupPoint
from wrdsvault.cli import main
from wrdsvault.sources import SampleSource

moto_server = pytest.importorskip("moto.server")
fsspec = pytest.importorskip("fsspec")
pytest.importorskip("s3fs")

BUCKET = "wrdsvault-backups"
CHILD = Path(__file__).parent / "crash" / "_backup_child.py"


@pytest.fixture(scope="module")
def s3_options() -> Iterator[dict[str, Any]]:
    """A local S3 server with one bucket; the s3fs options that reach it."""
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    options: dict[str, Any] = {
        "key": "testing",
        "secret": "testing",
        "client_kwargs": {"endpoint_url": f"http://{host}:{port}", "region_name": "us-east-1"},
        "skip_instance_cache": True,
    }
    boto3 = pytest.importorskip("boto3")  # moto's own dependency
    boto3.client(
        "s3",
        endpoint_url=f"http://{host}:{port}",
        aws_access_key_id=options["key"],
        aws_secret_access_key=options["secret"],
        region_name="us-east-1",
    ).create_bucket(Bucket=BUCKET)
    yield options
    server.stop()


@pytest.fixture
def url() -> str:
    """A fresh prefix in the bucket."""
    return f"s3://{BUCKET}/{uuid.uuid4().hex[:12]}/wrds"


def _fs(options: dict[str, Any]) -> Any:
    return fsspec.filesystem("s3", **options)


def _objects(options: dict[str, Any], url: str) -> dict[str, bytes]:
    fs = _fs(options)
    root = url.removeprefix("s3://")
    return {p[len(root) + 1 :]: fs.cat_file(p) for p in fs.find(root)}


def _data_files(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted((root / "data").rglob("*.parquet"))
    }


@pytest.fixture
def tagged(vault: Warehouse) -> Warehouse:
    """A vault with crsp.msf and ff.factors_monthly, tagged ``paper``."""
    vault.sync(["crsp.msf", "ff.factors_monthly"])
    vault.tag("paper")
    return vault


def test_backup_to_s3_has_the_vault_layout_and_the_next_one_copies_only_the_changed_year(
    tagged: Warehouse,
    make_source: Callable[..., SampleSource],
    s3_options: dict[str, Any],
    url: str,
) -> None:
    """A backup to S3 holds every data file, manifest, tag and HEAD of the vault under the
    prefix; after a one-year change the next backup uploads that year's file and the new
    manifest, nothing else."""
    rep = tagged.backup(url, storage_options=s3_options)
    first = _objects(s3_options, url)
    data = _data_files(tagged.root)
    assert {k: v for k, v in first.items() if k.startswith("data/")} == data
    sid = tagged.snapshot().id
    assert first["HEAD"] == sid.encode() + b"\n"
    assert (
        first[f"snapshots/{sid}.json"] == (tagged.root / "snapshots" / f"{sid}.json").read_bytes()
    )
    assert first["tags/paper"] == sid.encode() + b"\n"
    assert "vault.json" in first
    assert (rep.copied_files, rep.skipped_files, rep.head) == (len(data), 0, sid)

    years = {int(p.split("/")[-2]) for p in data if p.startswith("data/crsp/msf/")}
    year = max(years) - 2  # the year vintage 2 restates (SampleSource)
    tagged.source = make_source(2)
    tagged.sync("crsp.msf", years=[year], full=True)
    changed = set(_data_files(tagged.root)) - set(data)
    assert len(changed) == 1 and f"/{year}/" in next(iter(changed))
    again = tagged.backup(url, storage_options=s3_options)
    (path,) = changed
    assert (again.copied_files, again.copied_bytes) == (1, len(_data_files(tagged.root)[path]))
    assert again.skipped_files == len(data) and len(again.new_snapshots) == 1
    second = _objects(s3_options, url)
    assert set(second) - set(first) == {path, f"snapshots/{again.head}.json"}
    assert second["HEAD"] == tagged.snapshot().id.encode() + b"\n"


def test_restore_from_s3_gives_the_same_snapshots(
    tagged: Warehouse, s3_options: dict[str, Any], url: str, tmp_path: Path
) -> None:
    """Warehouse.restore from S3 into a new folder: a vault whose tagged snapshot equals the
    original (manifest bytes, files, query result) and that verifies clean."""
    tagged.backup(url, storage_options=s3_options)
    rep = Warehouse.restore(url, tmp_path / "new-disk" / "wrds", storage_options=s3_options)
    assert rep.head == tagged.snapshot().id
    with Warehouse(tmp_path / "new-disk" / "wrds", create=False) as back:
        mine, theirs = back.snapshot("paper"), tagged.snapshot("paper")
        assert mine.id == theirs.id and mine.manifest == theirs.manifest
        q = "select count(*), sum(ret) from crsp.msf"
        assert mine.query(q).equals(theirs.query(q))
        assert back.verify(all_snapshots=True).ok
        assert back.tags() == tagged.tags()
        assert back.settings == tagged.settings
    with pytest.raises(BackupError, match="new or empty folder"):
        Warehouse.restore(url, tmp_path / "new-disk" / "wrds", storage_options=s3_options)


def test_repair_from_s3_restores_damaged_and_missing_files(
    tagged: Warehouse, s3_options: dict[str, Any], url: str
) -> None:
    """Files damaged or removed in the vault are put back from the S3 backup by their hash."""
    tagged.backup(url, storage_options=s3_options)
    originals = _data_files(tagged.root)
    damaged, removed = sorted(originals)[:2]
    target = tagged.root / damaged
    os.chmod(target, 0o644)
    target.write_bytes(b"\0" * len(originals[damaged]))
    (tagged.root / removed).unlink()
    assert not tagged.verify(all_snapshots=True).ok
    report = tagged.repair(url, storage_options=s3_options)
    assert report.ok and sorted(report.restored) == [damaged, removed]
    assert _data_files(tagged.root) == originals
    assert tagged.verify(all_snapshots=True).ok


def test_verify_rehashes_remote_objects_and_uploads_a_damaged_one_again(
    tagged: Warehouse, s3_options: dict[str, Any], url: str
) -> None:
    """--verify reads every object back: one altered in the store (same size) is found and
    uploaded again; without verify it goes unnoticed (same name and size)."""
    tagged.backup(url, storage_options=s3_options)
    rel, content = sorted(_data_files(tagged.root).items())[0]
    fs = _fs(s3_options)
    fs.pipe_file(f"{url.removeprefix('s3://')}/{rel}", b"x" * len(content))
    assert tagged.backup(url, storage_options=s3_options).copied_files == 0
    rep = tagged.backup(url, storage_options=s3_options, verify=True)
    assert (rep.copied_files, rep.replaced_files) == (1, 1)
    assert rep.verified_files == len(_data_files(tagged.root))
    assert _objects(s3_options, url)[rel] == content


def test_a_prefix_with_another_vaults_snapshots_is_refused(
    tagged: Warehouse,
    make_source: Callable[..., SampleSource],
    s3_options: dict[str, Any],
    url: str,
    tmp_path: Path,
) -> None:
    """Backing a second vault up into a prefix that holds the first one's backup is refused
    before anything is written."""
    tagged.backup(url, storage_options=s3_options)
    before = _objects(s3_options, url)
    with Warehouse(tmp_path / "other", source=make_source(1)) as other:
        other.sync("ff.factors_monthly")
        with pytest.raises(BackupError, match=r"not a backup of this vault|not a snapshot"):
            other.backup(url, storage_options=s3_options)
    assert _objects(s3_options, url) == before


@pytest.mark.crash
@pytest.mark.parametrize(
    "point",
    # Mid-data (one object uploaded), and the last step before the commit point (every data
    # object, manifest and tag uploaded; HEAD not yet).
    [BackupPoint.FILE_COPIED, BackupPoint.HEAD_TEMP_WRITTEN],
    ids=lambda p: p.value,
)
def test_an_s3_backup_killed_before_head_leaves_the_previous_backup(
    tagged: Warehouse,
    make_source: Callable[..., SampleSource],
    s3_options: dict[str, Any],
    url: str,
    tmp_path: Path,
    point: BackupPoint,
) -> None:
    """A backup process SIGKILLed between its data objects and HEAD leaves the previous remote
    HEAD current: a restore gives the previous snapshot, and the next backup completes."""
    tagged.backup(url, storage_options=s3_options)
    old = tagged.snapshot().id
    tagged.source = make_source(2)
    tagged.sync("crsp.msf")
    new = tagged.snapshot().id
    options = json.dumps(s3_options)
    proc = subprocess.run(
        [sys.executable, str(CHILD), str(tagged.root), url, "--storage-options", options],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, ENV_VAR: point.value},
        check=False,
    )
    assert proc.returncode == -9, proc.stderr
    assert _objects(s3_options, url)["HEAD"] == old.encode() + b"\n"
    Warehouse.restore(url, tmp_path / "r1", storage_options=s3_options)
    with Warehouse(tmp_path / "r1", create=False) as back:
        assert [s.snapshot_id for s in back.snapshots()] == [old]
        assert back.verify(all_snapshots=True).ok

    rep = tagged.backup(url, storage_options=s3_options)
    assert rep.head == new and rep.new_snapshots in ((new,), ())
    after = _objects(s3_options, url)
    assert after["HEAD"] == new.encode() + b"\n"
    assert {k: v for k, v in after.items() if k.startswith("data/")} == _data_files(tagged.root)
    assert (
        after[f"snapshots/{new}.json"] == (tagged.root / "snapshots" / f"{new}.json").read_bytes()
    )


def test_cli_backup_restore_and_repair_with_s3(
    tagged: Warehouse,
    s3_options: dict[str, Any],
    url: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """`wrdsvault backup s3://...`, `restore s3://... PATH` and `repair --from s3://...` take
    the store's options as --storage-options JSON."""
    opts = ["--storage-options", json.dumps(s3_options)]
    vault = ["--vault", str(tagged.root)]
    assert main(["backup", url, "--verify", "-q", "--json", *vault, *opts]) == 0
    assert json.loads(capsys.readouterr().out)["head"] == tagged.snapshot().id
    assert main(["restore", url, str(tmp_path / "r"), "--json", *opts]) == 0
    assert json.loads(capsys.readouterr().out)["head"] == tagged.snapshot().id
    victim = sorted(_data_files(tagged.root))[0]
    (tagged.root / victim).unlink()
    assert main(["repair", "--from", url, "--json", *vault, *opts]) == 0
    assert json.loads(capsys.readouterr().out)["restored"] == [victim]


def test_an_s3_url_without_the_extra_names_it(
    tagged: Warehouse, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without fsspec installed, an s3:// backup fails at once with MissingExtraError (an
    ImportError) that names `pip install 'wrdsvault[s3]'`."""
    monkeypatch.setitem(sys.modules, "fsspec", None)
    with pytest.raises(MissingExtraError, match=r"pip install 'wrdsvault\[s3\]'") as info:
        tagged.backup("s3://bucket/prefix")
    assert isinstance(info.value, ImportError) and isinstance(info.value, WrdsVaultError)
    assert info.value.extra == "s3"


def test_an_unreachable_store_is_a_backup_error(tagged: Warehouse) -> None:
    """A store that refuses the connection fails with BackupError, not a botocore error."""
    options = {
        "key": "k",
        "secret": "s",
        "client_kwargs": {"endpoint_url": "http://127.0.0.1:9", "region_name": "us-east-1"},
        "config_kwargs": {"retries": {"max_attempts": 1}, "connect_timeout": 2},
        "skip_instance_cache": True,
    }
    with pytest.raises(BackupError, match="previous backup stays current"):
        tagged.backup("s3://bucket/prefix", storage_options=options)
