"""Child process of the reliability suite: open a vault and run one sync, reporting how it ended.

Run by path (never collected by pytest)::

    python _sync_child.py ROOT CONFIG_JSON

``CONFIG_JSON`` holds ``source`` (keyword arguments of `SampleSource`, ``years`` as
``[first, last]``) and ``datasets``. The child opens the vault, writes ``BEGIN`` to stderr (a
marker for strace logs: every syscall after it belongs to the sync), runs the sync, writes ``END``
to stderr, then prints one JSON line on stdout: ``{"ok": true, "committed": ..., "snapshot_id":
...}`` or ``{"ok": false, "type": ..., "module": ..., "message": ..., "traceback": ...,
"quarantine_path": ...}``. Nothing is written to stdout before the sync (so the count of
``write`` calls before it does not depend on pipes). Exit status 0 in both cases; killed: -9.
"""

from __future__ import annotations

import json
import os
import sys
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/: the _helpers package

from _helpers.sources import sample_from_json


def main(argv: list[str]) -> int:
    root, config_json = argv
    config = json.loads(config_json)
    from wrdsvault import Warehouse

    wh = Warehouse(root, source=sample_from_json(config["source"]))
    os.write(2, b"BEGIN\n")
    try:
        report = wh.sync(config["datasets"])
    except BaseException as exc:  # report everything, including what should never escape
        result = {
            "ok": False,
            "type": type(exc).__name__,
            "module": type(exc).__module__,
            "message": str(exc),
            "traceback": traceback.format_exc(),
            "quarantine_path": getattr(exc, "quarantine_path", None),
        }
    else:
        result = {"ok": True, "committed": report.committed, "snapshot_id": report.snapshot_id}
    os.write(2, b"END\n")
    wh.close()
    sys.stdout.write(json.dumps(result) + "\n")
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
