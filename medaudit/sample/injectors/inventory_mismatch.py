"""进销存不符 (R-INV-001): an institution bills more of a drug or consumable in a month than it
bought.

The generator's ``purchases`` cover every (institution, code, month) with stock to spare (120%
of what was billed, plus 10). After the tables exist, this injector lowers the purchases of a
few (institution, code, month) groups to what was billed minus the quantity of the group's
latest line, so exactly that line's units are in excess (the excess is taken from the latest
lines first). Only groups whose lines are all screened at their full quantity qualify (no
refund line and no refund of theirs anywhere, settled and not refunded), and whose latest line
is fund-paid (class A or B, not switched to self-pay) on a visit no injector touched: that line
is the one violating line, and the finding is about the institution, not a visit.

Near miss, not flagged: one more such group bought exactly what it billed (equal is not more).
"""

import polars as pl

from .. import catalog as cat
from ..clean import MONTH, SN_ORDER, month_text
from ..inject import Batch, Context, Injector, Tables


def inject(ctx: Context) -> None:
    """Nothing to do before the tables exist: see :func:`finish`."""


GROUP = ["fixmedins_code", "hilist_code", "month"]


def finish(ctx: Context | Batch, tables: Tables) -> None:
    assert isinstance(ctx, Context)  # a step with gather and combine: a batch in one piece only
    combine(ctx, [gather(ctx, tables)], tables)


def gather(ctx: Context, tables: Tables) -> pl.DataFrame:
    """Per (institution, code, month) of the lines at hand: whether all are good, the quantity
    billed and the latest line (its time and bkkp_sn's number to compare with another part's, and
    whether an injector used its visit). A part's groups hold only its lines: :func:`combine`
    adds them up."""
    # from the internal lines (ctx.fee_lines: fee_list_d is written a chunk at a time, never
    # held whole), with what fee_list_d states: its setl_id (none before settlement), month,
    # quantity, self-paid amount and flags
    lines, visits = ctx.fee_lines, ctx.all_visits
    assert lines is not None and visits is not None  # set by generate.assemble before the finish steps
    visits = visits.select(
        "vi",
        "mdtrt_id",
        "fixmedins_code",
        pl.when(pl.col("settled")).then(pl.col("setl_id")).otherwise(None).alias("setl_id"),
    )
    ok_setl = tables["setl_d"].filter(pl.col("refd_setl_flag") != "1")["setl_id"]
    refunded = lines["init"].drop_nulls()
    neg = lines.filter(pl.col("cnt") < 0).select("vi", "code").unique()
    kinds = pl.DataFrame(
        {
            "code": [i.code for i in cat.ITEMS if i.list_type in ("101", "102", "301")],
            "chrgitm_lv": [i.lv for i in cat.ITEMS if i.list_type in ("101", "102", "301")],
        }
    )
    grp = GROUP
    stock = (
        lines.lazy()
        .select("vi", "bkkp_sn", "code", "cnt", "time", "appr", "own")
        .join(kinds.lazy(), on="code", how="inner", maintain_order="left")
        .join(neg.lazy().with_columns(pl.lit(True).alias("neg")), on=["vi", "code"], how="left", maintain_order="left")
        .join(visits.lazy(), on="vi", how="left", maintain_order="left")
        .with_columns(
            q=pl.col("cnt").cast(pl.Float64),
            hilist_code=pl.col("code"),
            month=MONTH,
            ts=pl.col("time").dt.truncate("1s").dt.epoch("s"),
            snn=SN_ORDER,
        )
        .with_columns(
            good=(pl.col("q") > 0)
            & pl.col("setl_id").is_in(ok_setl.implode()).fill_null(False)
            & pl.col("neg").is_null()
            & ~pl.col("bkkp_sn").is_in(refunded.implode())
        )
        .select(
            "fixmedins_code",
            "hilist_code",
            "month",
            "good",
            "q",
            "bkkp_sn",
            "mdtrt_id",
            "chrgitm_lv",
            "appr",
            "own",
            "ts",
            "snn",
        )
        .collect()
    )
    # the latest line of a group: in fee_list_d's time (to the second) and then bkkp_sn, found as
    # the largest of one integer (seconds, then bkkp_sn's number) when it fits, else by a sort
    lo, hi, top = stock.select(pl.col("ts").min().alias("lo"), pl.col("ts").max().alias("hi"), pl.col("snn").max()).row(
        0
    )
    bits = int(top or 0).bit_length()
    if stock.height and (hi - lo) < (1 << (62 - bits)):
        at = ((pl.col("ts") - lo) * (1 << bits) + pl.col("snn")).arg_max()
        groups = stock.group_by(grp)
    else:
        at = pl.len() - 1
        groups = stock.sort("ts", "snn").group_by(grp, maintain_order=True)
    last = groups.agg(
        pl.col("good").all().alias("all_good"),
        pl.col("q").sum().alias("billed"),
        pl.col("bkkp_sn").get(at),
        pl.col("mdtrt_id").get(at),
        pl.col("q").get(at).alias("last_q"),
        ((pl.col("chrgitm_lv").get(at) != "03") & (pl.col("appr").get(at) == "1") & (pl.col("own").get(at) == 0)).alias(
            "paid"
        ),
        pl.col("ts").get(at),
        pl.col("snn").get(at),
    )
    return last.with_columns(pl.Series("used", [ctx.used(m) for m in last["mdtrt_id"]], dtype=pl.Boolean))


