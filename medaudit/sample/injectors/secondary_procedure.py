"""主次手术未折价 (R-SEC-001): two or three operations of the 肝胆手术组 on one day of a stay,
all at full price. The dearest (胆总管探查T管引流术) is the main operation (related); 胆囊切除术
and, on about a third of the stays, 肠粘连松解术 are violating. Decoys: on a quarter as many
stays the secondary operation is billed at 50%, as it should be, and must not be flagged.
"""

import polars as pl

from .. import catalog as cat
from ..inject import Context, Injector

STAYS = pl.col("inpatient") & (pl.col("med_type") != "28") & (pl.col("bed_days") >= 3) & (pl.col("level") >= 2)


def inject(ctx: Context) -> None:
    for v in ctx.take_visits(ctx.count(), STAYS):
        day = ctx.day_of(v, 1)
        ctx.add_line(v, cat.CBD_EXPLORE, ctx.at(day, 9, 30))
        sn = ctx.add_line(v, cat.CHOLECYSTECTOMY, ctx.at(day, 10, 40))
        ctx.expect("R-SEC-001", v, sn, "胆囊切除术 与主手术胆总管探查T管引流术同日，未按50%收费")
        if ctx.rng.random() < 1 / 3:
            sn = ctx.add_line(v, cat.ADHESIOLYSIS, ctx.at(day, 11, 15))
            ctx.expect("R-SEC-001", v, sn, "肠粘连松解术 与主手术胆总管探查T管引流术同日，未按50%收费")
    for v in ctx.take_visits(max(1, ctx.count() // 4), STAYS):  # decoys: properly discounted
        day = ctx.day_of(v, 1)
        ctx.add_line(v, cat.CBD_EXPLORE, ctx.at(day, 9, 30))
        ctx.add_line(v, cat.CHOLECYSTECTOMY, ctx.at(day, 10, 40), pric=ctx.price(cat.CHOLECYSTECTOMY, v) // 2)


INJECTOR = Injector("secondary_procedure", inject, rate=0.01)
