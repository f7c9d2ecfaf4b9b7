"""费用超出就诊期 (R-OUT-001): a 胸部X线摄影 dated 1 to 3 days before the visit's start or after
its end (settled visits of living persons only, so no death rule is touched).

Near misses (not flagged, no key row): on a quarter as many visits a 胸部X线摄影 at 00:05 of the
start day, before the visit's start time: only dates count, so it is inside the visit.
"""

import datetime as dt

import polars as pl

from ..inject import Context, Injector

CHEST_XRAY = "002101010010000"


def inject(ctx: Context) -> None:
    for v in ctx.take_visits(ctx.count(), ~pl.col("died") & pl.col("endtime").is_not_null()):
        k = int(ctx.rng.integers(1, 4))
        if ctx.rng.random() < 0.5:
            day, note = v["begntime"].date() - dt.timedelta(days=k), f"早于就诊开始 {k} 天"
        else:
            day, note = v["endtime"].date() + dt.timedelta(days=k), f"晚于就诊结束 {k} 天"
        sn = ctx.add_line(v, CHEST_XRAY, ctx.at(day, 10, int(ctx.rng.integers(0, 60))))
        ctx.expect("R-OUT-001", v, sn, f"胸部X线摄影 {note}")
    early = pl.col("begntime") > pl.col("begntime").dt.truncate("1d") + pl.duration(minutes=5)
    for v in ctx.take_visits(max(1, ctx.count() // 4), ~pl.col("died") & pl.col("endtime").is_not_null() & early):
        ctx.add_line(v, CHEST_XRAY, ctx.at(v["begntime"].date(), 0, 5))


INJECTOR = Injector("fee_outside_visit", inject)
