"""重复用药 (R-ING-001): a second maker's 阿莫西林胶囊 prescribed on the day of an outpatient
visit's 阿莫西林胶囊 (same generic group, the first 10 code characters). The code with the
smaller amount that day is violating, the dearer one related: usually the added line (8.60
a box against 12.50), but when 2 or 3 boxes of it outweigh the original, the original line.
"""

import datetime as dt

import polars as pl

from .. import catalog as cat
from ..inject import Context, Injector


def inject(ctx: Context) -> None:
    amox = ctx.data.lines.filter(pl.col("code") == cat.AMOXICILLIN)["vi"].unique()
    for v in ctx.take_visits(ctx.count(), ~pl.col("inpatient") & pl.col("vi").is_in(amox.implode())):
        row = ctx.rows_of(v, lambda r: r["code"] == cat.AMOXICILLIN)[0]
        cnt = int(ctx.rng.integers(1, 4))
        sn = ctx.add_line(v, cat.AMOXICILLIN_B, row["time"] + dt.timedelta(minutes=2), cnt, prd_days=row["prd_days"])
        mine = cnt * ctx.price(cat.AMOXICILLIN_B, v)
        theirs = row["cnt"] * ctx.price(cat.AMOXICILLIN, v)
        cheaper = sn if mine < theirs else row["bkkp_sn"]
        ctx.expect(
            "R-ING-001", v, cheaper, f"同日两厂家阿莫西林胶囊（{mine / 100:.2f} 元 / {theirs / 100:.2f} 元），扣较低者"
        )


INJECTOR = Injector("duplicate_ingredient", inject)
