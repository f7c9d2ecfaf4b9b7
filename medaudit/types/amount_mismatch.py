"""金额与数量单价不符 amount_mismatch: a line whose amount is not its quantity times its price (抬高收费).

**What it flags.** A matched line (every line when the rule names no items) whose amount as
billed, `det_item_fee_sumamt`, differs from its quantity as billed times its unit price,
`cnt × pric`, by more than `tolerance` (default 0.01 yuan; a difference of exactly the
tolerance is fine). By default only lines billed above `cnt × pric` (多计) are flagged: that is
抬高收费. With `undercharge: true` a line billed below it (少计) is flagged too, claiming
nothing: its three fields contradict each other, a lead for review rather than money. (Every
line off by more than 0.01 either way is also listed in the loader's `data_quality` table.)

The comparison uses the line **as billed**, read from `fee_list_d`, before refunds are netted:
a refund line names the units it takes back, and a line that was overcharged stays evidence of
the overcharge after a partial refund. As for every line-level type, refund lines themselves,
fully refunded lines, lines of refunded settlements and lines the fund did not pay (deductible
0: class C, switched to self-pay) are not flagged.

**Why it matters.** The amount is what the fund pays; quantity and price are what a reviewer
checks against the price list and the orders. An amount above `cnt × pric` passes every price
and frequency rule (they read `pric` and `cnt`) while charging more than either shows: 抬高收费
hidden in the line total. This type puts such lines in front of a reviewer with the figures a
clerk can check by hand and the amount at stake.

**Deduction.** `price_diff` on the excess: (amount − `cnt × pric`) × the line's fund share
(deductible / amount), never more than the line's deductible; nothing when the line is billed
below `cnt × pric`. After a partial refund the claim is on the excess still in the net line: the
smaller of the billed excess and (net amount − net quantity × `pric`), so a refund that took the
overcharge back leaves nothing to deduct. Default severity `suspect`: a mismatch can be a typing
error, so a reviewer confirms it before anything is deducted.

**Stages.** `in_process` and `post_hoc`. Not `pre_alert`: a doctor's order carries no billed
amount to compare, and the fast pre-alert path has no evaluator for this type.

**Example.**

```yaml
- id: R-AMT-001
  version: 1
  name: 明细金额与数量单价不符（抬高收费）
  type: amount_mismatch
  stages: [in_process, post_hoc]
  # no items: every line; params: {tolerance: 0.01} is the default
```

A line of 2 units at 45.00 billed as 120.00 gives
`项目【血常规】(002503010010000) 2026-03-02 数量 2 × 单价 45.00 = 90.00 元，明细金额 120.00 元，多计 30.00 元`
and claims 30.00 (a line 20% self-paid: 24.00). When the line was partly refunded the evidence
goes on with the net line, e.g. `；退费后数量 1 × 单价 45.00 = 45.00 元，净金额 75.00 元，多计 30.00 元`.
"""

#: the same documentation in Chinese (`medaudit rules explain` shows it first; keep the two in step)
DOC_ZH = """金额与数量单价不符：明细金额不等于数量×单价（抬高收费）。

**查什么。** 匹配的明细（规则未列项目时为所有明细）按收费时的金额 `det_item_fee_sumamt` 与 `cnt × pric` 相差超过 `tolerance`（默认 0.01 元；恰好等于容差不算）。默认只查金额高于 `cnt × pric` 的（多计，即抬高收费）；设 `undercharge: true` 时少计的也列出，但不主张扣款（只作为复核线索）。比较用退费冲减前的原始明细（`fee_list_d`）：部分退费后，多计的证据仍在。与其他明细级类型一样，退费明细本身、全额退费的明细、已退结算的明细以及基金未支付的明细（可扣金额为 0：丙类、转自费）不查。

**为什么。** 基金按金额支付，审核人员核对的是数量和单价；金额高于 `cnt × pric` 时，所有价格、频次规则都查不出来，多收的钱藏在明细合计里。

**扣款。** `price_diff`：多计部分（金额 − `cnt × pric`）× 该明细的基金支付比例（可扣金额 / 金额），不超过可扣金额；少计不扣。部分退费后只扣净明细中仍有的多计部分（原多计额与"净金额 − 净数量 × 单价"取小），退费已把多收部分退回的不再扣。默认严重程度 `suspect`：可能是录入错误，须复核确认后才扣款。

**环节。** 事中（`in_process`）和事后（`post_hoc`）；不用于事前提醒（医嘱没有收费金额可比）。
"""

