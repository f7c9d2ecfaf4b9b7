"""周期超频次 (R-PER-001): 糖化血红蛋白测定 a second time within 15 days.

Only persons with no other visit take part, so no unit of a visit the injector does not
control can be paid within the period. Two patterns:

- within a stay: the test on day 0 (diabetic stays already have it) and again 1 to 14 days
  later: the later line is the excess unit, the day-0 line is related;
- across visits and institutions: the test on an outpatient visit, and again at a clinic visit
  (a new visit of the person, see ``Context.add_visit``) 1 to 14 days later at another
  institution: the new visit's line is violating.

Near misses (not flagged, no key row): on a quarter as many outpatient visits the clinic visit
with the test comes exactly 15 calendar days later (the period has passed).
"""

import datetime as dt

import polars as pl

from .. import catalog as cat
from ..inject import Context, Injector
from ._common import split

SINGLE = pl.col("person_visits") == 1


def _clinic_visit(ctx: Context, v: dict, days: int) -> tuple[dict, str]:
    """A clinic visit of v's person ``days`` calendar days after v, at another institution,
    with a consultation and a 糖化血红蛋白测定; returns the new visit and its test line."""
    others = [x[0] for x in cat.INSTITUTIONS if x[0] != v["fixmedins_code"]]
    inst = others[int(ctx.rng.integers(0, len(others)))]
    begin = ctx.at(v["begntime"].date() + dt.timedelta(days=days), 9, int(ctx.rng.integers(0, 50)))
    nv = ctx.add_visit(v, begin, begin + dt.timedelta(minutes=50), inst, med_type="11")
    ctx.add_line(nv, cat.OPT_CONSULT, begin + dt.timedelta(minutes=2))
    return nv, ctx.add_line(nv, cat.HBA1C, begin + dt.timedelta(minutes=20))


def inject(ctx: Context) -> None:
    a, b = split(ctx.count(), 2)
    stays = pl.col("inpatient") & (pl.col("med_type") != "28") & (pl.col("bed_days") >= 3) & SINGLE
    for v in ctx.take_visits(a, stays):
        if not ctx.rows_of(v, lambda r: r["code"] == cat.HBA1C):
            ctx.add_line(v, cat.HBA1C, v["begntime"] + dt.timedelta(minutes=70))
        k = int(ctx.rng.integers(1, min(v["bed_days"], 15)))
        sn = ctx.add_line(v, cat.HBA1C, ctx.at(ctx.day_of(v, k), 8, 30))
        ctx.expect("R-PER-001", v, sn, f"糖化血红蛋白测定 入院后第 {k} 天再次收费（15天内限1次）")
    # outpatient visits ending on their start day, so the test is dated that day
    clinic = ~pl.col("inpatient") & SINGLE & (pl.col("endtime").dt.date() == pl.col("begntime").dt.date())
    for v in ctx.take_visits(b, clinic):
        ctx.add_line(v, cat.HBA1C, ctx.time_in(v))
        k = int(ctx.rng.integers(1, 15))
        nv, sn = _clinic_visit(ctx, v, k)
        ctx.expect("R-PER-001", nv, sn, f"糖化血红蛋白测定 {k} 天前已在 {v['fixmedins_code']} 支付（15天内限1次）")
    for v in ctx.take_visits(max(1, ctx.count() // 4), clinic):
        ctx.add_line(v, cat.HBA1C, ctx.time_in(v))
        _clinic_visit(ctx, v, 15)


INJECTOR = Injector("period_limit", inject)
