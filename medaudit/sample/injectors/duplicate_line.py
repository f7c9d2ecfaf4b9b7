"""重复计费 (R-DLN-001): a lab, exam, drug or consumable line sent twice (same code, time,
quantity and price). The copy has the higher ``bkkp_sn`` and is violating; the original is
related. Codes with a daily limit, a period or a duplicate-charge pair are never copied, so
the copy breaks no other rule. Near misses (not flagged): on a quarter as many visits a copy
with one more unit, or one second later.
"""

import datetime as dt

import polars as pl

from .. import catalog as cat
from ..inject import Context, Injector

SAFE = cat.LABS + cat.EXAMS + cat.ORAL_DRUGS + cat.IPT_DRUGS + [cat.INFUSION_SET]
SAFE_SET = frozenset(SAFE)


def inject(ctx: Context) -> None:
    has = ctx.data.lines.filter(pl.col("code").is_in(SAFE))["vi"].unique()
    for v in ctx.take_visits(ctx.count(), pl.col("vi").is_in(has.implode())):
        lines = ctx.rows_of(v, lambda r: r["code"] in SAFE_SET)
        row = lines[int(ctx.rng.integers(0, len(lines)))]
        sn = ctx.add_line(v, row["code"], row["time"], row["cnt"], dscg=row["dscg"], prd_days=row["prd_days"])
        ctx.expect("R-DLN-001", v, sn, f"{ctx.item(row['code']).name} 与 {row['bkkp_sn']} 同一时间重复计费")
    for i, v in enumerate(ctx.take_visits(max(1, ctx.count() // 4), pl.col("vi").is_in(has.implode()))):
        lines = ctx.rows_of(v, lambda r: r["code"] in SAFE_SET)
        row = lines[int(ctx.rng.integers(0, len(lines)))]
        cnt, t = (row["cnt"] + 1, row["time"]) if i % 2 == 0 else (row["cnt"], row["time"] + dt.timedelta(seconds=1))
        ctx.add_line(v, row["code"], t, cnt, dscg=row["dscg"], prd_days=row["prd_days"])


INJECTOR = Injector("duplicate_line", inject)
