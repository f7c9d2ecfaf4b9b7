"""水位异常 (R-PEER-001: a department of a level 2 or 3 institution whose 15-day readmission
rate in a month is above the 95th percentile of all such departments).

The clean data has no readmission at all (a person's visits are 50 days apart), so every
department's rate is exactly 0 and nobody is above the percentile: the rule is exact on clean
data. The ``readmission`` injector readmits at level-1 institutions only, outside this rule's
scope. This injector readmits one or two patients of one department 7 days after discharge, to
the same institution with a main diagnosis of another category (so ``readmission``, which asks
for the same category, does not flag the stay; the rate counts any diagnosis): that department
is the only one above 0 that month. It picks the month with the most departments (at least 5
besides the outlier, as the type needs 5 peers). The rule judges a department only in a month
with at least ``MIN_VISITS`` (30, the sample rule's ``min_visits``) admissions, so the outlier
and each of its 5 peers need that many: a batch of a few hundred or thousand visits has no such
month, and then nothing is injected (the rule flags nothing there either). The finding has no
visit and no lines: its key row names neither, and its note ends with the finding's key
``[department|inst|dept|month]``.
"""

import datetime as dt

import polars as pl

from ..inject import Context, Injector
from ._visits import add_stay

GAP = 7
MIN_OTHERS = 5
MIN_VISITS = 30  # rules/peer_outlier.yaml: min_visits


def inject(ctx: Context) -> None:
    v = ctx.visits
    month = pl.col("begntime").dt.strftime("%Y-%m")
    inp = v.filter(pl.col("inpatient") & pl.col("settled") & ~pl.col("refunded") & (pl.col("level") >= 2))
    counts = inp.group_by("fixmedins_code", "dept", month.alias("month")).len()
    ents = counts.filter(pl.col("len") >= MIN_VISITS).select("fixmedins_code", "dept", "month")
    cand = v.filter(
        pl.col("inpatient")
        & (pl.col("med_type") != "28")
        & pl.col("last_of_person")
        & ~pl.col("died")
        & (pl.col("level") >= 2)
        & pl.col("plain")
        & pl.col("endtime").is_not_null()
    ).with_columns(month=(pl.col("endtime").dt.date() + pl.duration(days=GAP)).dt.strftime("%Y-%m"))
    cand = cand.filter(pl.Series([not ctx.used(m) for m in cand["mdtrt_id"]], dtype=pl.Boolean))
    if cand.height == 0:
        return
    others = (
        cand.select("vi", "fixmedins_code", "dept", "month")
        .join(ents.rename({"fixmedins_code": "i2", "dept": "d2"}), on="month")
        .filter((pl.col("i2") != pl.col("fixmedins_code")) | (pl.col("d2") != pl.col("dept")))
        .group_by("vi")
        .len()
        .rename({"len": "others"})
    )
    # the outlier department itself: MIN_VISITS admissions with the one or two added
    own = counts.filter(pl.col("len") >= MIN_VISITS - 2).select("fixmedins_code", "dept", "month", "len")
    best = (
        cand.join(others, on="vi")
        .filter(pl.col("others") >= MIN_OTHERS)
        .join(own, on=["fixmedins_code", "dept", "month"])
        .sort("others", "vi", descending=[True, False])
    )
    if best.height == 0:
        return
    top = best.row(0, named=True)
    same = (
        best.filter(
            (pl.col("fixmedins_code") == top["fixmedins_code"])
            & (pl.col("dept") == top["dept"])
            & (pl.col("month") == top["month"])
        )["mdtrt_id"]
        .head(2)
        .to_list()
    )
    if top["len"] + len(same) < MIN_VISITS:
        return
    key = f"department|{top['fixmedins_code']}|{top['dept']}|{top['month']}"
    for mid in same:
        v1 = ctx.take_visits(1, pl.col("mdtrt_id") == mid)[0]
        diag = "K52.900" if not v1["main_diag"].startswith("K52") else "J18.900"
        begin = dt.datetime.combine(v1["endtime"].date() + dt.timedelta(days=GAP), dt.time(9, 30))
        nv, _sns = add_stay(ctx, v1, begin, 3, main_diag=diag, second_diag=None)
        ctx.expect(
            "R-PEER-001",
            None,
            None,
            f"科室 {top['dept']}（{top['fixmedins_code']}）{top['month']} 再入院 {nv['mdtrt_id']}（{v1['mdtrt_id']} 出院后 {GAP} 天） [{key}]",
        )


# judged against every department of the batch: in a batch made in parts, one part injects (a
# part's counts are at most the batch's, and persons never span parts, so no other part readmits)
INJECTOR = Injector("peer_outlier", inject, once=True)
