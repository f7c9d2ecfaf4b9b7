"""限机构等级: 参附注射液 (level 2 and above) billed by a level-1 institution (R-LVL-001)."""

import polars as pl

from .. import catalog as cat
from ..inject import Context, Injector
from ._common import bill_item


def inject(ctx: Context) -> None:
    bill_item(
        ctx, "R-LVL-001", ctx.count(), pl.col("level") < 2, cat.SHENFU, "一级机构（hosp_lv {hosp_lv}）收费【{name}】"
    )


INJECTOR = Injector("restrict_hosp_level", inject)
