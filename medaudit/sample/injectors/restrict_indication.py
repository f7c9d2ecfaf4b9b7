"""限适应症: 艾迪注射液 (cancer patients only) at a visit without a C diagnosis (R-IND-001).

The visits are at level 2 or 3, so the line breaks only the indication, not R-LVL-001.
"""

import polars as pl

from .. import catalog as cat
from ..inject import Context, Injector
from ._common import bill_item


def inject(ctx: Context) -> None:
    no_cancer = ~pl.col("main_diag").str.starts_with("C") & ~pl.col("second_diag").fill_null("").str.starts_with("C")
    bill_item(
        ctx, "R-IND-001", ctx.count(), no_cancer & (pl.col("level") >= 2), cat.AIDI, "诊断 {main_diag} 收费【{name}】"
    )


INJECTOR = Injector("restrict_indication", inject)