def combine(ctx: Context | Batch, parts: list[pl.DataFrame], tables: Tables) -> None:
    """Lower the purchases of a few groups (the groups of all parts added up) and key their
    latest lines. ``ctx``: the :class:`Context` of a batch in one piece or a ``Batch``."""
    grp = GROUP
    if len(parts) == 1:
        last = parts[0]
    else:  # a group's lines in several parts: all good in each, billed summed, the latest of the latest
        last = (
            pl.concat(parts)
            .sort("ts", "snn")
            .group_by(grp, maintain_order=True)
            .agg(
                pl.col("all_good").all(),
                pl.col("billed").sum(),
                pl.col("bkkp_sn", "mdtrt_id", "last_q", "paid", "ts", "snn", "used").last(),
            )
        )
    last = (
        last.with_columns(month_text("month").alias("month"))
        .join(tables["purchases"].rename({"period": "month"}), on=grp, how="inner")
        .filter(pl.col("all_good") & pl.col("paid") & (pl.col("last_q") == pl.col("last_q").round(0)))
        .sort(grp)
    )
    cands = [r for r in last.iter_rows(named=True) if not r["used"]]
    if not cands:
        return
    n = min(ctx.count() + 1, len(cands))  # the last one is the near miss
    chosen, seen = [], set()
    for i in ctx.rng.permutation(len(cands)).tolist():
        r = cands[i]
        if r["mdtrt_id"] in seen:
            continue
        seen.add(r["mdtrt_id"])
        chosen.append(r)
        if len(chosen) == n:
            break
    lowered = {}
    if len(chosen) > 1:
        r = chosen.pop()
        ctx.use_visit(r["mdtrt_id"])
        lowered[(r["fixmedins_code"], r["hilist_code"], r["month"])] = str(int(r["billed"]))
    for r in chosen:
        ctx.use_visit(r["mdtrt_id"])
        bought = int(r["billed"] - r["last_q"])
        lowered[(r["fixmedins_code"], r["hilist_code"], r["month"])] = str(bought)
        ctx.expect(
            "R-INV-001",
            None,
            r["bkkp_sn"],
            f"{r['fixmedins_code']} {r['month']} 收费 {int(r['billed'])}，购进改为 {bought}：最后一条超出",
        )
    p = tables["purchases"]
    keys = pl.DataFrame(
        [{"fixmedins_code": k[0], "hilist_code": k[1], "period": k[2], "__new": v} for k, v in lowered.items()]
    )
    tables["purchases"] = (
        p.join(keys, on=["fixmedins_code", "hilist_code", "period"], how="left")
        .with_columns(pl.coalesce("__new", "purchase_cnt").alias("purchase_cnt"))
        .drop("__new")
    )


INJECTOR = Injector("inventory_mismatch", inject, rate=0.01, finish=finish, gather=gather, combine=combine)
