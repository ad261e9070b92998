"""Reader leases as the tests look at them."""

from __future__ import annotations

from wrdsvault import Warehouse
from wrdsvault._storage.layout import Layout
from wrdsvault._storage.lease import held_snapshot_ids

#: The stale-lease age the tests judge by (an hour: every lease a test takes is younger).
STALE_S = 3600.0


def held_ids(wh: Warehouse) -> frozenset[str]:
    """The snapshot ids that live reader leases hold in ``wh``'s vault."""
    return held_snapshot_ids(Layout(wh.root), stale_after_s=STALE_S)
