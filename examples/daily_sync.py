"""A daily sync as a scheduler runs it: re-sync the vault, log the run, check its freshness.

    python examples/daily_sync.py VAULT [LOGFILE]

Without configuration it uses synthetic WRDS-shaped data (`SampleSource`), so it runs anywhere:
the first run fills VAULT with a few datasets, a second sync finds nothing new, and a third (a
newer "vintage" of the sample data) commits the changed years only. With ``WRDS_USERNAME`` set
it syncs from WRDS instead (``~/.pgpass`` supplies the password; nothing is asked on stdin), by
the same command a crontab line or a systemd timer runs:

    wrdsvault sync --all --source wrds --wrds-username "$WRDS_USERNAME" \\
        --vault VAULT --log LOGFILE --quiet

Exit codes (docs/cli.md): 0 a new snapshot, 3 nothing changed, 1 failed, 4 the lock was busy.
The script exits 0 when the vault ends up fresh (every dataset synced within a day), else 1.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

OUTCOMES = {0: "synced", 1: "failed", 2: "bad usage", 3: "unchanged", 4: "lock busy"}


def wrdsvault(*args: str) -> subprocess.CompletedProcess[str]:
    """Run the command line as cron would: stdin closed, output captured."""
    return subprocess.run(
        [sys.executable, "-m", "wrdsvault", *args],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        check=False,
    )


def source_args() -> list[str]:
    """``--source wrds ...`` when WRDS_USERNAME is set, else the synthetic sample source."""
    user = os.environ.get("WRDS_USERNAME")
    if user:
        return ["--source", "wrds", "--wrds-username", user]
    return ["--source", "sample", "--sample-years", "2020-2024", "--securities", "200"]


def main(vault: Path, log: Path) -> int:
    src = source_args()
    if not (vault / "vault.json").exists():
        # The first sync names the datasets (and, if wanted, --years / --date-column); every
        # later run is `sync --all`, which re-syncs them with those same options.
        first = wrdsvault(
            "sync",
            "crsp.msf",
            "ff.factors_monthly",
            "--years",
            "2022-2024",
            "--vault",
            str(vault),
            "--log",
            str(log),
            "--quiet",
            *src,
        )
        print(f"first sync: {OUTCOMES.get(first.returncode, first.returncode)}")
        if first.returncode != 0:
            sys.stderr.write(first.stderr)
            return 1
    runs = [src]
    if src[1] == "sample":
        runs.append([*src, "--vintage", "2"])  # the sample source's next release
    for args in runs:
        run = wrdsvault("sync", "--all", "--vault", str(vault), "--log", str(log), "--quiet", *args)
        print(f"daily sync: {OUTCOMES.get(run.returncode, run.returncode)}")
        if run.returncode not in (0, 3):
            sys.stderr.write(run.stderr)
    last = json.loads(log.read_text().splitlines()[-1])
    print(f"log: {last['outcome']} at {last['ended_at']}, snapshot {last['snapshot_id']}")
    status = wrdsvault("status", "--vault", str(vault), "--json", "--max-age", "1d")
    for d in json.loads(status.stdout)["datasets"]:
        print(f"  {d['name']:<20} last synced {d['age_s']:8.0f} s ago  stale={d['stale']}")
    return 0 if status.returncode == 0 else 1


if __name__ == "__main__":
    where = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(tempfile.mkdtemp()) / "vault"
    logfile = Path(sys.argv[2]) if len(sys.argv) > 2 else where.parent / "daily-sync.jsonl"
    sys.exit(main(where, logfile))
