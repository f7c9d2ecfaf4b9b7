"""关联缺失 (R-CMP-001): 一次性使用输液器 billed on an outpatient visit with no 静脉输液 (the
clean data bills the set only beside an infusion). Near misses (not flagged): on a quarter as
many outpatient visits the set is billed with a 静脉输液."""

import polars as pl

from .. import catalog as cat
from ..inject import Context, Injector


def inject(ctx: Context) -> None:
    for v in ctx.take_visits(ctx.count(), ~pl.col("inpatient")):
        sn = ctx.add_line(v, cat.INFUSION_SET, ctx.time_in(v), int(ctx.rng.integers(1, 3)))
        ctx.expect("R-CMP-001", v, sn, "一次性使用输液器 本次就诊未收静脉输液")
    for v in ctx.take_visits(max(1, ctx.count() // 4), ~pl.col("inpatient")):
        t = ctx.time_in(v)
        ctx.add_line(v, cat.INFUSION, t)
        ctx.add_line(v, cat.INFUSION_SET, t)


INJECTOR = Injector("companion_required", inject)
