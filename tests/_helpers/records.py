"""Commit records planted through the library's own types, for tests of recovery, doctor and gc.

Each helper writes what a particular crash or race leaves behind, so a test can start from that
state without killing a process at exactly the right instant.
"""

from __future__ import annotations

from pathlib import Path

import attrs

from wrdsvault import Warehouse
from wrdsvault._storage.catalog import committed_at_of
from wrdsvault._storage.expiry import append_expired
from wrdsvault._storage.layout import Layout
from wrdsvault.manifest import Manifest
from wrdsvault.retention import ExpiredSnapshot


def crashed_child(root: Path, parent: str, snapshot_id: str) -> Manifest:
    """The manifest a writer that died before its commit point leaves on top of ``parent``."""
    base = Manifest.from_json((root / "snapshots" / f"{parent}.json").read_bytes(), where=parent)
    return attrs.evolve(
        base,
        snapshot_id=snapshot_id,
        parent=parent,
        sequence=base.sequence + 1,
        committed_at=committed_at_of(snapshot_id),
    )


def expire_by_hand(root: Path, sid: str) -> None:
    """Record ``sid`` in the expiry log and delete nothing: what a gc killed right after its
    expiry record leaves, or one that recorded the expiry just after a reader leased."""
    with Warehouse(root, create=False) as wh:
        manifest = wh._catalog.manifest(sid)
    record = ExpiredSnapshot(
        snapshot_id=sid,
        sequence=manifest.sequence,
        committed_at=manifest.committed_at,
        fingerprint=manifest.fingerprint,
        expired_at=manifest.committed_at,
        policy={"keep_last": 1},
    )
    append_expired(Layout(root), [record], file_mode=0o600)
