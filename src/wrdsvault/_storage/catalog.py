"""The catalog: what a vault has committed, and therefore what may be cleaned away.

Everything that reads the commit records goes through here: ``HEAD``, the manifests under
``snapshots/`` (cached, they never change), the tags, the listing of committed snapshots that
readers see, and the question every cleaner must ask first: *is this manifest proven committed?*

Committed records, and what each proves:

* ``HEAD`` names the current snapshot; readers list the manifests not newer than it.
* A tag names a snapshot someone pinned; only a committed snapshot can be tagged.
* A manifest's ``parent`` names the snapshot that was ``HEAD`` when it was written (a writer only
  writes a manifest whose parent is the current ``HEAD``), so every parent was committed.

A manifest newer than ``HEAD`` is normally the leftover of a writer that died between writing it
and its commit point. It is garbage only when it is the *single* manifest newer than ``HEAD``, its
parent is ``HEAD`` (for a first commit: no parent and sequence 1), and no tag and no other
manifest names it: recovery removes every such leftover before a writer stages anything, so a
dead writer can never leave two. Anything else newer than ``HEAD`` (a tagged manifest, a parent
of another, one whose parent is not ``HEAD``, two siblings) proves that ``HEAD`` was moved back,
by hand or by restoring it from an older copy. Then nothing newer than ``HEAD`` is garbage,
writes are refused (`Catalog.require_writable`) and ``doctor`` reports it (``head-behind``) with
the id to write back into ``HEAD``. A manifest that cannot be read proves nothing either way, so
it is never removed and no data file is judged orphaned while one exists.

Expired snapshots (docs/retention.md): gc appends each snapshot it expires to the expiry log
(``expired.jsonl``) before it deletes anything. An expired id is no longer committed: the
committed listing leaves it out even while its manifest is still on disk (a reader held it, or
gc was interrupted), a ``HEAD`` naming one is damage, and a retained manifest whose ``parent``
was expired is normal (nothing requires a parent's manifest to exist).

`find_garbage` is the one classifier of garbage: recovery (under the writer lock, before every
write) removes what it returns except orphan data files, and ``doctor --repair`` removes all of
it; gc removes the manifests of expired snapshots no reader holds and the files only they named.
Whatever keeps a snapshot alive is one more kind of committed record that `Catalog.named_ids`
reports.
"""

from __future__ import annotations

import os
import stat
import time
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Final, Literal

import attrs

from wrdsvault._storage.expiry import read_expired
from wrdsvault._storage.layout import SNAPSHOT_ID_RE, Layout, validate_snapshot_id
from wrdsvault._storage.lease import DEFAULT_STALE_AFTER_S as LEASE_STALE_AFTER_S
from wrdsvault._storage.lease import scan_leases
from wrdsvault.errors import InvalidNameError, VaultFormatError
from wrdsvault.manifest import Manifest, format_timestamp
from wrdsvault.retention import ExpiredSnapshot

__all__ = [
    "GARBAGE_KINDS",
    "BeyondHead",
    "Catalog",
    "Garbage",
    "committed_at_of",
    "find_garbage",
    "read_head",
]

#: Temp files of writers that run without the writer lock (a contender's lock record, a
#: concurrent vault creation): garbage only once older than this.
LOCKLESS_TEMP_GRACE_S: Final = 60.0
_LOCKLESS_TEMP_PREFIXES: Final = (".lock.", ".vault.json.")

GarbageKind = Literal[
    "staging",
    "temp-file",
    "dead-lease",
    "uncommitted-manifest",
    "expired-manifest",
    "orphan-file",
]
#: Every kind `find_garbage` returns.
GARBAGE_KINDS: Final[frozenset[str]] = frozenset(
    {
        "staging",
        "temp-file",
        "dead-lease",
        "uncommitted-manifest",
        "expired-manifest",
        "orphan-file",
    }
)


