"""冒名就诊 (R-IDM-001): the person of a plain outpatient visit is seen again 0 to 59 minutes
after its start at another institution (a new general outpatient visit: consultation and one
drug). The new visit is the later one (or, at a gap of 0, the one with the larger mdtrt_id: new
visits are numbered after every clean one), so it is flagged whole.

Near misses, not flagged: a visit at another institution exactly 60 minutes after
(min_gap_minutes); a visit at the same institution 10 minutes after.
"""

import datetime as dt

import polars as pl

from ..inject import Context, Injector
from ._visits import add_clinic_visit, other_institution


def inject(ctx: Context) -> None:
    where = ~pl.col("inpatient") & (pl.col("med_type") != "41")
    for k, v in enumerate(ctx.take_visits(ctx.count(), where)):
        gap = 0 if k == 0 else 59 if k == 1 else int(ctx.rng.integers(0, 60))
        inst = other_institution(ctx, v["fixmedins_code"])
        nv, sns = add_clinic_visit(ctx, v, v["begntime"] + dt.timedelta(minutes=gap), inst=inst)
        for sn in sns:
            ctx.expect("R-IDM-001", nv, sn, f"{v['mdtrt_id']}（{v['fixmedins_code']}）开始后 {gap} 分钟在 {inst} 就诊")
    for kind in ("sixty", "same_place"):
        for v in ctx.take_visits(1, where):
            if kind == "sixty":
                add_clinic_visit(
                    ctx, v, v["begntime"] + dt.timedelta(minutes=60), inst=other_institution(ctx, v["fixmedins_code"])
                )
            else:
                add_clinic_visit(ctx, v, v["begntime"] + dt.timedelta(minutes=10))


INJECTOR = Injector("identity_misuse", inject, rate=0.004)
