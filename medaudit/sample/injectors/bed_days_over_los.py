"""床位/护理天数超住院天数: a bed fee (R-BED-001) or a nursing fee (R-BED-002) on the
discharge day, one more day than the stay has. No other day gets a second fee, so the daily
limits are not broken; the added line is the latest, so the excess lands on it."""

import polars as pl

from .. import catalog as cat
from ..inject import Context, Injector
from ._common import split


def inject(ctx: Context) -> None:
    a, b = split(ctx.count(), 2)
    stays = pl.col("inpatient") & (pl.col("med_type") != "28") & (pl.col("los_dd") >= 1)
    for rule, code, n, what in (("R-BED-001", cat.BED, a, "床位费"), ("R-BED-002", None, b, "护理费")):
        for v in ctx.take_visits(n, stays):
            if code is None:  # the nursing level the stay is billed at
                nurse = ctx.rows_of(v, lambda r: r["code"] in (cat.NURSE_1, cat.NURSE_2, cat.NURSE_NEONATE))
                use = nurse[0]["code"]
            else:
                use = code
            end = v["endtime"]
            sn = ctx.add_line(v, use, end.replace(hour=7, minute=5, second=0), 1)
            ctx.expect(rule, v, sn, f"住院 {v['bed_days']} 天，出院日另收{what}")


INJECTOR = Injector("bed_days_over_los", inject)
