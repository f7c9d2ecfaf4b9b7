"""限险种: a work-injury-only drug (疤痕止痒软化膏) billed to basic medical insurance (R-INS-001)."""

import polars as pl

from .. import catalog as cat
from ..inject import Context, Injector
from ._common import bill_item


def inject(ctx: Context) -> None:
    bill_item(
        ctx,
        "R-INS-001",
        ctx.count(),
        pl.col("insutype") != "410",
        cat.SCAR_CREAM,
        "险种 {insutype} 收费工伤用药【{name}】",
    )


INJECTOR = Injector("restrict_insutype", inject)
