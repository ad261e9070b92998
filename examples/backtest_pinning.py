"""Pin a backtest to a snapshot: results stay reproducible while the vault keeps updating.

    python examples/backtest_pinning.py [VAULT_DIR]

The backtest reads only through ``wh.snapshot(ref)`` and logs the snapshot id and fingerprint next
to its result. After a WRDS update (vintage 2) the latest data differ, but the pinned backtest
gives the identical result.
"""

from __future__ import annotations

import sys
import tempfile

import wrdsvault
from wrdsvault.sources import SampleSource

DATASETS = ["crsp.msf", "ff.factors_monthly"]

# A size strategy: each month, long the smallest quintile of last month's market equity.
SMALL_MINUS_MARKET = """
with me as (
    select permno, date, cast(ret as double) as ret,
           lag(abs(cast(prc as double)) * shrout) over (partition by permno order by date) as me_lag
    from crsp.msf
),
ranked as (
    select *, ntile(5) over (partition by date order by me_lag) as q
    from me where me_lag > 0 and ret is not null
)
select avg(ret) filter (where q = 1) - avg(ret) as excess, count(distinct date) as months
from ranked
"""


def backtest(wh: wrdsvault.Warehouse, ref: str) -> dict[str, object]:
    with wh.snapshot(ref) as snap:
        row = snap.query(SMALL_MINUS_MARKET).iloc[0]
        return {
            "snapshot": snap.id,
            "fingerprint": snap.fingerprint,
            "mean_excess": round(float(row["excess"]), 10),
            "months": int(row["months"]),
        }


def main(root: str) -> None:
    def source(vintage: int) -> SampleSource:
        return SampleSource(seed=1, years=range(2018, 2024), n_securities=300, vintage=vintage)

    with wrdsvault.Warehouse(root, source=source(1)) as wh:
        wh.sync(DATASETS)
        wh.tag("paper-2025", force=True)
        before = backtest(wh, "paper-2025")
        print("pinned  :", before)

        wh.source = source(2)  # WRDS publishes an update
        print(wh.sync(DATASETS).summary())
        print("latest  :", backtest(wh, "latest"))
        after = backtest(wh, "paper-2025")
        print("pinned  :", after)
        assert after == before, "a pinned backtest must not change"


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else tempfile.mkdtemp(prefix="wrdsvault-backtest-"))
