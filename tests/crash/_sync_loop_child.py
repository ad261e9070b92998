"""Child process: commit ``N`` snapshots in a row into a vault (alternating sample vintages).

Run by path (never imported by pytest)::

    python _sync_loop_child.py ROOT N

Prints ``committed <id>`` after each commit. Exit status 0, or 2 if a sync raised.
"""

from __future__ import annotations

import sys
import traceback


def main(argv: list[str]) -> int:
    root, n = argv[0], int(argv[1])
    from wrdsvault import Warehouse
    from wrdsvault.sources import SampleSource

    with Warehouse(root, lock_timeout_s=60) as wh:
        for i in range(n):
            wh.source = SampleSource(
                seed=0, years=range(2019, 2024), n_securities=60, vintage=2 - i % 2
            )
            try:
                report = wh.sync("crsp.msf", full=True)
            except Exception:
                traceback.print_exc()
                return 2
            print(f"committed {report.snapshot_id}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
