"""Child process of the reader-lease tests: a real reader, driven by its parent.

Run by path (never collected by pytest)::

    python _reader_child.py MODE CONFIG_JSON

Every line it prints is one JSON object with an ``event`` key. Modes:

``lease``
    `take_lease` on each id of ``snapshot_ids`` in ``root`` (``refresh_s``), print ``held`` with
    the lease paths and pid.
``snapshot``
    ``Warehouse(root).snapshot(ref)`` for each of ``refs``, run ``sql`` on each, print ``held``
    with the ids, answers, whether each is ``leased``, and the warnings wrdsvault logged.

Then obey stdin lines: ``query`` runs ``sql`` on every open snapshot and prints ``answers``;
``release`` releases the leases (closes the snapshots) and prints ``released``; ``fork``
(``lease`` mode) forks a child that releases every inherited lease and exits normally, and
prints ``forked`` with its wait status; ``threads``
prints the number of lease refresh threads; ``exit`` returns from main without releasing (the
interpreter's exit must remove the leases). EOF is ``exit``.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import threading
from pathlib import Path
from typing import Any


def emit(event: str, **fields: Any) -> None:
    print(json.dumps({"event": event, **fields}), flush=True)


def main(mode: str, cfg: dict[str, Any]) -> int:
    from wrdsvault import Warehouse
    from wrdsvault._storage.layout import Layout
    from wrdsvault._storage.lease import THREAD_NAME, take_lease

    held: list[Any] = []
    warnings: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            warnings.append(record.getMessage())

    logging.getLogger("wrdsvault").addHandler(Collect(logging.WARNING))
    sql = cfg.get("sql", "select count(*) as n from crsp.msf")

    def answers() -> list[Any]:
        return [snap.query(sql).to_dict("records") for snap in held]

    if mode == "lease":
        layout = Layout(Path(os.path.realpath(cfg["root"])))
        for sid in cfg["snapshot_ids"]:
            held.append(
                take_lease(
                    layout,
                    sid,
                    file_mode=0o600,
                    dir_mode=0o700,
                    refresh_s=cfg.get("refresh_s", 60.0),
                )
            )
        emit("held", pid=os.getpid(), paths=[str(lease.path) for lease in held])
    else:
        wh = Warehouse(cfg["root"], create=False)
        held.extend(wh.snapshot(ref) for ref in cfg["refs"])
        emit(
            "held",
            pid=os.getpid(),
            ids=[s.id for s in held],
            answers=answers(),
            leased=[s.leased for s in held],
            warnings=warnings,
        )
    for line in sys.stdin:
        command = line.strip()
        if command == "query":
            emit("answers", answers=answers(), warnings=warnings)
        elif command == "release":
            for item in held:
                item.release() if mode == "lease" else item.close()
            emit("released")
        elif command == "fork":
            pid = os.fork()
            if pid == 0:  # the forked child releases what it inherited, then exits normally
                for item in held:
                    item.release()
                sys.exit(0)  # runs the interpreter's exit (and the leases' finalizers)
            emit("forked", status=os.waitpid(pid, 0)[1])
        elif command == "threads":
            emit("threads", n=sum(t.name == THREAD_NAME for t in threading.enumerate()))
        elif command == "exit":
            break
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], json.loads(sys.argv[2])))
