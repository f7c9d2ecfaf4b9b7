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

from ..inject import Context, Injector


def inject(ctx: Context) -> None:
    """Nothing to do before the tables exist: see :func:`finish`."""


def finish(ctx: Context, tables: dict[str, pl.DataFrame]) -> None:
    fee = tables["fee_list_d"].with_columns(q=pl.col("cnt").cast(pl.Float64), month=pl.col("fee_ocur_time").str.slice(0, 7))
    ok_setl = tables["setl_d"].filter(pl.col("refd_setl_flag") != "1")["setl_id"]
    refunded = set(fee.filter(pl.col("init_feedetl_sn").is_not_null())["init_feedetl_sn"])
    neg = fee.filter(pl.col("q") < 0).select("mdtrt_id", "hilist_code").unique()
    grp = ["fixmedins_code", "hilist_code", "month"]
    stock = (fee.filter(pl.col("list_type").is_in(["101", "102", "301"]))
             .join(neg.with_columns(pl.lit(True).alias("neg")), on=["mdtrt_id", "hilist_code"], how="left")
             .with_columns(good=(pl.col("q") > 0) & pl.col("setl_id").is_in(ok_setl.implode()).fill_null(False) & pl.col("neg").is_null()
                           & ~pl.col("bkkp_sn").is_in(list(refunded))))
    last = (stock.sort("fee_ocur_time", "bkkp_sn")
            .group_by(grp, maintain_order=True)
            .agg(pl.col("good").all().alias("all_good"), pl.col("q").sum().alias("billed"),
                 pl.col("bkkp_sn").last(), pl.col("mdtrt_id").last(), pl.col("q").last().alias("last_q"),
                 ((pl.col("chrgitm_lv").last() != "03") & (pl.col("hosp_appr_flag").last() == "1")
                  & (pl.col("fulamt_ownpay_amt").last().cast(pl.Float64) == 0)).alias("paid"))
            .join(tables["purchases"].rename({"period": "month"}), on=grp, how="inner")
            .filter(pl.col("all_good") & pl.col("paid") & (pl.col("last_q") == pl.col("last_q").round(0)))
            .sort(grp))
    cands = [r for r in last.iter_rows(named=True) if not ctx.used(r["mdtrt_id"])]
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
        ctx.expect("R-INV-001", None, r["bkkp_sn"],
                   f"{r['fixmedins_code']} {r['month']} 收费 {int(r['billed'])}，购进改为 {bought}：最后一条超出")
    p = tables["purchases"]
    keys = pl.DataFrame([{"fixmedins_code": k[0], "hilist_code": k[1], "period": k[2], "__new": v} for k, v in lowered.items()])
    tables["purchases"] = (p.join(keys, on=["fixmedins_code", "hilist_code", "period"], how="left")
                           .with_columns(pl.coalesce("__new", "purchase_cnt").alias("purchase_cnt")).drop("__new"))


INJECTOR = Injector("inventory_mismatch", inject, rate=0.01, finish=finish)
