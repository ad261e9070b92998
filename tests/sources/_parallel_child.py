"""Child process for the parallel-sync crash test: sync a replica table with several streams.

Run by path (never imported by pytest)::

    python _parallel_child.py ROOT CONNECT_JSON STREAMS

``CONNECT_JSON`` holds `WrdsReplica.connect_kwargs`. The writer kills itself at the point named by
``WRDSVAULT_TEST_CRASHPOINT``. Prints ``committed <id>`` after a sync; exit 2 if the sync raised.
"""

from __future__ import annotations

import json
import sys
import traceback


def main(argv: list[str]) -> int:
    root, connect_json, streams = argv
    from wrdsvault import Warehouse
    from wrdsvault.sources import WrdsSource

    source = WrdsSource(**json.loads(connect_json), streams=int(streams))
    with Warehouse(root, source=source) as wh:
        try:
            report = wh.sync("crsp.dsf")
        except Exception:
            traceback.print_exc()
            return 2
    print(f"committed {report.snapshot_id}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
