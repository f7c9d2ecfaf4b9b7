"""高频购药 (R-HFP-001, at most 4 days a month per drug group): a person buys the same drug at
clinics on 5 or 6 distinct days of one calendar month.

It starts from a plain clinic visit of a person with no other visit, holding a western or
patent drug line; 4 or 5 new clinic visits (med_type 11, at random institutions, one line of
the same drug each, 5 days' supply) fall on other days of that month. The lines of the days
after the 4th are violating; the finding's visit is the one of the first such line.

Near miss, not flagged (no key row): another such person buys on exactly 4 days of the month,
on a 5th day self-paid (switched to self-pay: it costs the fund nothing) and on 2 days of the
next month.
"""

import datetime as dt

import polars as pl

from .. import catalog as cat
from ..inject import Context, Injector
from ._visits import add_clinic_visit

MAX_DAYS = 4


def inject(ctx: Context) -> None:
    n, done, near = ctx.count(), 0, False
    while done < n or not near:
        picked = ctx.take_visits(1, WHERE)
        if not picked:
            return
        v = picked[0]
        own = ctx.rows_of(v, lambda r: r["code"] in DRUG_SET and r["ownpay_pct"] == 0)
        if not own:
            continue
        code, t0 = own[0]["code"], own[0]["time"]
        first = t0.date().replace(day=1)
        nxt = (first + dt.timedelta(days=32)).replace(day=1)
        days = [
            first + dt.timedelta(days=k) for k in range((nxt - first).days) if first + dt.timedelta(days=k) != t0.date()
        ]
        if done >= n:  # the near miss: 4 paid days, a self-paid 5th, 2 days of the next month
            picks = ctx.rng.choice(len(days), size=MAX_DAYS, replace=False).tolist()
            for i, k in enumerate(picks):
                add_clinic_visit(
                    ctx,
                    v,
                    _time(ctx, days[k]),
                    inst=_inst(ctx),
                    consult=False,
                    drug=code,
                    appr="2" if i == MAX_DAYS - 1 else "1",
                )
            for k in (0, 1):
                add_clinic_visit(
                    ctx, v, _time(ctx, nxt + dt.timedelta(days=k)), inst=_inst(ctx), consult=False, drug=code
                )
            near = True
            continue
        extra = sorted(ctx.rng.choice(len(days), size=MAX_DAYS + int(ctx.rng.integers(0, 2)), replace=False).tolist())
        buys = [(t0, v, own[0]["bkkp_sn"])]
        for k in extra:
            begin = _time(ctx, days[k])
            nv, sns = add_clinic_visit(ctx, v, begin, inst=_inst(ctx), consult=False, drug=code)
            buys.append((begin + dt.timedelta(minutes=20), nv, sns[-1]))
        buys.sort(key=lambda b: (b[0], b[2]))
        excess = buys[MAX_DAYS:]
        for _t, nv, sn in excess:
            ctx.expect(
                "R-HFP-001",
                excess[0][1],
                sn,
                f"{first:%Y-%m} 购买 {ctx.item(code).name} {len(buys)} 天，第 {MAX_DAYS + 1} 天起超出",
            )
        done += 1


DRUGS = [i.code for i in cat.ITEMS if i.list_type == "101"]
DRUG_SET = frozenset(DRUGS)
WHERE = ~pl.col("inpatient") & (pl.col("med_type") == "11") & (pl.col("person_visits") == 1)


def _time(ctx: Context, day: dt.date) -> dt.datetime:
    return dt.datetime.combine(day, dt.time(int(ctx.rng.integers(8, 16)), int(ctx.rng.integers(0, 60))))


def _inst(ctx: Context) -> str:
    return cat.INSTITUTIONS[int(ctx.rng.integers(0, len(cat.INSTITUTIONS)))][0]


INJECTOR = Injector("high_frequency_purchase", inject, rate=0.01)
