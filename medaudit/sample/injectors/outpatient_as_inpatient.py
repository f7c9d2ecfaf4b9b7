"""门诊转住院 (R-OAI-001): a short stay (1 to 3 nights, LOS = max_los drawn as often as any) with
no operation and only classes a clinic could give: bed (01), ward round (02), nursing (07), a
blood routine (04) and an oral drug (09). Every line of the stay is violating (whole visit).

The stay is new, for the person of a plain visit that is the person's last one, 20 to 40 days
after it (no readmission, no overlap). Near misses, not flagged: the same stay of 4 nights
(max_los + 1); one of 2 nights with an infusion (class 05, a treatment); one of 2 nights with a
procedure row in ``setl_list_oprn_d``.
"""

import datetime as dt

import polars as pl

from ..inject import Context, Injector
from ._common import split
from ._visits import add_short_stay


def _begin(ctx: Context, v: dict) -> dt.datetime:
    last = v["endtime"] or v["begntime"]
    return dt.datetime.combine(
        last.date() + dt.timedelta(days=int(ctx.rng.integers(20, 41))), dt.time(9, int(ctx.rng.integers(0, 60)))
    )


def inject(ctx: Context) -> None:
    where = pl.col("last_of_person") & ~pl.col("died") & (pl.col("med_type") != "28")
    for k, v in enumerate(ctx.take_visits(ctx.count(), where)):
        nights = 3 if k == 0 else int(ctx.rng.integers(1, 4))
        nv, sns = add_short_stay(ctx, v, _begin(ctx, v), nights, main_diag="K29.700", second_diag=None)
        for sn in sns:
            ctx.expect("R-OAI-001", nv, sn, f"住院 {nights} 天，无手术，费用只有床位、查房、护理、化验和口服药")
    for kind, n in zip(("long", "treated", "operated"), split(3, 3)):
        for v in ctx.take_visits(n, where):
            nv, _ = add_short_stay(
                ctx,
                v,
                _begin(ctx, v),
                4 if kind == "long" else 2,
                treatment=kind == "treated",
                main_diag="K29.700",
                second_diag=None,
            )
            if kind == "operated":
                ctx.add_row(
                    "setl_list_oprn_d",
                    mdtrt_id=nv["mdtrt_id"],
                    oprn_oprt_code="45.1300x001",
                    oprn_oprt_name="小肠内镜检查",
                    oprn_oprt_date=nv["begntime"] + dt.timedelta(hours=2),
                    main_oprn_flag="1",
                )


INJECTOR = Injector("outpatient_as_inpatient", inject, rate=0.004)
