"""The same snapshot gives the same answer on every machine, whatever the host's time zone.

DuckDB takes its ``TimeZone`` from the process environment unless told otherwise, and that
setting decides what ``year()``, ``date_trunc`` or a cast do with a ``timestamptz`` and how one
converts to pandas. Each case runs in a real child process started with ``TZ`` set (the C library
reads it at start), queries a real vault and runs the real ``dates_in_year`` rule on a real
Parquet file; every child must print the same answers.
"""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from _helpers.proc import child_env
from wrdsvault import Warehouse
from wrdsvault.sources import SampleSource

#: From UTC-12 to UTC+14, and the one the bug report named.
ZONES = ["UTC", "Asia/Tokyo", "America/Los_Angeles", "Pacific/Kiritimati", "Etc/GMT+12"]

#: Half an hour before 2020 in UTC: already 2020 in Tokyo, still 2019 in Los Angeles.
LATE = "2019-12-31 23:30:00+00"

CHILD = r"""
import json, sys
from pathlib import Path
from wrdsvault import Warehouse
from wrdsvault.datasets import DatasetSpec
from wrdsvault.validation import DatesInYear, PartitionData

vault, parquet = sys.argv[1], Path(sys.argv[2])
ts = "timestamptz '" + sys.argv[3] + "'"
sql = (
    f"select year({ts}) as y, month({ts}) as m, hour({ts}) as h, {ts}::varchar as s, "
    f"date_trunc('day', {ts})::varchar as d, {ts}::date::varchar as dt, "
    f"strftime({ts}, '%Y-%m-%d %H:%M %Z') as f"
)
out = {}
with Warehouse(vault, create=False) as wh:
    df = wh.query(sql)
    out["query"] = {k: str(v) for k, v in df.iloc[0].items()}
    out["pandas"] = str(wh.query(f"select {ts} as t")["t"][0])
    out["arrow_type"] = str(wh.arrow(f"select {ts} as t").schema.field("t").type)
    with wh.snapshot() as snap:
        out["lazy"] = [str(v) for v in snap.sql(sql).fetchall()[0]]
spec = DatasetSpec(name="test.events", partition_column="ts")
for year in (2019, 2020):
    part = PartitionData(
        spec=spec, year=year, path=parquet, row_count=1, source_row_count=1, previous=None,
        columns=["id", "ts"],
    )
    try:
        finding = DatesInYear().check(part)
    finally:
        part.close()
    out[f"dates_in_year_{year}"] = None if finding is None else finding.message
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def vault(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A small synced vault and a Parquet file with one timestamptz row at LATE."""
    base = tmp_path_factory.mktemp("tz")
    root = base / "vault"
    with Warehouse(
        root, source=SampleSource(seed=0, years=range(2020, 2021), n_securities=10)
    ) as wh:
        assert wh.sync("ff.factors_monthly").committed
    parquet = base / "events.parquet"
    late = datetime(2019, 12, 31, 23, 30, tzinfo=timezone.utc)
    pq.write_table(
        pa.table({"id": [1], "ts": pa.array([late], pa.timestamp("us", tz="UTC"))}), parquet
    )
    return root, parquet


def run_in_zone(zone: str, root: Path, parquet: Path) -> dict[str, Any]:
    proc = subprocess.run(
        [sys.executable, "-c", CHILD, str(root), str(parquet), LATE],
        env=child_env(TZ=zone),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result: dict[str, Any] = json.loads(proc.stdout)
    return result


def test_answers_do_not_depend_on_the_host_time_zone(vault: tuple[Path, Path]) -> None:
    """year(), casts, pandas, arrow and the dates_in_year rule agree under five TZ values."""
    root, parquet = vault
    results = {zone: run_in_zone(zone, root, parquet) for zone in ZONES}
    utc = results["UTC"]
    assert utc["query"] == {
        "y": "2019",
        "m": "12",
        "h": "23",
        "s": "2019-12-31 23:30:00+00",
        "d": "2019-12-31 00:00:00+00",
        "dt": "2019-12-31",
        "f": "2019-12-31 23:30 UTC",
    }
    assert utc["pandas"] == "2019-12-31 23:30:00+00:00"
    assert utc["arrow_type"] == "timestamp[us, tz=UTC]"
    assert utc["lazy"] == list(utc["query"].values())
    assert utc["dates_in_year_2019"] is None
    assert "outside 2020" in utc["dates_in_year_2020"]
    for zone, result in results.items():
        assert result == utc, zone
