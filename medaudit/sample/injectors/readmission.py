"""分解住院 (R-RDM-001): the person is admitted again 0 to 15 days after a discharge, at the same
institution with the same main diagnosis.

The earlier stay is an existing plain stay, the person's last visit (so no later visit of the
person comes close), at a level-1 institution (分解住院 is typical of township hospitals, and
the peer-outlier rule on readmission rates looks at level 2 and 3 only, so this readmission
does not make a department an outlier there). The new stay (2 to 5 nights, plain lines, see
:mod:`._visits`) is the flagged one: every line of it is violating. Gaps of 0 (readmitted the
afternoon of the discharge day) and 15 days are drawn as often as any other.

Near misses, not flagged (no key row): a stay 16 to 20 days after the discharge; one within 15
days at another level-1 institution; one within 15 days at the same institution with a main
diagnosis of another category.
"""

import datetime as dt

import polars as pl

from .. import catalog as cat
from ..inject import Context, Injector
from ._common import split
from ._visits import add_stay


def inject(ctx: Context) -> None:
    where = (
        pl.col("inpatient")
        & (pl.col("med_type") != "28")
        & pl.col("last_of_person")
        & ~pl.col("died")
        & (pl.col("level") == 1)
    )
    for v in ctx.take_visits(ctx.count(), where):
        gap = int(ctx.rng.integers(0, 16))
        day = v["endtime"].date() + dt.timedelta(days=gap)
        begin = dt.datetime.combine(day, dt.time(14 if gap == 0 else 9, int(ctx.rng.integers(0, 60))))
        nv, sns = add_stay(ctx, v, begin, int(ctx.rng.integers(2, 6)))
        for sn in sns:
            ctx.expect(
                "R-RDM-001", nv, sn, f"{v['mdtrt_id']} 出院后 {gap} 天再次入院，主诊断 {v['main_diag'][:3]} 相同"
            )
    level1 = [x[0] for x in cat.INSTITUTIONS if x[2] in ("08", "09", "10", "14")]
    for kind, n in zip(("late", "elsewhere", "other_diag"), split(max(3, ctx.count() // 2), 3)):
        for v in ctx.take_visits(n, where):
            gap = int(ctx.rng.integers(16, 21)) if kind == "late" else int(ctx.rng.integers(1, 16))
            begin = dt.datetime.combine(v["endtime"].date() + dt.timedelta(days=gap), dt.time(9, 15))
            if kind == "elsewhere":
                others = [c for c in level1 if c != v["fixmedins_code"]]
                add_stay(ctx, v, begin, 3, inst=others[int(ctx.rng.integers(0, len(others)))])
            elif kind == "other_diag":
                add_stay(
                    ctx,
                    v,
                    begin,
                    3,
                    main_diag="K52.900" if not v["main_diag"].startswith("K52") else "J18.900",
                    second_diag=None,
                )
            else:
                add_stay(ctx, v, begin, 3)


INJECTOR = Injector("readmission", inject, rate=0.01)
