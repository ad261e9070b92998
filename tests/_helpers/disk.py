"""What is on disk: views of a folder tree, and of a vault's files, as plain data to compare.

One function per meaning, named for what it returns:

* `entry_digests`: every entry with its content (sha256 of a file, ``<dir>``, ``-> target`` of
  a symlink), to prove that nothing at all changed (`digest_diff` says what did);
  `committed_digests` is its part that commits make (HEAD, manifests, tags, data);
* `entry_paths`: the relative paths of every file and folder (cheap: nothing is read);
* `file_paths`: the relative paths of the files (optionally matching a glob);
* `entry_stats`: every entry with its mtime, size and mode (what any write would change).

Each can leave out the writer lock's own support files at the vault's root (``.lock``,
``.lock.epoch``, ``..lock.*`` claims and temp files): a lock that a reader or a failed writer
takes and gives back leaves them behind by design.

The vault's layout is written out here (``HEAD``, ``snapshots/<id>.json``, ``tmp/``, ``data/``),
not imported from wrdsvault: the tests check the code against docs/format.md, not against itself.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from pathlib import Path
from typing import Any


def is_lock_support(name: str) -> bool:
    """The writer lock's own files at the root (``.lock``, ``.lock.epoch``, ``..lock.*`` ...)."""
    return name.startswith((".lock", "..lock"))


def _walk(root: Path, *, skip_lock: bool) -> list[tuple[Path, bool]]:
    """(path, is a folder) of every entry under ``root``, sorted, symlinks not followed."""
    out: list[tuple[Path, bool]] = []
    for folder, dirs, files in os.walk(root):
        here = Path(folder)
        if skip_lock and here == root:
            dirs[:] = [d for d in dirs if not is_lock_support(d)]
            files = [f for f in files if not is_lock_support(f)]
        dirs.sort()
        out += [(here / d, True) for d in dirs]
        out += [(here / f, False) for f in sorted(files)]
    return sorted(out)


def entry_digests(root: Path, *, skip_lock: bool = False) -> dict[str, str]:
    """{relative path: sha256 of a file, ``<dir>`` or ``-> target`` of a symlink} of every entry
    under ``root``; ``skip_lock`` leaves out the lock's support files at the root."""
    out: dict[str, str] = {}
    for path, _ in _walk(root, skip_lock=skip_lock):
        rel = str(path.relative_to(root))
        if path.is_symlink():
            out[rel] = "-> " + os.readlink(path)
        elif path.is_dir():
            out[rel] = "<dir>"
        else:
            out[rel] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


def digest_diff(before: dict[str, str], after: dict[str, str]) -> list[str]:
    """Human-readable differences between two `entry_digests` results."""
    out = [f"removed {k}" for k in sorted(set(before) - set(after))]
    out += [f"added {k}" for k in sorted(set(after) - set(before))]
    out += [f"changed {k}" for k in sorted(set(before) & set(after)) if before[k] != after[k]]
    return out


#: What commits consist of: HEAD and the vault's settings, and the manifests, tags and data.
COMMITTED_FILES = ("HEAD", "vault.json")
COMMITTED_FOLDERS = ("snapshots/", "tags/", "data/")


def committed_digests(root: Path) -> dict[str, str]:
    """The committed part of `entry_digests`: ``HEAD``, ``vault.json`` and everything under
    ``snapshots/``, ``tags/`` and ``data/``."""
    return {
        k: v
        for k, v in entry_digests(root).items()
        if k in COMMITTED_FILES or k.startswith(COMMITTED_FOLDERS)
    }


def entry_paths(root: Path, *, skip_lock: bool = False) -> set[str]:
    """The relative paths of every file and folder under ``root`` (nothing is read)."""
    return {str(p.relative_to(root)) for p, _ in _walk(root, skip_lock=skip_lock)}


def file_paths(root: Path, pattern: str = "*", *, skip_lock: bool = False) -> set[str]:
    """The relative paths of the files (everything but folders) under ``root`` whose name
    matches ``pattern`` (a glob such as ``*.parquet``)."""
    return {
        str(p.relative_to(root))
        for p, is_dir in _walk(root, skip_lock=skip_lock)
        if not is_dir and p.match(pattern)
    }


def entry_stats(root: Path) -> dict[str, tuple[int, int, int]]:
    """{relative path: (mtime_ns, size, mode)} of every entry under ``root`` (``lstat``)."""
    out: dict[str, tuple[int, int, int]] = {}
    for path, _ in _walk(root, skip_lock=False):
        st = os.lstat(path)
        out[str(path.relative_to(root))] = (st.st_mtime_ns, st.st_size, st.st_mode)
    return out


def set_age(path: Path, age_s: float) -> None:
    """Set ``path``'s atime and mtime to ``age_s`` seconds ago (a heartbeat that stopped then)."""
    then = time.time() - age_s
    os.utime(path, (then, then))


# -- a vault's files -----------------------------------------------------------------------------


