"""自定义 SQL (R-SQL-001 门诊收取住院诊查费): a 住院诊查费 line billed on a plain clinic
visit. The rule's query flags inpatient consultation fees outside inpatient stays; the clean
data bills 住院诊查费 only on stays."""

import polars as pl

from .. import catalog as cat
from ..inject import Context, Injector
from ._common import bill_item


def inject(ctx: Context) -> None:
    bill_item(ctx, "R-SQL-001", ctx.count(), ~pl.col("inpatient"), cat.IPT_CONSULT, "门诊就诊收取【{name}】")


INJECTOR = Injector("sql", inject, rate=0.01)
