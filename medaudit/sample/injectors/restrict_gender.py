"""限性别: 子宫造影 billed for a man, 精液常规检查 for a woman (rule R-SEX-001)."""

import polars as pl

from .. import catalog as cat
from ..inject import Context, Injector
from ._common import bill_item, split


def inject(ctx: Context) -> None:
    a, b = split(ctx.count(), 2)
    bill_item(ctx, "R-SEX-001", a, pl.col("gend") == "1", cat.HYSTEROGRAPHY, "男性患者收费【{name}】")
    bill_item(ctx, "R-SEX-001", b, pl.col("gend") == "2", cat.SEMEN_ROUTINE, "女性患者收费【{name}】")


INJECTOR = Injector("restrict_gender", inject)