def read_head(layout: Layout) -> str | None:
    """The id in ``HEAD``, or None before the first commit.

    Raises:
        VaultFormatError: HEAD exists but cannot be read or does not hold a snapshot id.
    """
    try:
        raw = layout.head.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise VaultFormatError(path=str(layout.head), problem=f"cannot read HEAD ({exc})") from exc
    text = raw.decode("ascii", "replace").strip()
    if SNAPSHOT_ID_RE.fullmatch(text) is None:
        raise VaultFormatError(
            path=str(layout.head),
            problem="HEAD does not hold a snapshot id (damaged); run `wrdsvault doctor`",
        )
    return text


def committed_at_of(snapshot_id: str) -> datetime:
    """The commit time encoded in a snapshot id."""
    return datetime.strptime(snapshot_id[:22], "%Y%m%dT%H%M%S%fZ").replace(tzinfo=timezone.utc)


@attrs.frozen(kw_only=True)
class BeyondHead:
    """The manifests newer than ``HEAD`` and what they prove (see the module docstring).

    Attributes:
        head: the id in ``HEAD`` (None: no HEAD yet).
        leftover: the one manifest a writer that died before its commit point left; garbage.
        committed: manifests newer than HEAD that a tag or another manifest names, oldest first.
        stranded: every other readable manifest newer than HEAD that is not the leftover.
        unreadable: manifest id -> what is wrong with it (newer than HEAD, cannot be judged).
        named: manifest id -> the records naming it (``tag paper``, ``parent of <id>``).
        parents: manifest id -> its parent, for every readable manifest newer than HEAD.
    """

    head: str | None
    leftover: str | None = None
    committed: tuple[str, ...] = ()
    stranded: tuple[str, ...] = ()
    unreadable: dict[str, str] = attrs.field(factory=dict)
    named: dict[str, tuple[str, ...]] = attrs.field(factory=dict)
    parents: dict[str, str | None] = attrs.field(factory=dict)

    @property
    def behind(self) -> bool:
        """Whether snapshots were committed after the one ``HEAD`` names (HEAD moved back)."""
        return bool(self.committed or self.stranded)

    @property
    def newest(self) -> str | None:
        """The id to write back into ``HEAD``: the newest readable manifest newer than it.

        Not only the newest *proven* one: the tip of a chain (``s1 <- s2 <- s3`` with HEAD moved
        back to ``s1``) is named by nothing, yet it was most likely HEAD before; once ``s2`` were
        written back, ``s3`` would look like a dead writer's leftover and be removed. Every
        manifest is complete once it exists (its files were published first), so naming the
        newest never loses a snapshot.
        """
        return max((*self.committed, *self.stranded), default=None)

    def evidence(self) -> str:
        """Why HEAD is behind, in words (``X (tag paper), Y (parent of X)``)."""
        parts = []
        for sid in sorted({*self.committed, *self.stranded}):
            why = list(self.named.get(sid, ()))
            if not why:
                parent = self.parents.get(sid)
                why = [
                    "another manifest has the same parent"
                    if parent == self.head
                    else f"its parent {parent or '(none)'} is not HEAD"
                ]
            parts.append(f"{sid} ({', '.join(why)})")
        return "; ".join(parts)

    def problem(self) -> str:
        """The message of the `VaultFormatError` that refuses writes while HEAD is behind."""
        if self.head is None:
            was = "HEAD is missing but committed snapshots exist"
        else:
            was = f"HEAD names {self.head} but snapshots were committed after it"
        return (
            f"{was}: {self.evidence()}. HEAD was moved back or lost (edited, or restored from an "
            f"older copy). Write {self.newest} into HEAD to make the newest snapshot current "
            "again, then retry (`wrdsvault doctor` shows the details); nothing is "
            "written or removed until then"
        )


