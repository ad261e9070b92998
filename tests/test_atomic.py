"""The durable-write primitives of atomic.py, on real files (the one home of rename and link)."""

from __future__ import annotations

import ast
import errno
import os
import stat
from pathlib import Path

import pytest

from _helpers.disk import temp_files
from wrdsvault._storage.atomic import (
    atomic_write_bytes,
    copy_to_temp,
    link_if_absent,
    publish,
    publish_all,
    publish_link,
    put_if_absent,
    sha256_file,
    stage_copy,
    write_temp,
)

SRC = Path(__file__).resolve().parents[1] / "src" / "wrdsvault"


def test_put_if_absent_creates_once_and_never_overwrites(tmp_path: Path) -> None:
    """put_if_absent creates the file with its mode once; a second call keeps the first content."""
    path = tmp_path / "vault.json"
    assert put_if_absent(path, b"first", mode=0o640) is True
    assert put_if_absent(path, b"second", mode=0o600) is False
    assert path.read_bytes() == b"first"
    assert stat.S_IMODE(path.stat().st_mode) == 0o640
    assert temp_files(tmp_path) == []


def test_put_if_absent_refuses_where_there_are_no_hard_links(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without hard links put_if_absent raises rather than risk a reader seeing a torn file."""

    def no_links(*_args: object, **_kwargs: object) -> None:
        raise OSError(errno.EPERM, "Operation not permitted")

    monkeypatch.setattr(os, "link", no_links)
    with pytest.raises(OSError, match="not permitted"):
        put_if_absent(tmp_path / "vault.json", b"{}", mode=0o644)
    assert list(tmp_path.iterdir()) == []


def test_link_if_absent_falls_back_to_exclusive_create_only_when_asked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Where link(2) is refused, link_if_absent creates dst with O_EXCL if given a fallback mode."""
    temp = write_temp(tmp_path / ".lock", b'{"token": "ab"}', mode=0o600)

    def no_links(*_args: object, **_kwargs: object) -> None:
        raise OSError(errno.EOPNOTSUPP, "Operation not supported")

    monkeypatch.setattr(os, "link", no_links)
    with pytest.raises(OSError, match="not supported"):
        link_if_absent(temp, tmp_path / ".lock")
    ino = link_if_absent(temp, tmp_path / ".lock", fallback_mode=0o644)
    assert ino == (tmp_path / ".lock").stat().st_ino != temp.ino
    assert (tmp_path / ".lock").read_bytes() == b'{"token": "ab"}'
    assert stat.S_IMODE((tmp_path / ".lock").stat().st_mode) == 0o644
    assert link_if_absent(temp, tmp_path / ".lock", fallback_mode=0o644) is None


def test_link_if_absent_reports_our_inode_or_none(tmp_path: Path) -> None:
    """link_if_absent returns the temp's inode when it made dst, None when dst is another's."""
    temp = write_temp(tmp_path / "a", b"ours", mode=0o600)
    assert link_if_absent(temp, tmp_path / "a") == temp.ino
    # Our own link again (what an NFS retransmission looks like): still ours.
    assert link_if_absent(temp, tmp_path / "a") == temp.ino
    other = write_temp(tmp_path / "a", b"theirs", mode=0o600)
    assert link_if_absent(other, tmp_path / "a") is None
    assert (tmp_path / "a").read_bytes() == b"ours"
    temp.path.unlink()
    with pytest.raises(FileNotFoundError):
        link_if_absent(temp, tmp_path / "b")


def test_publish_with_inode_accepts_a_rename_that_already_happened(tmp_path: Path) -> None:
    """publish(src_ino=...) counts a vanished src as done only if dst now is that inode."""
    src = write_temp(tmp_path / "x", b"new", mode=0o600)
    os.rename(src.path, tmp_path / "x")  # noqa: TID251 - the first RENAME of a retransmitted pair
    assert publish(src.path, tmp_path / "x", src_ino=src.ino) is True
    assert publish(src.path, tmp_path / "y", src_ino=src.ino) is False
    with pytest.raises(FileNotFoundError):
        publish(src.path, tmp_path / "x")


def test_publish_link_replaces_dst_and_keeps_src(tmp_path: Path) -> None:
    """publish_link gives an fsynced file a second name, replacing an old dst, leaving no temp."""
    (tmp_path / "dst").write_bytes(b"old")
    src = tmp_path / "src"
    src.write_bytes(b"new")
    publish_link(src, tmp_path / "dst")
    assert (tmp_path / "dst").read_bytes() == b"new"
    assert (tmp_path / "dst").stat().st_ino == src.stat().st_ino
    assert temp_files(tmp_path) == []


def test_atomic_write_bytes_sets_the_mtime_it_is_given(tmp_path: Path) -> None:
    """atomic_write_bytes(mtime=...) leaves a file whose mtime is exactly that (the lock epoch)."""
    path = tmp_path / ".lock.epoch"
    atomic_write_bytes(path, b"", mode=0o644, mtime=946_684_800 + 17)
    assert path.stat().st_mtime == 946_684_800 + 17
    assert temp_files(tmp_path) == []


def test_only_atomic_renames_or_links() -> None:
    """No module but atomic.py calls rename, replace or link (ruff bans them; this says where)."""
    banned = {"rename", "replace", "link", "renames", "symlink"}
    offenders = []
    for path in sorted(SRC.rglob("*.py")):
        if path.name == "atomic.py":
            continue
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if (
                isinstance(node, ast.Attribute)
                and node.attr in banned
                and isinstance(node.value, ast.Name)
                and node.value.id in ("os", "shutil")
            ) or (isinstance(node, ast.Attribute) and node.attr in ("hardlink_to", "rename")):
                offenders.append(f"{path.relative_to(SRC)}:{node.lineno} {node.attr}")
    assert offenders == []


@pytest.mark.parametrize("kernel_copy", [True, False])
def test_copy_to_temp_hashes_the_fsynced_copy(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kernel_copy: bool
) -> None:
    """copy_to_temp leaves a complete copy under a temp name beside dst (dst untouched) and
    returns the copy's own hash and size, with copy_file_range or without it."""
    if not kernel_copy:
        monkeypatch.delattr(os, "copy_file_range", raising=False)
    src = tmp_path / "src.bin"
    src.write_bytes(os.urandom(3 * (1 << 20) + 17))
    dst = tmp_path / "dst.bin"
    dst.write_bytes(b"damaged")
    tmp, digest, size = copy_to_temp(src, dst, mode=0o640)
    assert tmp.parent == dst.parent and tmp != dst
    assert tmp.read_bytes() == src.read_bytes()
    assert (digest, size) == sha256_file(src)
    assert dst.read_bytes() == b"damaged"
    assert tmp.stat().st_mode & 0o777 == 0o640


def test_publish_all_moves_every_file_into_new_folders(tmp_path: Path) -> None:
    """publish_all renames each staged file to its final name, creating the missing folders
    with the given mode, and leaves nothing under the staged names."""
    staging = tmp_path / "tmp"
    staging.mkdir()
    moves = []
    for i, year in enumerate(("2001", "2002", "2002")):
        staged = staging / f".f{i}.tmp"
        staged.write_bytes(f"file {i}".encode())
        moves.append((staged, tmp_path / "data" / "crsp" / "msf" / year / f"f{i}.parquet"))
    publish_all(moves, dir_mode=0o750)
    for i, (_, final) in enumerate(moves):
        assert final.read_bytes() == f"file {i}".encode()
    assert list(staging.iterdir()) == []
    for folder in (tmp_path / "data", tmp_path / "data" / "crsp" / "msf" / "2002"):
        assert folder.stat().st_mode & 0o777 == 0o750


def test_stage_copy_hashes_the_copy_and_leaves_it_open_for_the_fsync(tmp_path: Path) -> None:
    """stage_copy returns the copy's own hash and size under a temp name beside dst; fsync()
    closes it, discard() removes it."""
    src = tmp_path / "src.bin"
    src.write_bytes(os.urandom((1 << 20) + 5))
    staged = stage_copy(src, tmp_path / "dst.bin", mode=0o600)
    assert (staged.sha256, staged.size) == sha256_file(src)
    assert staged.path.read_bytes() == src.read_bytes()
    staged.fsync()
    with pytest.raises(OSError):
        os.fstat(staged.fd)
    again = stage_copy(src, tmp_path / "dst.bin", mode=0o600)
    again.discard()
    assert not again.path.exists() and staged.path.exists()
