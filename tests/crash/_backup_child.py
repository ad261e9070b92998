"""Child process for the backup crash tests: back a vault up, to be SIGKILLed on the way.

Run by path (never imported by pytest)::

    python _backup_child.py SOURCE DEST [--verify] [--fsize BYTES] [--vanish-to PATH]
                            [--storage-options JSON]

The backup kills itself at the point named by ``WRDSVAULT_TEST_CRASHPOINT`` if the parent set it.
``--fsize`` caps the size of any file the child writes (RLIMIT_FSIZE, with SIGXFSZ ignored, so a
write past it fails with EFBIG): a destination that fills up. ``--vanish-to`` moves DEST to PATH
at the first progress report (a destination unmounted mid-backup). ``--storage-options`` passes
fsspec options for a DEST that is an object-storage URL. Prints the report as JSON. Exit
status: 0 after a backup, 2 if it raised a wrdsvault error (``<type>: <message>`` on stderr),
-9 when killed.
"""

from __future__ import annotations

import json
import resource
import signal
import sys
from pathlib import Path


def main(argv: list[str]) -> int:
    source, dest, *rest = argv
    from wrdsvault import Warehouse, WrdsVaultError

    if "--fsize" in rest:
        limit = int(rest[rest.index("--fsize") + 1])
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    progress = None
    if "--vanish-to" in rest:
        away = Path(rest[rest.index("--vanish-to") + 1])

        def progress(files: int, total: int, done: int, total_bytes: int) -> None:
            if Path(dest).exists():
                Path(dest).rename(away)

    options = None
    if "--storage-options" in rest:
        options = json.loads(rest[rest.index("--storage-options") + 1])
    with Warehouse(source, create=False) as wh:
        try:
            report = wh.backup(
                dest, verify="--verify" in rest, progress=progress, storage_options=options
            )
        except WrdsVaultError as exc:
            print(f"{type(exc).__name__}: {exc}", file=sys.stderr, flush=True)
            return 2
    print(json.dumps(report.to_json()), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
