"""Child process of the bad-input tests: the read paths that run DuckDB, on a damaged vault.

Run by path (never collected by pytest)::

    python _read_child.py ROOT

A damaged Parquet file reaches DuckDB here, in a child, so that a crash of the engine could never
take pytest down with it. Runs `_helpers.reliability.ANSWER_SQL` on ``snapshot("latest")``, on
``snapshot("paper")`` (no verify: what a user gets who did not ask for it), through
``Warehouse.arrow``, and ``wrdsvault query`` through `wrdsvault.cli.main` for both refs; prints
one JSON object: per call ``ok`` and ``answer``, or the error's ``type`` and ``module``; for the
CLI its exit status and stderr.
"""

from __future__ import annotations

import contextlib
import io
import json
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/: the _helpers package

from _helpers import reliability as S


def main(argv: list[str]) -> int:
    (root,) = argv
    from wrdsvault import Warehouse
    from wrdsvault.cli import main as cli

    out: dict[str, Any] = {}

    def call(name: str, fn: Any) -> None:
        try:
            out[name] = {"ok": True, "answer": fn()}
        except Exception as exc:  # the parent judges what escaped
            out[name] = {
                "ok": False,
                "type": type(exc).__name__,
                "module": type(exc).__module__,
                "message": str(exc)[:300],
            }

    wh = Warehouse(root, create=False)

    def pinned(ref: str) -> Any:
        with wh.snapshot(ref) as snap:
            return S.snapshot_answers(snap)

    call("snapshot-latest", lambda: pinned("latest"))
    call("snapshot-paper", lambda: pinned("paper"))
    call("warehouse-arrow", lambda: S.answers_from_rows(wh.arrow(S.ANSWER_SQL).to_pylist()))
    wh.close()
    for ref in ("latest", "paper"):
        err, std = io.StringIO(), io.StringIO()
        argv_cli = ["query", S.ANSWER_SQL, "--snapshot", ref, "--vault", root]
        try:
            with contextlib.redirect_stderr(err), contextlib.redirect_stdout(std):
                status: Any = cli(argv_cli)
        except BaseException as exc:  # main() must not raise: record what escaped
            status = f"raised {type(exc).__module__}.{type(exc).__name__}: {exc}"[:300]
        out[f"cli-query-{ref}"] = {"exit": status, "stderr": err.getvalue()[-2000:]}
    sys.stdout.write(json.dumps(out) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
