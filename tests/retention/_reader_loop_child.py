"""Child process of the gc reader test: query one pinned snapshot in a loop while gc runs.

Run by path (never collected by pytest)::

    python _reader_loop_child.py ROOT REF SQL

Opens ``Warehouse(ROOT).snapshot(REF)``, runs SQL once and prints ``{"event": "ready", "id",
"answer"}``. Then it runs SQL again and again, comparing each answer with the first, until a
line arrives on stdin (or EOF); it runs SQL once more after that, closes the snapshot and prints
``{"event": "done", "queries", "mismatches", "errors"}`` (errors: the first few, as
``type: message``).
"""

from __future__ import annotations

import json
import sys
import threading
from typing import Any


def main(root: str, ref: str, sql: str) -> int:
    from wrdsvault import Warehouse

    def answer() -> Any:
        return snap.query(sql).to_dict("records")

    wh = Warehouse(root, create=False)
    snap = wh.snapshot(ref)
    first = answer()
    print(json.dumps({"event": "ready", "id": snap.id, "answer": first}, default=str), flush=True)
    stop = threading.Event()
    threading.Thread(target=lambda: (sys.stdin.readline(), stop.set()), daemon=True).start()
    queries = mismatches = 0
    errors: list[str] = []
    last = False
    while not last:
        last = stop.is_set()  # one more query after the parent said stop
        try:
            got = answer()
        except Exception as exc:  # the parent judges what a deleted file did
            errors.append(f"{type(exc).__name__}: {str(exc)[:200]}")
        else:
            mismatches += got != first
        queries += 1
    snap.close()
    wh.close()
    done = {"event": "done", "queries": queries, "mismatches": mismatches, "errors": errors[:3]}
    print(json.dumps({**done, "error_count": len(errors)}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:4]))
