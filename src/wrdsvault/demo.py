"""``wrdsvault demo``: build a vault from synthetic WRDS-shaped data, update it, query it.

Shows the whole loop a researcher runs, on data that needs no WRDS account: sync vintage 1, pin a
snapshot, sync vintage 2 (a WRDS update: one appended month, a few restated rows), see that only
the changed years were rewritten, what changed row by row (`Warehouse.diff`), and that the pinned
snapshot still gives its old answers.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Final, TextIO

from wrdsvault.errors import VaultFormatError
from wrdsvault.sources import SampleSource
from wrdsvault.warehouse import Warehouse

DEMO_DATASETS: Final = (
    "crsp.msf",
    "crsp.msenames",
    "crsp.msedelist",
    "crsp.ccmxpf_lnkhist",
    "comp.funda",
    "ff.factors_monthly",
)
DEMO_YEARS: Final = range(2015, 2025)

MARKET_CAP_BY_YEAR: Final = """
select year(date) as year,
       count(distinct permno) as securities,
       round(sum(abs(prc) * shrout) / 1e6, 1) as market_cap_bn   -- prc $, shrout in 1000s
from crsp.msf
where month(date) = 12
group by all
order by year
"""

# CCM-linked merge: December market equity joined to the fiscal year's book equity via the link
# table, on the CRSP date (not on datadate), as CCM merges in research code do.
BOOK_TO_MARKET: Final = """
with link as (
    select gvkey, cast(lpermno as integer) as permno, linkdt,
           coalesce(linkenddt, date '9999-12-31') as linkenddt
    from crsp.ccmxpf_lnkhist
    where linktype in ('LC', 'LU') and linkprim in ('P', 'C')
),
be as (
    select gvkey, datadate,
           coalesce(seq, ceq + coalesce(pstk, 0), "at" - lt)
         + coalesce(txditc, coalesce(txdb, 0) + coalesce(itcb, 0), 0)
         - coalesce(pstkrv, pstkl, pstk, 0) as be
    from comp.funda
    where indfmt = 'INDL' and datafmt = 'STD' and popsrc = 'D' and consol = 'C'
),
me as (
    select permno, date, abs(prc) * shrout / 1000.0 as me
    from crsp.msf where month(date) = 12 and prc is not null
)
select year(me.date) as year, count(*) as firms,
       round(median(be.be / me.me), 3) as median_bm
from me
join link on me.permno = link.permno and me.date between link.linkdt and link.linkenddt
join be on be.gvkey = link.gvkey and year(be.datadate) = year(me.date)
where me.me > 0 and be.be > 0
group by all
order by year
"""

PINNED_CHECK: Final = "select count(*) as msf_rows, round(sum(ret), 6) as sum_ret from crsp.msf"


def run_demo(root: Path, *, n_securities: int = 2000, out: TextIO | None) -> dict[str, Any]:
    """Run the demo in ``root`` (new or empty); print to ``out`` (None: quiet) and return facts.

    Raises:
        VaultFormatError: ``root`` is a non-empty folder that is not a vault.
    """
    started = time.monotonic()

    def say(text: str = "") -> None:
        if out is not None:
            out.write(text + "\n")
            out.flush()

    v1 = SampleSource(seed=0, years=DEMO_YEARS, vintage=1, n_securities=n_securities)
    with Warehouse(root, source=v1, create=True) as wh:
        if wh.snapshots():
            raise VaultFormatError(
                path=str(wh.root), problem="already holds snapshots; the demo needs a new folder"
            )
        say(f"wrdsvault demo: vault at {wh.root}")
        say(
            f"\n1. sync vintage 1 of {len(DEMO_DATASETS)} datasets ({DEMO_YEARS[0]}-"
            f"{DEMO_YEARS[-1]}, {n_securities:,} securities, synthetic WRDS-shaped data)"
        )
        first = wh.sync(list(DEMO_DATASETS))
        say(_indent(first.summary()))
        wh.tag("demo-v1", first.snapshot_id or "latest", force=True)
        pinned = wh.snapshot("demo-v1")
        before = pinned.query(PINNED_CHECK)

        say("\n2. sync again: nothing changed at the source")
        again = wh.sync(list(DEMO_DATASETS))
        say(_indent(again.summary()))

        say("\n3. vintage 2 arrives (WRDS appended a month and restated a few rows)")
        wh.source = SampleSource(seed=0, years=DEMO_YEARS, vintage=2, n_securities=n_securities)
        second = wh.sync(list(DEMO_DATASETS))
        say(_indent(second.summary()))

        say("\n4. what vintage 2 changed (wrdsvault diff demo-v1 latest): rows by key")
        rev = wh.diff("demo-v1", "latest")
        say(_indent(rev.summary()))
        restated = rev["crsp.msf"].changes("ret", min_abs=1e-4).df().head(5)
        if not restated.empty:
            say(_indent("first crsp.msf returns restated by 1 bp or more:"))
            say(_indent(restated.to_string(index=False)))

        say("\n5. market capitalisation by year (latest snapshot)")
        cap = wh.query(MARKET_CAP_BY_YEAR)
        say(_indent(cap.to_string(index=False)))

        say("\n6. CCM-linked merge of crsp.msf and comp.funda: median book-to-market")
        bm = wh.query(BOOK_TO_MARKET)
        say(_indent(bm.to_string(index=False)))

        say("\n7. the pinned snapshot 'demo-v1' still answers as before; latest has moved on")
        after_pinned = pinned.query(PINNED_CHECK)
        latest = wh.query(PINNED_CHECK)
        say(_indent(f"demo-v1: {after_pinned.to_dict('records')[0]}"))
        say(_indent(f"latest : {latest.to_dict('records')[0]}"))
        stable = before.equals(after_pinned)
        say(_indent(f"pinned answer unchanged: {stable}"))
        pinned.close()

        say("\n8. snapshots")
        snaps = wh.snapshots()
        for s in snaps:
            tags = f"  [{', '.join(s.tags)}]" if s.tags else ""
            rows = f"{s.row_count:>10,} rows"
            say(_indent(f"{s.snapshot_id}  {rows}  fingerprint {s.fingerprint[:12]}{tags}"))
        elapsed = time.monotonic() - started
        say(
            f"\ndone in {elapsed:.1f} s. Try: wrdsvault query --vault {wh.root} "
            '"select * from crsp.msf limit 5"'
        )
        return {
            "root": str(wh.root),
            "snapshots": [s.snapshot_id for s in snaps],
            "first_sync": first.to_json(),
            "resync_committed": again.committed,
            "second_sync": second.to_json(),
            "diff": rev.to_json(),
            "pinned_unchanged": bool(stable),
            "market_cap_rows": len(cap),
            "book_to_market_rows": len(bm),
            "seconds": round(elapsed, 2),
        }


def _indent(text: str) -> str:
    return "\n".join("   " + line for line in text.splitlines())
