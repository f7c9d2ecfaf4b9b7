"""限支付疗程 (R-CRS-001): 丁苯酞氯化钠注射液 paid beyond its 14-day course.

On a long stay (stroke patients first), the drug is billed once a day from the first day of
the stay for 15 to 17 days (as the stay allows): the lines dated 14 or more days after the first use are violating
(the first day's line is related, the days between are within the course). Long stays are
few, hence the low rate.
"""

import datetime as dt

import polars as pl

from .. import catalog as cat
from ..inject import Context, Injector


def inject(ctx: Context) -> None:
    n = ctx.count()
    long = pl.col("inpatient") & (pl.col("med_type") != "28") & (pl.col("bed_days") >= 16)
    picked = ctx.take_visits(n, long & (pl.col("main_diag") == "I63.900"))
    if len(picked) < n:
        picked += ctx.take_visits(n - len(picked), long)
    for v in picked:
        first = v["begntime"] + dt.timedelta(minutes=95)
        shift = (first.date() - v["begntime"].date()).days  # 1 when admitted late in the evening
        ctx.add_line(v, cat.BUTYLPHTHALIDE, first)
        last = min(v["bed_days"] - 1 - shift, int(ctx.rng.integers(14, 17)))
        for d in range(1, last + 1):
            sn = ctx.add_line(v, cat.BUTYLPHTHALIDE, ctx.at(first.date() + dt.timedelta(days=d), 9, 5))
            if d >= 14:
                ctx.expect(
                    "R-CRS-001", v, sn, f"丁苯酞氯化钠注射液 首次使用 {first.date()}，第 {d + 1} 天仍收费（限支付14天）"
                )


INJECTOR = Injector("course_limit", inject, rate=0.006)
