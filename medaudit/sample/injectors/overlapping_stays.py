"""重复住院 (R-OVL-001) and 住院期间门诊 (R-OVL-002): a person in two places at once.

Both start from an existing plain stay of at least 2 nights, the person's last visit:

- a second stay at another institution admitted on a day strictly inside the first (from the
  day after admission to the day before discharge: an overlap of 1 day at least). It starts
  later, so it is the flagged one; every line of it is violating;
- a clinic visit at another institution on a day strictly inside the stay (not the admission or
  discharge day): every line of the clinic visit is violating.

The added visits are plain (see :mod:`._visits`) and begin before the stay ends, so neither is
a readmission.

Near misses, not flagged (no key row): a stay at another institution admitted on the afternoon
of the discharge day (a transfer: the stays only touch); a clinic visit at another institution
on the discharge day, after discharge; a clinic visit inside the stay at the same institution.
"""

import datetime as dt

import polars as pl

from ..inject import Context, Injector
from ._common import split
from ._visits import add_clinic_visit, add_stay, other_institution


def inject(ctx: Context) -> None:
    a, b = split(ctx.count(), 2)
    stays = (
        pl.col("inpatient")
        & (pl.col("med_type") != "28")
        & pl.col("last_of_person")
        & ~pl.col("died")
        & (pl.col("los_dd") >= 2)
    )
    for v in ctx.take_visits(a, stays):
        k = int(ctx.rng.integers(1, v["los_dd"]))
        begin = dt.datetime.combine(ctx.day_of(v, k), dt.time(15, int(ctx.rng.integers(0, 60))))
        nv, sns = add_stay(ctx, v, begin, int(ctx.rng.integers(1, 5)), inst=other_institution(ctx, v["fixmedins_code"]))
        for sn in sns:
            ctx.expect("R-OVL-001", nv, sn, f"住院期间（{v['mdtrt_id']}）在 {nv['fixmedins_code']} 另行住院")
    for v in ctx.take_visits(b, stays):
        k = int(ctx.rng.integers(1, v["los_dd"]))
        begin = dt.datetime.combine(ctx.day_of(v, k), dt.time(13, int(ctx.rng.integers(0, 60))))
        nv, sns = add_clinic_visit(ctx, v, begin, inst=other_institution(ctx, v["fixmedins_code"]))
        for sn in sns:
            ctx.expect("R-OVL-002", nv, sn, f"住院期间（{v['mdtrt_id']}）在 {nv['fixmedins_code']} 门诊就医")
    for kind, n in zip(("transfer", "after_discharge", "same_place"), split(max(3, ctx.count() // 2), 3)):
        for v in ctx.take_visits(n, stays):
            last_day = v["endtime"].date()
            if kind == "transfer":
                add_stay(
                    ctx,
                    v,
                    dt.datetime.combine(last_day, dt.time(14, 0)),
                    2,
                    inst=other_institution(ctx, v["fixmedins_code"]),
                )
            elif kind == "after_discharge":
                add_clinic_visit(
                    ctx,
                    v,
                    dt.datetime.combine(last_day, dt.time(14, 0)),
                    inst=other_institution(ctx, v["fixmedins_code"]),
                )
            else:
                add_clinic_visit(ctx, v, dt.datetime.combine(ctx.day_of(v, 1), dt.time(13, 0)))


INJECTOR = Injector("overlapping_stays", inject, rate=0.01)
