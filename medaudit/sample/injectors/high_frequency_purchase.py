"""高频购药 (R-HFP-001, at most 4 days a month per drug group): a person buys the same drug at
clinics on 5 or 6 distinct days of one calendar month.

It starts from a plain clinic visit of a person with no other visit, holding a western or
patent drug line; 4 or 5 new clinic visits (med_type 11, at random institutions, one line of
the same drug each, 5 days' supply) fall on other days of that month. The lines of the days
after the 4th are violating; the finding's visit is the one of the first such line.
"""

import datetime as dt

import polars as pl

from .. import catalog as cat
from ..inject import Context, Injector
from ._visits import add_clinic_visit

MAX_DAYS = 4


def inject(ctx: Context) -> None:
    drugs = [i.code for i in cat.ITEMS if i.list_type == "101"]
    where = ~pl.col("inpatient") & (pl.col("med_type") == "11") & (pl.col("person_visits") == 1)
    n, done = ctx.count(), 0
    while done < n:
        picked = ctx.take_visits(1, where)
        if not picked:
            return
        v = picked[0]
        own = ctx.lines_of(v).filter(pl.col("code").is_in(drugs) & (pl.col("ownpay_pct") == 0))
        if own.height == 0:
            continue
        code, t0 = own["code"][0], own["time"][0]
        first = t0.date().replace(day=1)
        last = (first + dt.timedelta(days=32)).replace(day=1) - dt.timedelta(days=1)
        days = [first + dt.timedelta(days=k) for k in range((last - first).days + 1) if first + dt.timedelta(days=k) != t0.date()]
        extra = sorted(ctx.rng.choice(len(days), size=MAX_DAYS + int(ctx.rng.integers(0, 2)), replace=False).tolist())
        buys = [(t0, v, own["bkkp_sn"][0])]
        for k in extra:
            begin = dt.datetime.combine(days[k], dt.time(int(ctx.rng.integers(8, 16)), int(ctx.rng.integers(0, 60))))
            inst = cat.INSTITUTIONS[int(ctx.rng.integers(0, len(cat.INSTITUTIONS)))][0]
            nv, sns = add_clinic_visit(ctx, v, begin, inst=inst, consult=False, drug=code)
            buys.append((begin + dt.timedelta(minutes=20), nv, sns[-1]))
        buys.sort(key=lambda b: (b[0], b[2]))
        excess = buys[MAX_DAYS:]
        for _t, nv, sn in excess:
            ctx.expect("R-HFP-001", excess[0][1], sn,
                       f"{first:%Y-%m} 购买 {ctx.item(code).name} {len(buys)} 天，第 {MAX_DAYS + 1} 天起超出")
        done += 1


INJECTOR = Injector("high_frequency_purchase", inject, rate=0.01)