class Catalog:
    """What one vault has committed: HEAD, manifests (cached), tags, the committed listing.

    Reads only; every method re-reads ``HEAD`` and the folders (another process may commit at
    any time), only parsed manifests are cached (a manifest never changes once written).
    Thread-safe in the way a dict is: the cache may parse one manifest twice, never wrongly.
    """

    def __init__(self, layout: Layout) -> None:
        self.layout = layout
        self._manifests: dict[str, Manifest] = {}
        self._expired: tuple[tuple[int, int, int], dict[str, ExpiredSnapshot], list[str]] | None
        self._expired = None

    # -- the expiry log ----------------------------------------------------------------------

    def _read_expiry_log(self) -> tuple[dict[str, ExpiredSnapshot], list[str]]:
        path = self.layout.expiry_log
        try:
            st = os.stat(path)
        except FileNotFoundError:
            return {}, []
        except OSError as exc:
            raise VaultFormatError(
                path=str(path), problem=f"cannot read the expiry log ({exc})"
            ) from exc
        key = (st.st_ino, st.st_size, st.st_mtime_ns)
        cached = self._expired
        if cached is not None and cached[0] == key:
            return cached[1], cached[2]
        try:
            entries, problems = read_expired(self.layout)
        except OSError as exc:
            raise VaultFormatError(
                path=str(path), problem=f"cannot read the expiry log ({exc})"
            ) from exc
        self._expired = (key, entries, problems)
        return entries, problems

    def expired(self) -> dict[str, ExpiredSnapshot]:
        """Snapshot id -> its record in the expiry log, for every snapshot gc expired.

        Raises:
            VaultFormatError: the log exists but cannot be read.
        """
        return dict(self._read_expiry_log()[0])

    def is_expired(self, snapshot_id: str) -> bool:
        """Whether gc expired ``snapshot_id`` (the expiry log names it)."""
        return snapshot_id in self._read_expiry_log()[0]

    def expiry_log_problems(self) -> list[str]:
        """Lines of the expiry log that cannot be read (skipped; `doctor` reports them)."""
        return list(self._read_expiry_log()[1])

    # -- HEAD and manifests ------------------------------------------------------------------

    def head(self) -> str | None:
        """The id in ``HEAD`` (None before the first commit); see `read_head`."""
        return read_head(self.layout)

    def clear_cache(self) -> None:
        """Forget the parsed manifests (after a repair put a damaged one back)."""
        self._manifests.clear()

    def manifest_ids(self) -> list[str]:
        """The id of every ``snapshots/<id>.json`` on disk, committed or not, oldest first."""
        try:
            names = os.listdir(self.layout.snapshots_dir)
        except (FileNotFoundError, NotADirectoryError):
            return []
        except OSError as exc:
            raise VaultFormatError(
                path=str(self.layout.snapshots_dir), problem=f"cannot list the manifests ({exc})"
            ) from exc
        return sorted(
            sid
            for sid in (n.removesuffix(".json") for n in names if n.endswith(".json"))
            if SNAPSHOT_ID_RE.fullmatch(sid)
        )

    def manifest(self, snapshot_id: str, *, lazy: bool = False) -> Manifest:
        """The parsed manifest of ``snapshot_id`` (cached once read).

        Its fingerprint is always checked against its whole content. Without ``lazy`` every
        dataset entry is built and checked too (its paths follow from dataset, year and
        sha256); with ``lazy`` (opening a snapshot) each entry is when first looked up, and a
        damaged one raises `VaultFormatError` then (`wrdsvault.manifest.LazyEntries`).

        Raises:
            VaultFormatError: it is missing, unreadable, damaged, or names another id.
        """
        manifest = self._manifests.get(snapshot_id)
        if manifest is None:
            manifest = self._read_manifest(snapshot_id)
        if not lazy:
            manifest.check()  # once per entry: built entries stay built
        return manifest

    def _read_manifest(self, snapshot_id: str) -> Manifest:
        """Read, check the fingerprint of and cache the manifest of ``snapshot_id``."""
        path = self.layout.manifest(snapshot_id)
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            raise VaultFormatError(
                path=str(path),
                problem="the manifest of a committed snapshot is missing; the vault is damaged "
                "(restore it from a backup)",
            ) from None
        except OSError as exc:
            raise VaultFormatError(
                path=str(path), problem=f"cannot read the manifest ({exc})"
            ) from exc
        manifest = Manifest.from_json(raw, where=str(path), lazy=True)
        if manifest.snapshot_id != snapshot_id:
            raise VaultFormatError(path=str(path), problem="manifest id differs from its name")
        self._manifests[snapshot_id] = manifest
        return manifest

    def quick_resolve(self, ref: str) -> str | None:
        """The snapshot ``"latest"`` or an exact snapshot id names, without listing every
        manifest: O(1) in the number of snapshots (HEAD, the expiry log, two stats).

        None whenever the answer is not plainly yes (no HEAD, HEAD or the id expired or newer
        than HEAD, a manifest missing, any other ref): then `refs.resolve_ref` over `committed`
        decides, and words the error. It gives the same answer here: a tag cannot look like
        ``"latest"`` or a snapshot id, and a committed listing up to a sound HEAD holds every
        id up to HEAD whose manifest exists and that gc has not expired.
        """
        if ref != "latest" and SNAPSHOT_ID_RE.fullmatch(ref) is None:
            return None
        head = self.head()
        if head is None:
            return None
        sid = head if ref == "latest" else ref
        if sid > head:
            return None
        expired = self._read_expiry_log()[0]
        if head in expired or sid in expired:
            return None
        if not all(self.layout.manifest(i).is_file() for i in {head, sid}):
            return None
        return sid

    def committed(self) -> list[tuple[str, datetime]]:
        """(id, committed_at) of every snapshot readers see, oldest first: those up to HEAD
        that gc has not expired.

        Raises:
            VaultFormatError: HEAD is damaged, names a snapshot whose manifest is missing, or
                names one gc expired.
        """
        head = self.head()
        if head is None:
            return []
        expired = self._read_expiry_log()[0]
        if head in expired:
            raise VaultFormatError(
                path=str(self.layout.head),
                problem=f"HEAD names snapshot {head}, which gc expired at "
                f"{format_timestamp(expired[head].expired_at)} (the latest snapshot is never "
                "expired, so HEAD was moved back or restored from an old copy); write the id of "
                "the newest snapshot in `snapshots/` into HEAD",
            )
        ids = [sid for sid in self.manifest_ids() if sid <= head and sid not in expired]
        if not ids or ids[-1] != head:
            raise VaultFormatError(
                path=str(self.layout.head),
                problem=f"HEAD names snapshot {head} but its manifest is missing; the vault is "
                f"damaged (restore snapshots/{head}.json from a backup, or write the id of the "
                "newest snapshot whose manifest exists into HEAD)",
            )
        return [(sid, committed_at_of(sid)) for sid in ids]

    # -- tags --------------------------------------------------------------------------------

    def tags(self) -> dict[str, str]:
        """Tag name -> snapshot id (damaged tag files are left out; `doctor` reports them)."""
        return self.scan_tags()[0]

    def scan_tags(self) -> tuple[dict[str, str], dict[str, str]]:
        """(tag -> snapshot id, damaged tag -> what is wrong with its file)."""
        good: dict[str, str] = {}
        damaged: dict[str, str] = {}
        try:
            names = sorted(os.listdir(self.layout.tags_dir))
        except (FileNotFoundError, NotADirectoryError):
            return good, damaged
        for name in names:
            try:
                path = self.layout.tag(name)
            except InvalidNameError:
                continue  # temp files and strangers are not tags
            try:
                good[name] = validate_snapshot_id(path.read_bytes().decode("ascii").strip())
            except FileNotFoundError:
                continue  # removed while we listed
            except (OSError, ValueError) as exc:  # InvalidNameError and UnicodeError included
                damaged[name] = f"unreadable tag file ({type(exc).__name__})"
        return good, damaged

    # -- what is proven committed -------------------------------------------------------------

    def named_ids(self, manifests: dict[str, Manifest]) -> dict[str, tuple[str, ...]]:
        """Snapshot id -> the committed records naming it: tags, and the ``parent`` of each of
        ``manifests``. A named snapshot was committed; nothing may delete it or its files."""
        named: dict[str, list[str]] = {}
        for tag, sid in self.tags().items():
            named.setdefault(sid, []).append(f"tag {tag}")
        for sid, manifest in sorted(manifests.items()):
            if manifest.parent is not None:
                named.setdefault(manifest.parent, []).append(f"parent of {sid}")
        return {sid: tuple(why) for sid, why in named.items()}

    def beyond_head(self) -> BeyondHead:
        """Judge the manifests newer than ``HEAD``: one crash leftover, or proof HEAD moved back.

        Raises:
            VaultFormatError: HEAD is damaged (nothing can be judged against it).
        """
        head = self.head()
        newer: dict[str, Manifest] = {}
        unreadable: dict[str, str] = {}
        for sid in self.manifest_ids():
            if head is not None and sid <= head:
                continue
            try:
                newer[sid] = self.manifest(sid)
            except VaultFormatError as exc:
                unreadable[sid] = exc.problem
        named = {sid: why for sid, why in self.named_ids(newer).items() if sid in newer}
        if not unreadable and len(newer) == 1 and not (head and self.is_expired(head)):
            ((sid, manifest),) = newer.items()
            first = manifest.parent is None and manifest.sequence == 1
            if sid not in named and (manifest.parent == head if head else first):
                return BeyondHead(head=head, leftover=sid)
        return BeyondHead(
            head=head,
            committed=tuple(sid for sid in newer if sid in named),
            stranded=tuple(sid for sid in newer if sid not in named),
            unreadable=unreadable,
            named=named,
            parents={sid: m.parent for sid, m in newer.items()},
        )

    def require_writable(self) -> str | None:
        """Return HEAD if a writer may commit on top of it; run under the writer lock.

        Raises:
            VaultFormatError: HEAD is damaged or names a missing manifest; snapshots were
                committed after HEAD (it was moved back); or a manifest newer than HEAD cannot
                be read (it may be a committed snapshot, so nothing may be committed past it).
        """
        beyond = self.beyond_head()
        if beyond.behind:
            raise VaultFormatError(path=str(self.layout.head), problem=beyond.problem())
        if beyond.unreadable:
            sid, problem = sorted(beyond.unreadable.items())[0]
            raise VaultFormatError(
                path=str(self.layout.manifest(sid)),
                problem=f"{problem}. This manifest is newer than HEAD and cannot be read, so it "
                "may be a committed snapshot; restore it from a backup, or, if you know it was "
                "never committed, delete it. Nothing is written until then",
            )
        if beyond.head is not None:
            self.committed()  # HEAD's own manifest must exist
        return beyond.head