from decimal import Decimal

from .base import ITEM_REF, Param, RuleType, claim, price_text

RULE_TYPE = RuleType(
    name="amount_mismatch",
    title="金额与数量单价不符",
    nature="超支付标准",
    mode="price_diff",
    doc=__doc__,
    doc_zh=DOC_ZH,
    items="optional",
    default_severity="suspect",
    stages=("in_process", "post_hoc"),
    params=(
        Param(
            "tolerance",
            "number",
            "largest difference (yuan) between the amount and cnt × pric that is not flagged",
            default=Decimal("0.01"),
            per_item=True,
            minimum=0,
        ),
        Param("undercharge", "bool", "also flag lines billed below cnt × pric (they claim nothing)", default=False),
    ),
    query=f"""
        WITH b AS (       -- the line as billed (fee_list_d), before refunds are netted
            SELECT m.*, f.cnt AS billed_cnt, f.det_item_fee_sumamt AS billed_amt,
                   f.det_item_fee_sumamt - f.cnt * f.pric AS diff,
                   m.amt - m.cnt * m.pric AS net_diff
            FROM {{m}} m
            -- a line billed at exactly cnt × pric is never flagged (the tolerance is at least 0):
            -- only the others are joined, not every billed line
            JOIN (SELECT bkkp_sn, cnt, pric, det_item_fee_sumamt FROM {{fee_list_d}}
                  WHERE det_item_fee_sumamt <> cnt * pric) f ON f.bkkp_sn = m.bkkp_sn
            WHERE m.deductible > 0
              AND (f.det_item_fee_sumamt - f.cnt * f.pric > m.tolerance
                   OR (m.undercharge AND f.cnt * f.pric - f.det_item_fee_sumamt > m.tolerance))),
        x AS (            -- the excess still in the net line (a refund may have taken some back)
            SELECT *, greatest(least(diff, net_diff), 0) AS excess FROM b)
        SELECT rule_key, mdtrt_id AS finding_key, mdtrt_id, bkkp_sn, 'violating' AS role,
               {claim("price_diff", overcharge="excess")} AS claim,
               '' AS ev_head,
               {ITEM_REF} || ' ' || strftime(fee_date, '%Y-%m-%d')
                   || ' 数量 ' || qty(billed_cnt) || ' × 单价 ' || {price_text("pric")}
                   || ' = ' || {price_text("billed_cnt * pric")} || ' 元，明细金额 ' || yuan(billed_amt) || ' 元，'
                   || CASE WHEN diff > 0 THEN '多计 ' ELSE '少计 ' END || {price_text("abs(diff)")} || ' 元'
                   || CASE WHEN cnt = billed_cnt AND amt = billed_amt THEN ''
                           ELSE '；退费后数量 ' || qty(cnt) || ' × 单价 ' || {price_text("pric")}
                                || ' = ' || {price_text("cnt * pric")} || ' 元，净金额 ' || yuan(amt) || ' 元，'
                                || CASE WHEN net_diff > 0 THEN '多计 ' || {price_text("net_diff")} || ' 元'
                                        WHEN net_diff < 0 THEN '少计 ' || {price_text("-net_diff")} || ' 元'
                                        ELSE '相符' END END AS ev_line
        FROM x
    """,
)
