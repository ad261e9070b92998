"""The catalog: a HEAD moved back never costs a committed snapshot; only a dead writer's
leftover manifest is garbage, for recovery and ``doctor --repair`` alike."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

from _helpers.disk import committed_digests
from _helpers.records import crashed_child
from wrdsvault import VaultFormatError, Warehouse
from wrdsvault.cli import main
from wrdsvault.sources import SampleSource

Source = Callable[..., SampleSource]


def build(root: Path, make_source: Source, commits: int) -> list[str]:
    """A vault with ``commits`` snapshots (each changes data); return their ids, oldest first."""
    plan = [("crsp.msf", 1), ("crsp.msf", 2), ("ff.factors_monthly", 1)][:commits]
    ids = []
    for dataset, vintage in plan:
        with Warehouse(root, source=make_source(vintage)) as wh:
            report = wh.sync(dataset)
            assert report.committed and report.snapshot_id is not None
            ids.append(report.snapshot_id)
    return ids


def set_head(root: Path, snapshot_id: str | None) -> None:
    """Put ``snapshot_id`` into HEAD by hand (None: remove HEAD)."""
    if snapshot_id is None:
        (root / "HEAD").unlink()
    else:
        (root / "HEAD").write_text(snapshot_id + "\n")


def assert_refused_and_kept(root: Path, make_source: Source, newest: str) -> None:
    """Sync, tag and doctor --repair change no committed file; doctor names ``newest``."""
    before = committed_digests(root)
    with Warehouse(root, source=make_source(2)) as wh:
        with pytest.raises(VaultFormatError, match=f"Write {newest} into HEAD"):
            wh.sync("ff.factors_monthly")
        if (root / "HEAD").exists():  # without HEAD no ref resolves: tag() refuses earlier
            with pytest.raises(VaultFormatError, match=newest):
                wh.tag("other", "latest")
        report = wh.doctor()
        (finding,) = [f for f in report.findings if f.kind == "head-behind"]
        assert newest in finding.advice and not finding.garbage
        assert not {"orphan-file", "uncommitted-manifest"} & {f.kind for f in report.findings}
        repaired = wh.doctor(repair=True)
        assert not repaired.ok and repaired.repaired == ()
    assert committed_digests(root) == before


def assert_restored(root: Path, make_source: Source, newest: str, snapshots: list[str]) -> None:
    """With ``newest`` back in HEAD every snapshot opens and verifies, and writes work again."""
    set_head(root, newest)
    with Warehouse(root, source=make_source(2)) as wh:
        assert [s.snapshot_id for s in wh.snapshots()] == snapshots
        assert wh.verify(all_snapshots=True).ok
        assert wh.doctor().ok
        assert wh.sync("ff.factors_monthly", full=True).snapshot_id is not None


def test_head_moved_back_keeps_a_tagged_snapshot(tmp_path: Path, make_source: Source) -> None:
    """HEAD moved back below a tagged snapshot: sync, tag and repair refuse and delete nothing."""
    root = tmp_path / "vault"
    s1, s2 = build(root, make_source, 2)
    with Warehouse(root) as wh:
        wh.tag("paper", s2)
    set_head(root, s1)
    with Warehouse(root) as wh:
        assert [s.snapshot_id for s in wh.snapshots()] == [s1], "readers still follow HEAD"
    assert_refused_and_kept(root, make_source, s2)
    assert_restored(root, make_source, s2, [s1, s2])
    with Warehouse(root) as wh, wh.snapshot("paper", verify=True) as snap:
        assert snap.id == s2


def test_head_moved_back_cli_doctor_repair(
    tmp_path: Path, make_source: Source, capsys: pytest.CaptureFixture[str]
) -> None:
    """`wrdsvault doctor --repair` on a HEAD moved back: reports head-behind, exits 1, keeps all."""
    root = tmp_path / "vault"
    s1, s2 = build(root, make_source, 2)
    assert main(["tag", "paper", s2, "--vault", str(root)]) == 0
    set_head(root, s1)
    before = committed_digests(root)
    capsys.readouterr()
    assert main(["doctor", "--repair", "--vault", str(root)]) == 1
    out = capsys.readouterr().out
    assert "head-behind" in out and f"write {s2} into HEAD" in out
    assert "orphan-file" not in out
    assert (
        main(["sync", "ff.factors_monthly", "--source", "sample", "-q", "--vault", str(root)]) == 1
    )
    err = capsys.readouterr().err
    assert f"Write {s2} into HEAD" in err
    assert committed_digests(root) == before
    set_head(root, s2)
    assert main(["verify", "--all", "--vault", str(root)]) == 0
    assert main(["query", "select 1 as one", "--snapshot", "paper", "--vault", str(root)]) == 0


@pytest.mark.parametrize(
    "variant", ["chain", "siblings", "head-missing", "head-missing-tagged-first"]
)
def test_parent_chain_proves_head_moved_back(
    tmp_path: Path, make_source: Source, variant: str
) -> None:
    """Manifests newer than HEAD that parents, siblings or tags prove committed are all kept."""
    root = tmp_path / "vault"
    if variant == "chain":  # s1 <- s2 <- s3, HEAD back at s1: s2 is a parent, s3 the tip
        s1, s2, s3 = build(root, make_source, 3)
        set_head(root, s1)
        newest, snapshots = s3, [s1, s2, s3]
    elif variant == "siblings":  # two manifests on top of HEAD: a writer never leaves two
        s1, s2 = build(root, make_source, 2)
        twin = crashed_child(root, s1, s2[:-8] + "ffffffff")
        (root / "snapshots" / f"{twin.snapshot_id}.json").write_bytes(twin.to_json())
        set_head(root, s1)
        newest, snapshots = twin.snapshot_id, [s1, s2, twin.snapshot_id]
    elif variant == "head-missing":  # HEAD lost: the second manifest names the first
        s1, s2 = build(root, make_source, 2)
        set_head(root, None)
        newest, snapshots = s2, [s1, s2]
    else:  # HEAD lost after the first commit, which a tag names
        (s1,) = build(root, make_source, 1)
        with Warehouse(root) as wh:
            wh.tag("paper", s1)
        set_head(root, None)
        newest, snapshots = s1, [s1]
    assert_refused_and_kept(root, make_source, newest)
    assert_restored(root, make_source, newest, snapshots)


def test_dead_writers_manifest_is_still_garbage(tmp_path: Path, make_source: Source) -> None:
    """The one manifest on top of HEAD that nothing names is removed, with its data files."""
    root = tmp_path / "vault"
    s1, s2 = build(root, make_source, 2)
    set_head(root, s1)  # exactly what a writer killed between manifest and HEAD leaves
    with Warehouse(root) as wh:
        only_s2 = {p.path for p in wh._manifest(s2).files()} - {
            p.path for p in wh._manifest(s1).files()
        }
    assert only_s2
    with Warehouse(root) as wh:
        report = wh.doctor()
        kinds = {f.kind for f in report.findings}
        assert kinds == {"uncommitted-manifest", "orphan-file"}, report.summary()
        repaired = wh.doctor(repair=True)
        assert set(repaired.repaired) == {f"snapshots/{s2}.json", *only_s2}
        assert wh.doctor().findings == ()
        assert [s.snapshot_id for s in wh.snapshots()] == [s1]
        assert wh.verify(all_snapshots=True).ok
    assert not (root / "snapshots" / f"{s2}.json").exists()


def test_unreadable_manifest_newer_than_head_keeps_everything(
    tmp_path: Path, make_source: Source
) -> None:
    """A manifest newer than HEAD that cannot be read: no orphans, nothing removed, no writes."""
    root = tmp_path / "vault"
    s1, s2 = build(root, make_source, 2)
    manifest = root / "snapshots" / f"{s2}.json"
    manifest.write_bytes(manifest.read_bytes()[:200])
    set_head(root, s1)
    before = committed_digests(root)
    with Warehouse(root, source=make_source(2)) as wh:
        report = wh.doctor()
        kinds = {f.kind for f in report.findings}
        assert kinds == {"damaged-manifest"}, report.summary()
        assert wh.doctor(repair=True).repaired == ()
        with pytest.raises(VaultFormatError, match=f"{s2}.json"):
            wh.sync("crsp.msf")
    assert committed_digests(root) == before


def test_nothing_is_judged_while_heads_manifest_is_missing(
    tmp_path: Path, make_source: Source
) -> None:
    """HEAD names a lost manifest: the manifest on top of it is kept, and so are all files."""
    root = tmp_path / "vault"
    _, s2 = build(root, make_source, 2)
    s3 = crashed_child(root, s2, s2[:-8] + "ffffffff")
    s3_path = root / "snapshots" / f"{s3.snapshot_id}.json"
    s3_path.write_bytes(s3.to_json())
    (root / "snapshots" / f"{s2}.json").unlink()
    before = committed_digests(root)
    with Warehouse(root, source=make_source(2)) as wh:
        report = wh.doctor(repair=True)
        assert {f.kind for f in report.findings} == {"damaged-head"}, report.summary()
        with pytest.raises(VaultFormatError, match="manifest is missing"):
            wh.sync("ff.factors_monthly")
    assert committed_digests(root) == before


def _resolved(wh: Warehouse, ref: str, *, quick: bool) -> tuple[str, str]:
    """("ok", id) or (error class, message) of resolving ``ref`` the quick way or by listing."""
    from wrdsvault.refs import resolve_ref

    try:
        if quick:
            return "ok", wh._resolve(ref)
        catalog = wh._catalog
        sid = resolve_ref(
            ref, tags=catalog.tags(), snapshots=catalog.committed(), expired=catalog.expired()
        )
        return "ok", sid
    except Exception as exc:  # the comparison is the assertion
        return type(exc).__name__, str(exc)


def test_quick_resolution_agrees_with_the_full_listing(
    tmp_path: Path, make_source: Source, monkeypatch: pytest.MonkeyPatch
) -> None:
    """ "latest" and exact ids resolve without listing snapshots/ or tags/, to the same snapshot
    or error as the committed listing: after gc expired one, with HEAD moved back, with a
    manifest missing, and with HEAD's manifest missing."""
    root = tmp_path / "vault"
    ids = build(root, make_source, 3)
    with Warehouse(root, create=False) as wh:
        wh.gc(keep_last=2)
    refs = ["latest", *ids, "20991231T000000000000Z-00000000"]

    def agree(expected: dict[str, str]) -> None:
        with Warehouse(root, create=False) as wh:
            for ref in refs:
                quick = _resolved(wh, ref, quick=True)
                assert quick == _resolved(wh, ref, quick=False), ref
                assert quick[0] == expected.get(ref, "SnapshotNotFoundError"), (ref, quick)

    agree({"latest": "ok", ids[1]: "ok", ids[2]: "ok"})  # ids[0] expired
    listed: list[str] = []
    real_listdir = os.listdir

    def listdir(path: str | os.PathLike[str] = ".") -> list[str]:
        listed.append(os.fspath(path))
        return real_listdir(path)

    with Warehouse(root, create=False) as wh:
        monkeypatch.setattr(os, "listdir", listdir)
        assert [wh._resolve(ref) for ref in ("latest", ids[1])] == [ids[2], ids[1]]
        monkeypatch.undo()
    assert listed == []  # O(1) in the number of snapshots: no listing of snapshots/ or tags/
    set_head(root, ids[1])
    agree({"latest": "ok", ids[1]: "ok"})
    set_head(root, ids[2])
    (root / "snapshots" / f"{ids[1]}.json").rename(tmp_path / "kept.json")
    agree({"latest": "ok", ids[2]: "ok"})
    (tmp_path / "kept.json").rename(root / "snapshots" / f"{ids[1]}.json")
    (root / "snapshots" / f"{ids[2]}.json").rename(tmp_path / "kept.json")
    agree({ref: "VaultFormatError" for ref in refs})
