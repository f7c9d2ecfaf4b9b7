"""超频次 (R-FRQ-001): a second 住院诊查费 on a day of a stay, or 心电监测 hours above 24 a day.

The added line is the day's latest, so the excess (taken from the latest lines first) lands on
it alone; the day's clean line of the code becomes a related line.
"""

import datetime as dt

import polars as pl

from .. import catalog as cat
from ..inject import Context, Injector
from ._common import split


def inject(ctx: Context) -> None:
    a, b = split(ctx.count(), 2)
    stays = pl.col("inpatient") & (pl.col("med_type") != "28") & (pl.col("bed_days") >= 2)
    for v in ctx.take_visits(a, stays):
        day = int(ctx.rng.integers(0, v["bed_days"]))
        d = ctx.day_of(v, day)
        t = max(r["time"] for r in ctx.rows_of(v, lambda r: r["code"] == cat.IPT_CONSULT and r["time"].date() == d))
        sn = ctx.add_line(v, cat.IPT_CONSULT, t + dt.timedelta(minutes=3), 1)
        ctx.expect("R-FRQ-001", v, sn, f"{ctx.day_of(v, day)} 住院诊查费收费 2 次")
    ecg = (
        ctx.data.lines.filter(pl.col("code") == cat.ECG_MONITOR)
        .group_by("vi")
        .agg(pl.col("time").first(), pl.col("cnt").first())
    )
    for v in ctx.take_visits(b, pl.col("vi").is_in(ecg["vi"].implode())):
        row = ecg.filter(pl.col("vi") == v["vi"]).row(0, named=True)
        extra = int(ctx.rng.integers(1, 5))
        cnt = 24 - int(row["cnt"]) + extra
        sn = ctx.add_line(v, cat.ECG_MONITOR, row["time"] + dt.timedelta(minutes=30), cnt)
        ctx.expect("R-FRQ-001", v, sn, f"心电监测当日共 {24 + extra} 小时")


INJECTOR = Injector("frequency_limit", inject)
