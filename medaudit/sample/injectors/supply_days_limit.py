"""超量开药 (R-SUP-001 / R-SUP-002): an outpatient prescription written for 20 to 60 days, or
discharge medication for 21 to 45 days (the clean data stays within 14). Near misses (not
flagged): on a quarter as many outpatient visits a prescription of exactly 15 days."""

import polars as pl

from ..inject import Context, Injector
from ._common import split


def inject(ctx: Context) -> None:
    a, b = split(ctx.count(), 2)
    lines = ctx.data.lines
    opt = lines.filter(pl.col("prd_days").is_not_null() & pl.col("dscg").is_null())["vi"].unique()
    for v in ctx.take_visits(a, ~pl.col("inpatient") & pl.col("vi").is_in(opt.implode())):
        row = ctx.rows_of(v, lambda r: r["prd_days"] is not None)[0]
        days = int(ctx.rng.integers(20, 61))
        ctx.edit_line(row["bkkp_sn"], prd_days=days)
        ctx.expect("R-SUP-001", v, row["bkkp_sn"], f"{ctx.item(row['code']).name} 门诊开药 {days} 天（限15天）")
    for v in ctx.take_visits(max(1, ctx.count() // 4), ~pl.col("inpatient") & pl.col("vi").is_in(opt.implode())):
        row = ctx.rows_of(v, lambda r: r["prd_days"] is not None)[0]
        ctx.edit_line(row["bkkp_sn"], prd_days=15)
    dis = lines.filter(pl.col("dscg") == "1")["vi"].unique()
    for v in ctx.take_visits(b, pl.col("inpatient") & pl.col("vi").is_in(dis.implode())):
        row = ctx.rows_of(v, lambda r: r["dscg"] == "1")[0]
        days = int(ctx.rng.integers(21, 46))
        ctx.edit_line(row["bkkp_sn"], prd_days=days)
        ctx.expect("R-SUP-002", v, row["bkkp_sn"], f"{ctx.item(row['code']).name} 出院带药 {days} 天（限14天）")


INJECTOR = Injector("supply_days_limit", inject)
