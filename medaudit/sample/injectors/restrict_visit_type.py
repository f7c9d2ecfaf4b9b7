"""限就医方式: parenteral nutrition (inpatients only) billed at an outpatient visit (R-VIS-001)."""

import polars as pl

from .. import catalog as cat
from ..inject import Context, Injector
from ._common import bill_item


def inject(ctx: Context) -> None:
    bill_item(
        ctx,
        "R-VIS-001",
        ctx.count(),
        pl.col("med_type").is_in(["11", "13", "14"]),
        cat.PARENTERAL,
        "门诊（{med_type}）收费限住院药品【{name}】",
    )


INJECTOR = Injector("restrict_visit_type", inject)