# -- garbage -----------------------------------------------------------------------------------


@attrs.frozen
class Garbage:
    """One thing that is provably garbage, and why."""

    kind: GarbageKind
    path: Path
    reason: str


def _is_temp(name: str) -> bool:
    return name.startswith(".") and name.endswith(".tmp")


def _older_than(path: Path, seconds: float, now: float) -> bool:
    try:
        return now - path.lstat().st_mtime >= seconds
    except FileNotFoundError:
        return False


def find_garbage(
    catalog: Catalog,
    *,
    orphans: bool = True,
    now: float | None = None,
    leased: frozenset[str] | None = None,
    expiring: frozenset[str] = frozenset(),
    lease_stale_after_s: float = LEASE_STALE_AFTER_S,
) -> Iterator[Garbage]:
    """What is provably garbage in the vault, in the order it is safe to remove.

    Only valid while the writer lock is held (otherwise a live writer's staging or manifest
    would look like garbage); read-only callers (``doctor`` without ``--repair``, a gc dry run)
    may list it as "garbage once no writer runs".

    * ``staging``: every entry of ``tmp/`` but the checkpoints (``tmp/resume/``, a real folder);
    * ``temp-file``: ``.*.tmp`` in the root, ``snapshots/``, ``tags/``, ``leases/`` and
      ``exports/`` (temp
      files of writers that do not hold the writer lock, ``.lock.*``, ``.vault.json.*`` and
      every one in ``leases/``, only once older than `LOCKLESS_TEMP_GRACE_S`);
    * ``dead-lease``: a reader lease whose owner is provably dead (`lease.scan_leases`, with
      ``lease_stale_after_s`` for other hosts' leases); judged without the writer lock, as a
      dead reader never comes back. Nothing if the leases cannot be judged (an I/O error);
    * ``uncommitted-manifest``: the single manifest of a writer that died before its commit
      point (`Catalog.beyond_head`); nothing while HEAD is damaged or its manifest is missing;
    * ``orphan-file`` (with ``orphans``): a data file no manifest references, judged only while
      the catalog is consistent: HEAD readable, its manifest present, every manifest readable,
      HEAD not behind. Files of every manifest but the leftover count as referenced, and so
      do those of expired manifests unless they are ``expired-manifest`` garbage;
    * ``expired-manifest`` (with ``orphans`` and ``leased``, judged like orphans): the manifest
      of a snapshot the expiry log (or ``expiring``, for a plan) names that no reader holds
      (``leased``: the leased ids, read *after* the expiry was durable) and no tag names.
      Without ``leased`` nothing expired is garbage: a reader may hold it.
      Listed after the orphan files, which include the files only it named.
    """
    layout = catalog.layout
    now = time.time() if now is None else now
    resume = layout.resume_dir
    if layout.tmp_dir.is_dir():
        for child in sorted(layout.tmp_dir.iterdir()):
            if child == resume and child.is_dir() and not child.is_symlink():
                continue  # finished years of an interrupted sync: the next sync resumes them
            yield Garbage("staging", child, "staging left by a writer that did not finish")
    folders = (layout.root, layout.snapshots_dir, layout.tags_dir, layout.leases_dir)
    for folder in (*folders, layout.exports_dir):
        if not folder.is_dir():
            continue
        for child in sorted(folder.iterdir()):
            if not _is_temp(child.name):
                continue
            lockless = folder == layout.leases_dir or child.name.startswith(_LOCKLESS_TEMP_PREFIXES)
            if lockless and not _older_than(child, LOCKLESS_TEMP_GRACE_S, now):
                continue  # a lock record, vault.json or reader lease being published right now
            yield Garbage("temp-file", child, "temp file of an interrupted atomic write")
    try:
        leases = scan_leases(layout, stale_after_s=lease_stale_after_s)
    except OSError:
        leases = []  # cannot be judged now: nothing about them is proven
    for lease in leases:
        if lease.dead is not None:
            yield Garbage("dead-lease", lease.path, f"reader lease of a dead process: {lease.dead}")
    try:
        beyond = catalog.beyond_head()
        catalog.committed()  # HEAD's own manifest exists, HEAD is not expired
    except VaultFormatError:
        return  # HEAD is damaged: nothing can be judged by its relation to HEAD
    if beyond.leftover is not None:
        yield Garbage(
            "uncommitted-manifest",
            layout.manifest(beyond.leftover),
            "manifest written by a writer that died before its commit point",
        )
    if not orphans or beyond.behind or beyond.unreadable:
        return
    on_disk = catalog.manifest_ids()
    dead: list[str] = []
    if leased is not None:
        tagged = set(catalog.tags().values())
        expired = set(catalog.expired()) | set(expiring)
        dead = [
            sid
            for sid in on_disk
            if sid in expired and sid not in leased and sid not in tagged and sid != beyond.head
        ]
    referenced: set[str] = set()
    try:
        for sid in on_disk:
            if sid != beyond.leftover and sid not in dead:
                referenced.update(p.path for p in catalog.manifest(sid).files())
    except VaultFormatError:
        return  # a manifest cannot be read: any file may be one it needs
    for path in _data_files(layout):
        if layout.relative(path) not in referenced:
            yield Garbage("orphan-file", path, "no committed snapshot references this data file")
    for sid in dead:
        yield Garbage(
            "expired-manifest",
            layout.manifest(sid),
            "manifest of a snapshot gc expired; no reader holds it",
        )


def _data_files(layout: Layout) -> Iterator[Path]:
    """Every regular ``*.parquet`` file under ``data/``, not following symlinks."""
    if not layout.data_dir.is_dir():
        return
    for dirpath, dirnames, filenames in os.walk(layout.data_dir):
        here = Path(dirpath)
        dirnames[:] = sorted(d for d in dirnames if not (here / d).is_symlink())
        for name in sorted(filenames):
            path = here / name
            if name.endswith(".parquet") and stat.S_ISREG(path.lstat().st_mode):
                yield path
