"""死亡后就医 (R-DTH-001): fees after the person's death.

Two patterns, on the person's last visit so no later visit is affected:
- civil registration (``psn_death``) says the person died before an outpatient visit: every
  line of the visit is violating (a dead person's card in use);
- the stay records the death (``die_date``, ``dscg_way`` 5) but the hospital went on billing
  until discharge: the lines dated after the death day are violating.
"""

import datetime as dt

import polars as pl

from ..inject import Context, Injector
from ._common import split


def inject(ctx: Context) -> None:
    a, b = split(ctx.count(), 2)
    last = pl.col("last_of_person") & ~pl.col("died")
    for v in ctx.take_visits(a, last & ~pl.col("inpatient")):
        die = v["begntime"].date() - dt.timedelta(days=int(ctx.rng.integers(1, 20)))
        ctx.add_row("psn_death", psn_no=v["psn_no"], die_date=die)
        for sn in ctx.lines_of(v)["bkkp_sn"]:
            ctx.expect("R-DTH-001", v, sn, f"参保人 {die} 死亡后门诊收费")
    for v in ctx.take_visits(b, last & pl.col("inpatient") & (pl.col("los_dd") >= 2)):
        die = ctx.day_of(v, int(ctx.rng.integers(0, v["los_dd"])))
        ctx.edit_visit(v["mdtrt_id"], die_date=die, dscg_way="5")
        for sn in [r["bkkp_sn"] for r in ctx.rows_of(v, lambda r: r["time"].date() > die)]:
            ctx.expect("R-DTH-001", v, sn, f"住院期间 {die} 死亡后继续收费")


INJECTOR = Injector("after_death", inject)
