"""过度检查 (R-OVT-001: classes 03 and 04, percentile 95, at least 30 peers): a peer group built
for the purpose, since the clean data's groups (month, kind, level, main diagnosis category)
are too small in a sample batch to be judged.

Thirty new outpatient visits of thirty new persons (copies of random visits with a new
``psn_no``: no other visit of theirs comes near), all on one day at one institution with the
main diagnosis R51 (头痛, never drawn by the clean data), each a consultation (02) and one lab
line (C反应蛋白测定, 04) of a quantity: 27 visits 1, 2 visits 3, 1 visit 9. The 95th percentile
is at position 29 x 0.95 = 27.55 of the sorted quantities: 3 + 0.55 x (3 - 3) = 3. The visit
with 9 is flagged (its lab line is violating); the two with 3 equal the percentile and are near
misses. A second group (R50 发热) of only 29 visits with the same outlier is not judged
(min_peers 30). One group of each per 5,000 visits, at least one.

In a large batch the clean data's own groups reach 30 visits, and about one visit in twenty
of a group is above its 95th percentile: a statistical rule flags them, rightly. ``finish``
finds them from the final lines, independently of the engine (net quantities, the percentile
compared in exact integer arithmetic), and writes them into the key, so the key stays exact at every
size (a sample of a few hundred visits has no such group). In a batch made in parts each part
adds its own groups (new persons named after the part), and peer groups of one month and level
hold visits of several parts: ``gather`` takes each part's visits and quantities and ``combine``
finds the visits above their group's percentile over the whole batch (then the R50 groups of two
parts together are judged, and their outliers keyed).
"""

import datetime as dt

import numpy as np
import polars as pl

from .. import catalog as cat
from ..clean import SN_ORDER
from ..inject import Batch, Context, Injector, Tables

CRP = "002503050060000"  # C反应蛋白测定 (04); no frequency or period rule names it


def _group(
    ctx: Context, day: dt.date, inst: str, diag: str, quantities: list[int], tag: str
) -> list[tuple[dict, str, int]]:
    out = []
    picks = ctx.rng.integers(0, ctx.n_visits, len(quantities))
    for k, (q, i) in enumerate(zip(quantities, picks)):
        like = ctx.visits.row(int(i), named=True)
        begin = dt.datetime.combine(day, dt.time(8, 0)) + dt.timedelta(minutes=7 * k)
        v = ctx.add_visit(
            like,
            begin,
            begin + dt.timedelta(hours=2),
            inst=inst,
            psn_no=f"P39{ctx.part_tag}{tag}{k:03d}",
            med_type="11",
            inpatient=False,
            main_diag=diag,
            second_diag=None,
            died=False,
        )
        v["dept"] = "A02" if v["level"] == 1 else "A03"
        v["doctor"] = f"D{v['fixmedins_code'][-4:]}{v['dept']}1"
        ctx.add_line(v, cat.OPT_CONSULT, begin + dt.timedelta(minutes=5))
        out.append((v, ctx.add_line(v, CRP, begin + dt.timedelta(minutes=20), q), q))
    return out


