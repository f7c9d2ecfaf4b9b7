"""目录外 (R-CAT-001): 盐酸氨基葡萄糖胶囊, delisted from the national catalogue in 2019, billed.

The catalogue (``hilist``) keeps its row with the validity it had (2017-07-13 to 2019-12-31),
so the code is known but not in force on any fee date of the batch; the line, added to an
outpatient prescription with a normal supply, is violating.
"""

import polars as pl

from .. import catalog as cat
from ..inject import Batch, Context, Injector, Tables


def inject(ctx: Context) -> None:
    for v in ctx.take_visits(ctx.count(), ~pl.col("inpatient")):
        sn = ctx.add_line(
            v, cat.GLUCOSAMINE, ctx.time_in(v), int(ctx.rng.integers(1, 4)), prd_days=int(ctx.rng.integers(7, 15))
        )
        ctx.expect("R-CAT-001", v, sn, "盐酸氨基葡萄糖胶囊 2020年起调出医保目录")


def finish(ctx: Context | Batch, tables: Tables) -> None:
    code = pl.col("hilist_code") == cat.GLUCOSAMINE
    tables["hilist"] = tables["hilist"].with_columns(
        pl.when(code).then(pl.lit("2017-07-13")).otherwise(pl.col("begndate")).alias("begndate"),
        pl.when(code).then(pl.lit("2019-12-31")).otherwise(pl.col("enddate")).alias("enddate"),
    )


INJECTOR = Injector("not_in_catalog", inject, finish=finish)
