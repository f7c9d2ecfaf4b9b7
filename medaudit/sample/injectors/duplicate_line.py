"""重复计费 (R-DLN-001): a lab, exam, drug or consumable line sent twice (same code, time,
quantity and price). The copy has the higher ``bkkp_sn`` and is violating; the original is
related. Codes with a daily limit, a period or a duplicate-charge pair are never copied, so
the copy breaks no other rule.
"""

import polars as pl

from .. import catalog as cat
from ..inject import Context, Injector

SAFE = cat.LABS + cat.EXAMS + cat.ORAL_DRUGS + cat.IPT_DRUGS + [cat.INFUSION_SET]


def inject(ctx: Context) -> None:
    has = ctx.data.lines.filter(pl.col("code").is_in(SAFE))["vi"].unique()
    for v in ctx.take_visits(ctx.count(), pl.col("vi").is_in(has.implode())):
        lines = ctx.lines_of(v).filter(pl.col("code").is_in(SAFE))
        row = lines.row(int(ctx.rng.integers(0, lines.height)), named=True)
        sn = ctx.add_line(v, row["code"], row["time"], row["cnt"], dscg=row["dscg"], prd_days=row["prd_days"])
        ctx.expect("R-DLN-001", v, sn, f"{ctx.item(row['code']).name} 与 {row['bkkp_sn']} 同一时间重复计费")


INJECTOR = Injector("duplicate_line", inject)
