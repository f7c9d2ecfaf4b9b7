"""限年龄: a child's item for an adult (R-AGE-001), an infant's for an older child
(R-AGE-001), occupational training past working age (R-AGE-002)."""

import polars as pl

from .. import catalog as cat
from ..inject import Context, Injector
from ._common import bill_item, split

YEAR = 365


def inject(ctx: Context) -> None:
    a, b, c = split(ctx.count(), 3)
    # age_days is the age at the visit start; margins keep the whole visit on the wrong side
    bill_item(
        ctx,
        "R-AGE-001",
        a,
        ~pl.col("inpatient") & (pl.col("age_days") >= 19 * YEAR),
        cat.CHILD_DENTAL,
        "成人收费【{name}】",
    )
    bill_item(
        ctx,
        "R-AGE-001",
        b,
        ~pl.col("inpatient") & pl.col("age_days").is_between(4 * YEAR, 17 * YEAR),
        cat.INFANT_CHECKUP,
        "3岁以上收费【{name}】",
    )
    bill_item(
        ctx,
        "R-AGE-002",
        c,
        ~pl.col("inpatient") & (pl.col("age_days") >= 62 * YEAR),
        cat.WORK_TRAINING,
        "超过就业年龄收费【{name}】",
    )


INJECTOR = Injector("restrict_age", inject)
