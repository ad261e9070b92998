"""Child process for the crash tests: open a vault and run one sync, to be SIGKILLed on the way.

Run by path (never imported by pytest)::

    python _writer_child.py ROOT SOURCE_JSON DATASET [DATASET ...]

``SOURCE_JSON`` holds the keyword arguments of `SampleSource` (``years`` as ``[first, last]``). The
writer kills itself at the point named by ``WRDSVAULT_TEST_CRASHPOINT`` if the parent set it. The
child prints ``ready`` once the imports are done and the vault is open (so a parent timing a random
kill measures the sync, not the interpreter start-up), then ``committed <id>`` or ``unchanged
<id>``. Exit status: 0 after a sync, 2 if the sync raised (traceback on stderr), -9 when killed.
"""

from __future__ import annotations

import json
import sys
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/: the _helpers package

from _helpers.sources import sample_from_json


def main(argv: list[str]) -> int:
    root, source_json, *datasets = argv
    from wrdsvault import Warehouse

    with Warehouse(root, source=sample_from_json(json.loads(source_json))) as wh:
        print("ready", flush=True)
        try:
            report = wh.sync(datasets)
        except Exception:
            traceback.print_exc()
            return 2
    print(f"{'committed' if report.committed else 'unchanged'} {report.snapshot_id}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
