"""Quickstart: build a vault from the sample source, query it, pin a snapshot.

python examples/quickstart.py [VAULT_DIR]
"""

from __future__ import annotations

import sys
import tempfile

import wrdsvault
from wrdsvault.sources import SampleSource


def main(root: str) -> None:
    source = SampleSource(seed=0, years=range(2019, 2024), n_securities=300)
    with wrdsvault.Warehouse(root, source=source) as wh:
        report = wh.sync(["crsp.msf", "crsp.msenames", "ff.factors_monthly"])
        print(report.summary())

        # Equal-weighted monthly return of US common stocks (shrcd 10/11) vs the FF market factor.
        df = wh.query(
            """
            select date_trunc('month', f.date)::date as month,
                   avg(cast(f.ret as double)) as ew_ret, any_value(ff.mktrf + ff.rf) as mkt
            from crsp.msf as f
            join crsp.msenames as n
              on f.permno = n.permno and f.date between n.namedt and n.nameendt
            join ff.factors_monthly as ff on ff.date = date_trunc('month', f.date)
            where n.shrcd in (10, 11)
            group by 1 order by 1
            """
        )
        print(df.tail())

        tag = "quickstart"
        wh.tag(tag, force=True)
        snap = wh.snapshot(tag)
        print(f"pinned {tag}: id={snap.id} fingerprint={snap.fingerprint[:16]}")
        print(f"crsp.msf files: {len(snap.files('crsp.msf'))}")
        snap.close()


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else tempfile.mkdtemp(prefix="wrdsvault-quickstart-"))
