"""Child process for the gc crash tests: open a vault and run one gc, to be SIGKILLed on the way.

Run by path (never imported by pytest)::

    python _gc_child.py ROOT POLICY_JSON

``POLICY_JSON`` holds the keyword arguments of `Warehouse.gc` (``{"keep_last": 1}``). The gc kills
itself at the point named by ``WRDSVAULT_TEST_CRASHPOINT`` if the parent set it. Prints the
report as JSON. Exit status: 0 after the gc, 2 if it raised (traceback on stderr), -9 when killed.
"""

from __future__ import annotations

import json
import sys
import traceback


def main(argv: list[str]) -> int:
    root, policy_json = argv
    from wrdsvault import Warehouse

    with Warehouse(root, create=False) as wh:
        try:
            report = wh.gc(**json.loads(policy_json))
        except Exception:
            traceback.print_exc()
            return 2
    print(json.dumps(report.to_json()), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