def read_head(root: Path) -> str | None:
    """The snapshot id in ``HEAD`` (None if there is no HEAD)."""
    try:
        return (root / "HEAD").read_text().strip()
    except FileNotFoundError:
        return None


def require_head(root: Path) -> str:
    """The snapshot id in ``HEAD``, which must exist."""
    head = read_head(root)
    assert head is not None, f"{root} has no HEAD"
    return head


def manifests_on_disk(root: Path) -> list[str]:
    """Ids of every ``snapshots/<id>.json``, committed or not, sorted."""
    folder = root / "snapshots"
    return sorted(p.name.removesuffix(".json") for p in folder.glob("[0-9]*.json"))


def tmp_entries(root: Path) -> list[str]:
    """The names of whatever is in ``tmp/`` (staging folders and ``resume``), sorted."""
    tmp = root / "tmp"
    return sorted(p.name for p in tmp.iterdir()) if tmp.is_dir() else []


def staging_dirs(root: Path) -> list[str]:
    """The names of the writers' staging folders in ``tmp/`` (not ``tmp/resume``), sorted."""
    return [name for name in tmp_entries(root) if name != "resume"]


def checkpoint_files(root: Path) -> list[str]:
    """The per-year checkpoints (``tmp/resume/**/*.parquet``), relative to ``tmp/resume``."""
    base = root / "tmp" / "resume"
    return sorted(str(p.relative_to(base)) for p in base.rglob("*.parquet"))


def temp_files(root: Path, *, skip_lock: bool = False) -> list[str]:
    """Every leftover temp file of an atomic write (``*.tmp``) anywhere in the vault, sorted;
    ``skip_lock`` leaves out the lock's own (a contender's may be young and alive)."""
    return sorted(
        str(p.relative_to(root))
        for p in root.rglob("*.tmp")
        if not (skip_lock and is_lock_support(p.relative_to(root).parts[0]))
    )


def leftovers(root: Path) -> dict[str, list[str]]:
    """What a crashed or failed writer can leave: staging, checkpoints, temp files (not the
    lock's), the lock, uncommitted manifest ids (newer than HEAD)."""
    head = read_head(root)
    return {
        "staging": staging_dirs(root),
        # per-year checkpoints (kept on purpose: the next sync resumes from them)
        "checkpoint": checkpoint_files(root),
        "temp": temp_files(root, skip_lock=True),
        "lock": [".lock"] if (root / ".lock").exists() else [],
        "uncommitted": [m for m in manifests_on_disk(root) if head is None or m > head],
    }


def copy_vault(template: Path, root: Path) -> Path:
    """A private copy of a template vault at ``root`` (symlinks kept as links)."""
    shutil.copytree(template, root, symlinks=True)
    return root


# -- format 1 --------------------------------------------------------------------------------------


def canonical(obj: object) -> bytes:
    """Canonical JSON as the manifest format defines it: sorted keys, no spaces, UTF-8."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def format_1_fingerprint(manifest: dict[str, Any]) -> str:
    """The fingerprint as format 1 defined it: like format 2's, but without partition paths.

    SHA-256 of the canonical JSON of ``{dataset: {"columns": [[name, type], ...], "partitions":
    sorted([[year or -1, sha256, size_bytes, row_count], ...])}}``.
    """
    content = {
        name: {
            "columns": [[c["name"], c["type"]] for c in entry["columns"]],
            "partitions": sorted(
                [
                    -1 if p["year"] is None else p["year"],
                    p["sha256"],
                    p["size_bytes"],
                    p["row_count"],
                ]
                for p in entry["partitions"]
            ),
        }
        for name, entry in manifest["datasets"].items()
    }
    return hashlib.sha256(canonical(content)).hexdigest()


def rewrite_as_format_1(root: Path, *, hive_folders: bool = False) -> None:
    """Make a vault look as format 1 wrote it: version 1 in ``vault.json`` and every manifest,
    fingerprints without paths; ``hive_folders``: early builds' ``year=<YYYY>`` folders."""
    vault_json = json.loads((root / "vault.json").read_bytes())
    (root / "vault.json").write_text(json.dumps({**vault_json, "format_version": 1}))
    for path in sorted((root / "snapshots").glob("*.json")):
        obj = json.loads(path.read_bytes())
        obj["format_version"] = 1
        for entry in obj["datasets"].values():
            for part in entry["partitions"]:
                if not hive_folders or part["year"] is None:
                    continue
                year = f"{part['year']:04d}"
                new = part["path"].replace(f"/{year}/", f"/year={year}/")
                (root / new).parent.mkdir(parents=True, exist_ok=True)
                if (root / part["path"]).exists():
                    os.replace(root / part["path"], root / new)  # noqa: TID251 - rebuilds format 1
                part["path"] = new
        obj["fingerprint"] = format_1_fingerprint(obj)
        path.write_bytes(canonical(obj) + b"\n")
