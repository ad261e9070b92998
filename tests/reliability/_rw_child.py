"""Child processes of the readers-under-write-load test: one writer, several readers.

Run by path (never collected by pytest)::

    python _rw_child.py writer CONFIG_JSON
    python _rw_child.py reader CONFIG_JSON

**writer** commits ``commits`` snapshots, the i-th from ``_helpers.reliability.commit_source(i)``;
before each commit it computes the expected answers from the source's own batches with pyarrow
(never from the vault) and, once committed, appends ``{"i", "snapshot_id", "sequence",
"expected"}`` to its log. With ``broken`` it is the negative control: after each commit it rewrites
a Parquet file of the first snapshot *in place* (what wrdsvault must never do), with another year's
bytes.

**reader** pins the snapshot HEAD names at start, prints ``ready``, then until the ``stop`` file
exists (and it ran ``min_queries`` queries) runs `_helpers.reliability.ANSWER_SQL` about
``rate_hz`` times a second on one of: the pinned snapshot, a second snapshot re-pinned now and then
to a random committed id (both kept open across commits), a fresh ``snapshot("latest")``, or
``Warehouse.arrow`` (the cached latest connection) bracketed by two reads of ``HEAD``. Each query
appends one JSON line to its log: the answer and which snapshot gave it, or the error. With
``threads`` > 1 the reader runs that many such loops in threads (reader ids ``100 * reader +
thread``) sharing one `Warehouse` and the pinned snapshot.
"""

from __future__ import annotations

import json
import random
import sys
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/: the _helpers package

from _helpers import reliability as S
from _helpers.disk import read_head
from _helpers.sources import sample_from_json


def writer(cfg: dict[str, Any]) -> int:
    from wrdsvault import Warehouse

    root = Path(cfg["root"])
    victim = read_head(root)
    memo: dict[Any, list[Any]] = {}
    print("ready", flush=True)
    with open(cfg["log"], "a") as log:
        for i in range(cfg["first"], cfg["first"] + cfg["commits"]):
            source = sample_from_json(S.commit_source(i))
            expected = S.source_answers(source, memo)
            with Warehouse(root, source=source) as wh:
                report = wh.sync(list(S.DATASETS))
                if not report.committed:
                    print(f"commit {i} committed nothing: {report}", file=sys.stderr)
                    return 3
                sequence = wh.snapshots()[-1].sequence
            line = {"i": i, "snapshot_id": report.snapshot_id, "sequence": sequence}
            log.write(json.dumps({**line, "expected": expected}) + "\n")
            log.flush()
            if cfg["broken"] and victim is not None:
                rewrite_in_place(root, victim, i)
            time.sleep(cfg["pause_s"])  # pacing: readers get time with each snapshot (no wait)
    return 0


def rewrite_in_place(root: Path, snapshot_id: str, i: int) -> None:
    """The bug the negative control plants: overwrite a pinned Parquet file's bytes in place."""
    manifest = json.loads((root / "snapshots" / f"{snapshot_id}.json").read_bytes())
    parts = manifest["datasets"]["crsp.msf"]["partitions"]
    target = root / parts[0]["path"]
    donor = root / parts[1 + i % (len(parts) - 1)]["path"]
    data = donor.read_bytes()
    with target.open("r+b") as f:
        f.write(data)
        f.truncate()


def reader(cfg: dict[str, Any]) -> int:
    from wrdsvault import Warehouse

    root = Path(cfg["root"])
    threads = int(cfg.get("threads", 1))
    wh = Warehouse(root, create=False)
    pinned = wh.snapshot(read_head(root) or "latest")
    print("ready", flush=True)
    lock = threading.Lock()
    with open(cfg["log"], "a") as log:

        def record(obs: dict[str, Any]) -> None:
            with lock:
                log.write(json.dumps(obs) + "\n")
                log.flush()

        if threads == 1:
            read_loop(cfg, cfg["reader"], cfg["seed"], wh, pinned, record)
        else:  # reader ids r*100+t; every thread shares the Warehouse and the pinned snapshot
            workers = [
                threading.Thread(
                    target=read_loop,
                    args=(cfg, cfg["reader"] * 100 + t, cfg["seed"] * 100 + t, wh, pinned, record),
                )
                for t in range(threads)
            ]
            for w in workers:
                w.start()
            for w in workers:
                w.join()
    wh.close()
    return 0


def read_loop(cfg: dict[str, Any], who: int, seed: int, wh: Any, pinned: Any, record: Any) -> None:
    root = Path(cfg["root"])
    rng = random.Random(seed)  # noqa: S311 (choice of action, not security)
    stop = Path(cfg["stop"])
    period = 1.0 / cfg["rate_hz"]
    other = None
    done = 0
    while not (stop.exists() and done >= cfg["min_queries"]):
        started = time.monotonic()
        kind = rng.choices(["pinned", "other", "latest", "query"], weights=[3, 2, 3, 3])[0]
        obs: dict[str, Any] = {"reader": who, "kind": kind, "t": time.time()}
        try:
            if kind == "query":
                obs["h0"] = read_head(root)
                rows = wh.arrow(S.ANSWER_SQL).to_pylist()
                obs["h1"] = read_head(root)
                obs["answer"] = S.answers_from_rows(rows)
            else:
                if kind == "other":
                    if other is None or rng.random() < 0.3:
                        if other is not None:
                            other.close()
                            other = None
                        other = wh.snapshot(rng.choice([s.snapshot_id for s in wh.snapshots()]))
                    snap = other
                elif kind == "latest":
                    snap = wh.snapshot("latest")
                else:
                    snap = pinned
                try:
                    obs["snapshot_id"] = snap.id
                    obs["sequence"] = snap.manifest.sequence
                    obs["answer"] = S.snapshot_answers(snap)
                finally:
                    if kind == "latest":
                        snap.close()
        except Exception as exc:  # every failure is an observation, never a crash
            obs["error"] = f"{type(exc).__module__}.{type(exc).__name__}: {exc}"[:500]
            if kind == "other":
                other = None
        record(obs)
        done += 1
        time.sleep(max(0.0, period - (time.monotonic() - started)))  # pacing: rate_hz queries/s
    if other is not None:
        other.close()


def main(argv: list[str]) -> int:
    role, cfg = argv
    return {"writer": writer, "reader": reader}[role](json.loads(cfg))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
