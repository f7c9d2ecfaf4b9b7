"""金额与数量单价不符 (R-AMT-001): a line whose amount is not cnt × pric (抬高收费).

The clean data bills every line at exactly ``cnt`` × ``pric``. On the chosen visits one line's
amount (``det_item_fee_sumamt``) is changed, the cases in turn:

0. billed 5% to 30% above ``cnt`` × ``pric`` (at least 0.02);
1. billed 0.02 above (one cent over the default tolerance);
2. billed 5% to 20% below (a near miss: not 抬高收费, so not flagged by default, no key row);
3. billed 5% to 30% above and then one unit refunded at its price (a linked partial refund:
   judged on the line as billed, the excess is still in the net line).

Near misses, on one more visit with no key row: a line 0.01 above (the tolerance itself), an
overcharged line switched to self-pay (``hosp_appr_flag`` 2: the fund paid nothing) and an
overcharged line fully refunded (the refund line states the same overcharged amount).

Only drug and lab lines are edited (no companion item, no restricted item: a refunded 静脉输液
would leave its 输液器 without companion), with an amount of at least 1.00.
"""

import datetime as dt

import polars as pl

from .. import catalog as cat
from ..inject import Context, Injector

SAFE = sorted(set(cat.LABS) | set(cat.IPT_DRUGS) | set(cat.ORAL_DRUGS))
SAFE_SET = frozenset(SAFE)


def _candidates(ctx: Context, v: dict, min_cnt: int = 1) -> list[dict]:
    rows = ctx.rows_of(
        v,
        lambda r: (
            r["code"] in SAFE_SET
            and r["ownpay_pct"] == 0
            and r["appr"] == "1"
            and r["init"] is None
            and r["billed"] is None
            and r["cnt"] >= min_cnt
        ),
    )
    out = []
    for r in rows:
        r["unit"] = r["pric"] if r["pric"] is not None else ctx.price(r["code"], v)
        r["amt"] = r["cnt"] * r["unit"]
        if r["amt"] >= 100:
            out.append(r)
    return out


def _fen(x: int) -> str:
    return f"{'-' if x < 0 else ''}{abs(x) // 100}.{abs(x) % 100:02d}"


def _note(ctx: Context, r: dict, billed: int, extra: str = "") -> str:
    d = billed - r["amt"]
    return (
        f"{ctx.item(r['code']).name} 数量 {r['cnt']} × 单价 {_fen(r['unit'])} = {_fen(r['amt'])} 元，"
        f"明细金额 {_fen(billed)} 元，{'多计' if d > 0 else '少计'} {_fen(abs(d))} 元{extra}"
    )


def inject(ctx: Context) -> None:
    lines = ctx.data.lines
    safe = lines.filter(pl.col("code").is_in(SAFE) & (pl.col("ownpay_pct") == 0) & (pl.col("appr") == "1"))
    has_safe = safe["vi"].unique()
    for k, v in enumerate(ctx.take_visits(ctx.count(), pl.col("vi").is_in(has_safe.implode()))):
        case = k % 4
        rows = _candidates(ctx, v, min_cnt=2) if case == 3 else []
        if not rows:
            case = 0 if case == 3 else case
            rows = _candidates(ctx, v)
        if not rows:
            continue
        r = rows[int(ctx.rng.integers(0, len(rows)))]
        if case == 0 or case == 3:
            billed = r["amt"] + max(2, r["amt"] * int(ctx.rng.integers(5, 31)) // 100)
        elif case == 1:
            billed = r["amt"] + 2
        else:
            billed = r["amt"] - max(2, r["amt"] * int(ctx.rng.integers(5, 21)) // 100)
        ctx.edit_line(r["bkkp_sn"], billed=billed)
        extra = ""
        if case == 3:  # one unit back at its price: the whole excess stays in the net line
            ctx.add_line(v, r["code"], r["time"] + dt.timedelta(minutes=20), -1, init=r["bkkp_sn"], pric=r["unit"])
            extra = "；退费 1 次（按单价），多计部分仍在"
        if case != 2:  # billed below is not flagged unless the rule asks for undercharges
            ctx.expect("R-AMT-001", v, r["bkkp_sn"], _note(ctx, r, billed, extra))

    # near misses: one visit with at least three lines to spare
    per_visit = safe.group_by("vi").len()
    roomy = per_visit.filter(pl.col("len") >= 3)["vi"]
    for v in ctx.take_visits(1, pl.col("vi").is_in(roomy.implode())):
        rows = _candidates(ctx, v)
        if len(rows) < 3:
            continue
        pick = ctx.rng.choice(len(rows), size=3, replace=False)
        tol, own, gone = (rows[int(i)] for i in pick)
        ctx.edit_line(tol["bkkp_sn"], billed=tol["amt"] + 1)  # exactly the tolerance: fine
        ctx.edit_line(own["bkkp_sn"], billed=own["amt"] + max(2, own["amt"] // 5), appr="2")  # self-paid
        over = gone["amt"] + max(2, gone["amt"] // 5)
        ctx.edit_line(gone["bkkp_sn"], billed=over)  # fully refunded, the refund states the same amount
        ctx.add_line(
            v,
            gone["code"],
            gone["time"] + dt.timedelta(minutes=20),
            -gone["cnt"],
            init=gone["bkkp_sn"],
            pric=gone["unit"],
            billed=-over,
        )


INJECTOR = Injector("amount_mismatch", inject)
