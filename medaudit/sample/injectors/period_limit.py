"""周期超频次 (R-PER-001): 糖化血红蛋白测定 a second time within 15 days.

On a stay of a person with no other visit (so no unit of another visit can be paid within the
period), a 糖化血红蛋白测定 is billed on day 0 (diabetic stays already have it) and again 1 to
14 days later: the later line is the excess unit, the day-0 line is related.
"""

import datetime as dt

import polars as pl

from .. import catalog as cat
from ..inject import Context, Injector


def inject(ctx: Context) -> None:
    stays = (pl.col("inpatient") & (pl.col("med_type") != "28") & (pl.col("bed_days") >= 3)
             & (pl.col("person_visits") == 1))
    for v in ctx.take_visits(ctx.count(), stays):
        if ctx.lines_of(v).filter(pl.col("code") == cat.HBA1C).is_empty():
            ctx.add_line(v, cat.HBA1C, v["begntime"] + dt.timedelta(minutes=70))
        k = int(ctx.rng.integers(1, min(v["bed_days"], 15)))
        sn = ctx.add_line(v, cat.HBA1C, ctx.at(ctx.day_of(v, k), 8, 30))
        ctx.expect("R-PER-001", v, sn, f"糖化血红蛋白测定 入院后第 {k} 天再次收费（15天内限1次）")


INJECTOR = Injector("period_limit", inject, rate=0.01)