def inject(ctx: Context) -> None:
    n = max(1, ctx.n_visits // 5000)
    days = np.sort(ctx.visits["begntime"].dt.date().to_numpy())
    for g in range(n):
        # a day inside the batch's range of visits, the same month for the whole group
        day = days[int(ctx.rng.integers(len(days) // 4, 3 * len(days) // 4))].astype("datetime64[D]").item()
        inst = cat.INSTITUTIONS[int(ctx.rng.integers(0, len(cat.INSTITUTIONS)))][0]
        quantities = [1] * 27 + [3, 3, 9]
        order = ctx.rng.permutation(len(quantities))
        for v, sn, q in _group(ctx, day, inst, "R51.x00", [quantities[i] for i in order], f"{g:04d}A"):
            if q == 9:
                ctx.expect(
                    "R-OVT-001", v, sn, "检查化验数量 9，同类 30 人次（同月门诊、同级、主诊断 R51）第 95 百分位 3"
                )
        _group(ctx, day, inst, "R50.900", [1] * 28 + [9], f"{g:04d}B")


CLASSES = ("03", "04")
PERCENTILE, MIN_PEERS = 95, 30


GROUP = ["month", "inpatient", "level", "dg"]


def finish(ctx: Context | Batch, tables: Tables) -> None:
    """Key every visit of the batch whose quantity of lines of CLASSES is above its group's
    percentile (the rule's meaning, computed here from the lines as generated)."""
    assert isinstance(ctx, Context)  # a step with gather and combine: a batch in one piece only
    combine(ctx, [gather(ctx, tables)], tables)


def gather(ctx: Context, tables: Tables) -> dict:
    """What :func:`combine` needs of the lines at hand: each screened visit's group and net
    quantity (``gv``: a number unique in the batch, the visit's mdtrt_id number less one), its
    lines of CLASSES with a net quantity (``snn``: bkkp_sn's number), the visits keyed already."""
    in_class = [i.code for i in cat.ITEMS if i.chrg in CLASSES]
    all_lines, visits = ctx.fee_lines, ctx.all_visits
    assert all_lines is not None and visits is not None  # set by generate.assemble before the finish steps
    lines = all_lines.select("vi", "bkkp_sn", "code", "cnt", "time", "init").filter(pl.col("code").is_in(in_class))
    pos = lines.filter(pl.col("cnt") > 0)
    linked = (
        lines.filter((pl.col("cnt") < 0) & pl.col("init").is_not_null())
        .group_by("init")
        .agg(pl.col("cnt").sum().alias("r"))
    )
    pos = pos.join(linked, left_on="bkkp_sn", right_on="init", how="left").with_columns(
        (pl.col("cnt") + pl.col("r").fill_null(0)).alias("net"), pl.col("time").dt.date().alias("d")
    )
    # refunds without init_feedetl_sn: the same visit, code and day, latest lines first
    unl = (
        lines.filter((pl.col("cnt") < 0) & pl.col("init").is_null())
        .group_by("vi", "code", pl.col("time").dt.date().alias("d"))
        .agg((-pl.col("cnt").sum()).alias("u"))
    )
    # (only the few (visit, code, day) groups with such a refund are sorted and summed)
    pos = pos.join(unl, on=["vi", "code", "d"], how="left")
    cols = pos.columns
    refunded = (
        pos.filter(pl.col("u").is_not_null())
        .sort("vi", "code", "d", "time", "bkkp_sn", descending=True)
        .with_columns(pl.col("net").cum_sum().over("vi", "code", "d").alias("cum"))
        .with_columns(pl.min_horizontal(pl.col("net"), pl.max_horizontal(pl.col("cum") - pl.col("u"), 0)).alias("net"))
        .select(cols)
    )
    pos = pl.concat([pos.filter(pl.col("u").is_null()), refunded])
    v = visits.filter(pl.col("settled") & ~pl.col("refunded"))
    any_line = all_lines.lazy().filter(pl.col("cnt") > 0).select("vi").unique().collect()
    v = v.join(any_line, on="vi", how="semi")  # visits with a line (no sample visit is refunded whole line by line)
    q = pos.filter(pl.col("net") > 0).group_by("vi").agg(pl.col("net").sum().alias("q"))
    v = v.join(q, on="vi", how="left").with_columns(
        pl.col("q").fill_null(0),
        pl.col("begntime").dt.strftime("%Y-%m").alias("month"),
        pl.col("main_diag").str.replace_all(".", "", literal=True).str.to_uppercase().str.slice(0, 3).alias("dg"),
    )
    base = ctx.data.visit_base
    return {
        "v": v.select((pl.col("vi") + base).alias("gv"), "mdtrt_id", *GROUP, "q"),
        "pos": pos.filter(pl.col("net") > 0).select((pl.col("vi") + base).alias("gv"), SN_ORDER.alias("snn")),
        "keyed": {r["mdtrt_id"] for r in ctx.key if r["rule_type"] == "overtreatment"},
    }


def combine(ctx: Context | Batch, parts: list[dict], tables: Tables) -> None:
    """Key the visits above their group's percentile, the groups of all parts together."""
    v = pl.concat([p["v"] for p in parts])
    pos = pl.concat([p["pos"] for p in parts])
    keyed = set().union(*(p["keyed"] for p in parts))
    # each group of at least MIN_PEERS visits, its quantities sorted: the percentile lies between
    # the f-th and the next, at h = (n - 1) x p / 100 = f + r / 100 (r an integer), so
    # q > percentile  <=>  100 q > 100 s[f] + r (s[f+1] - s[f]), exact in integers
    grp = GROUP
    hn = (pl.col("n") - 1) * PERCENTILE
    groups = (
        v.group_by(grp)
        .agg(pl.col("q").sort().alias("qs"), pl.len().alias("n"))
        .filter(pl.col("n") >= MIN_PEERS)
        .with_columns((hn // 100).alias("f"), (hn % 100).alias("r"))
        .with_columns(
            pl.col("qs").list.get(pl.col("f")).alias("lo"),
            pl.col("qs").list.get(pl.min_horizontal(pl.col("f") + 1, pl.col("n") - 1)).alias("hi"),
        )
        .select(*grp, "lo", "hi", "r")
    )
    flagged = (
        v.join(groups, on=grp, how="inner")
        .filter(pl.col("q") * 100 > pl.col("lo") * 100 + pl.col("r") * (pl.col("hi") - pl.col("lo")))
        .select("gv", "mdtrt_id", "q")
        .filter(~pl.col("mdtrt_id").is_in(list(keyed)))
    )
    # every quantity line of a flagged visit (one join, not a filter of all lines per visit)
    hits = (
        pos.join(flagged, on="gv", how="inner")
        .with_columns(pl.format("F{}", pl.col("snn").cast(pl.Utf8).str.zfill(10)).alias("bkkp_sn"))
        .sort("mdtrt_id", "bkkp_sn")
    )
    for mdtrt_id, sn, q in hits.select("mdtrt_id", "bkkp_sn", "q").iter_rows():
        ctx.expect(
            "R-OVT-001",
            mdtrt_id,
            sn,
            f"检查化验数量 {q} 高于同类就诊第 95 百分位（统计上偏高）",
            rule_type="overtreatment",
        )


INJECTOR = Injector("overtreatment", inject, rate=0.0, finish=finish, gather=gather, combine=combine)
