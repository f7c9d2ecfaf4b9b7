"""重复收费 (R-DUP-001), three windows of national batch 7:

- same_day: 急诊监护费 added on the day of an emergency visit's 急诊诊查费 (the consultation
  line, already there, is the violating one; the monitoring line is related);
- same_hour: 持续有创性血压监测 added in the hour of a 心电监测 line (心电监测 is violating);
- same_visit: 甲状腺癌扩大根治术 and, a day later, 甲状腺全切术 (the partial operation is
  violating).
"""

import datetime as dt

import polars as pl

from .. import catalog as cat
from ..inject import Context, Injector
from ._common import split


def inject(ctx: Context) -> None:
    a, b, c = split(ctx.count(), 3)
    er = ctx.data.lines.filter(pl.col("code") == cat.ER_CONSULT)["vi"]
    for v in ctx.take_visits(a, pl.col("vi").is_in(er.implode())):
        cons = ctx.rows_of(v, lambda r: r["code"] == cat.ER_CONSULT)[0]
        ctx.add_line(v, cat.ER_MONITOR, cons["time"] + dt.timedelta(minutes=10), 1)
        ctx.expect("R-DUP-001", v, cons["bkkp_sn"], "同日收费急诊监护费与急诊诊查费")
    ecg = ctx.data.lines.filter(pl.col("code") == cat.ECG_MONITOR)["vi"].unique()
    for v in ctx.take_visits(b, pl.col("vi").is_in(ecg.implode())):
        mon = ctx.rows_of(v, lambda r: r["code"] == cat.ECG_MONITOR)[0]
        t = mon["time"].replace(minute=59, second=0) if mon["time"].minute < 59 else mon["time"]
        ctx.add_line(v, cat.IBP_MONITOR, t, 2)
        ctx.expect("R-DUP-001", v, mon["bkkp_sn"], "同一小时收费持续有创性血压监测与心电监测")
    for v in ctx.take_visits(c, pl.col("inpatient") & (pl.col("bed_days") >= 3) & (pl.col("med_type") != "28")):
        ctx.add_line(v, cat.THYROID_RADICAL, ctx.at(ctx.day_of(v, 1), 9, 30), 1)
        sn = ctx.add_line(v, cat.THYROID_TOTAL, ctx.at(ctx.day_of(v, 2), 10, 0), 1)
        ctx.expect("R-DUP-001", v, sn, "同次住院收费甲状腺癌扩大根治术与甲状腺全切术")


INJECTOR = Injector("duplicate_charge", inject)
