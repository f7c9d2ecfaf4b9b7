"""挂床住院 (R-BOS-001): a new stay of 6 to 9 nights whose nursing stops on 3 days in the middle:
those days hold only a bed fee (01) and a ward round (02, not care), so the stay has 3
bed-only days, one more than max_bed_only_days 2. Every line of the stay is violating (whole
visit). Day 0 has an infusion (05), so the stay is not an outpatient_as_inpatient case either
(and it is longer than 3 days anyway).

Near miss, not flagged: the same stay with exactly 2 bed-only days (the limit).
The stays are new, for the person of a plain last visit, 20 to 40 days after it.
"""

import datetime as dt

import polars as pl

from ..inject import Context, Injector
from ._visits import add_short_stay


def _begin(ctx: Context, v: dict) -> dt.datetime:
    last = v["endtime"] or v["begntime"]
    return dt.datetime.combine(
        last.date() + dt.timedelta(days=int(ctx.rng.integers(20, 41))), dt.time(9, int(ctx.rng.integers(0, 60)))
    )


def inject(ctx: Context) -> None:
    where = pl.col("last_of_person") & ~pl.col("died") & (pl.col("med_type") != "28")
    for v in ctx.take_visits(ctx.count(), where):
        nights = int(ctx.rng.integers(6, 10))
        nv, sns = add_short_stay(
            ctx, v, _begin(ctx, v), nights, empty_days=(2, 3, 4), treatment=True, main_diag="I63.900", second_diag=None
        )
        days = "、".join(str(nv["begntime"].date() + dt.timedelta(days=d)) for d in (2, 3, 4))
        for sn in sns:
            ctx.expect("R-BOS-001", nv, sn, f"{days} 只有床位费和查房，无护理用药检查")
    for v in ctx.take_visits(max(1, ctx.count() // 2), where):
        add_short_stay(
            ctx, v, _begin(ctx, v), 6, empty_days=(2, 3), treatment=True, main_diag="I63.900", second_diag=None
        )


INJECTOR = Injector("bed_only_stay", inject, rate=0.004)
