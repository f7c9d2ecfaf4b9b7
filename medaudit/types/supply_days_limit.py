"""超量开药/出院带药 supply_days_limit: a drug line supplying more days than allowed.

**What it flags.** A matched line (every line when the rule names no items) whose days of
supply `prd_days` is above `max_days`. Lines without `prd_days` are not judged. With
`outpatient_only: true` only outpatient visits (`med_type` not starting with 2) are judged;
with `discharge_only: true` only discharge medication (`dscg_tkdrug_flag` = 1). Lines the fund
did not pay (deductible 0) are not flagged. `prd_days` is read from the line as billed (a
refund reduces the quantity, not the days the prescription was written for).

**Why it matters.** Outpatient prescriptions are limited to 7 days (30 for chronic diseases),
discharge medication to a few weeks. Drugs beyond that are stockpiled, resold or never taken
(回流药), and the fund pays for them.

**Deduction.** `excess_qty` on the proportion `(prd_days - max_days) / prd_days` of the line:
that share of the net quantity, times the unit price, times the line's fund share, never more
than the line's deductible.

**Stages.** All three: one line is all it needs.

**Example.**

```yaml
- id: R-SUP-001
  version: 1
  name: 门诊处方超7日用量
  type: supply_days_limit
  items: {prefixes: [X]}
  params: {max_days: 7, outpatient_only: true}
```

A 30-day outpatient prescription of 3 boxes at 30.00 gives (23/30 of 90.00 = 69.00)
`药品【二甲双胍片】(XA10BAE...) 限 7 天用量，开药 30 天，超出 23 天（按 23/30 计）；2026-03-02 收费 3 次，金额 90.00 元`.
"""

#: the same documentation in Chinese (`medaudit rules explain` shows it first; keep the two in step)
DOC_ZH = """超量开药/出院带药：药品明细的用药天数超过规定。

**查什么。** 匹配的明细（规则未列项目时为所有明细），其用药天数 `prd_days` 大于 `max_days`。没有 `prd_days` 的明细不判断。`outpatient_only: true` 时只判断门诊就诊（`med_type` 不以 2 开头）；`discharge_only: true` 时只判断出院带药（`dscg_tkdrug_flag` = 1）。基金未支付的明细（可扣金额为 0）不报。`prd_days` 取收费时的原始明细（退费减少的是数量，不是处方开具的天数）。

**为什么。** 门诊处方一般限 7 天（慢性病 30 天），出院带药限几周。超出部分被囤积、转卖或根本不用（回流药），却由基金支付。

**扣款。** `excess_qty`，按比例 `(prd_days - max_days) / prd_days`：净数量的这一比例 × 单价 × 基金支付比例，不超过该明细可扣金额。

**环节。** 三个环节都适用：一条明细就能判断。
"""

from .base import ITEM_REF, LINE_FACT, Param, RuleType, excess_allocation


def _check(params: dict) -> str | None:
    if params.get("outpatient_only") and params.get("discharge_only"):
        return "params.outpatient_only and params.discharge_only exclude each other (discharge medication belongs to an inpatient stay)"
    return None


# excess_allocation works on whole units; the excess here is a fraction of the line, so the line
# is scaled by prd_days (cnt, amt and deductible x prd_days, excess = cnt x (prd_days - max_days)):
# every product stays exact, and one exact division by prd_days at the end gives the claim. The
# claim of the scaled line is the excess_qty mode's (excess_allocation); only that division back
# (and the cap at the unscaled deductible) is this type's own.


# ---------------------------------------------------------------------------- in memory (pre-alert)
# The same check over the request's rows, for the pre-alert fast path: a transcription of the
# query above (tests/test_prealert_parity.py holds the two equal).
from .evidence import Hit, xdiv, excess_allocation as py_excess_allocation, qty, ref, line_fact, hit


def evaluate(ctx, ms: list[dict]) -> list[Hit]:
    src = []
    for m in ms:
        pd, mx = m["prd_days"], m["max_days"]
        if pd is None or mx is None or not pd > mx or not m["deductible"] > 0:
            continue
        if m["outpatient_only"] and m["inpatient"]:
            continue
        if m["discharge_only"] and m["dscg_tkdrug_flag"] != "1":
            continue
        src.append(
            {
                **m,
                "cnt0": m["cnt"],
                "amt0": m["amt"],
                "ded0": m["deductible"],
                "cnt": m["cnt"] * pd,
                "amt": m["amt"] * pd,
                "deductible": m["deductible"] * pd,
                "excess": m["cnt"] * (pd - mx),
            }
        )
    py_excess_allocation(src, lambda r: (r["rule_key"], r["bkkp_sn"]))
    out = []
    for r in src:
        q = xdiv(r["claim"], r["prd_days"])
        claim = min(q, r["ded0"]) if q is not None else None
        if claim is None or not claim > 0:
            continue
        b = {**r, "cnt": r["cnt0"], "amt": r["amt0"]}
        pd, mx = r["prd_days"], r["max_days"]
        how = "，出院带药 " if r["dscg_tkdrug_flag"] == "1" else "，开药 "
        ev = (
            f"{ref(b)} 限 {qty(mx)} 天用量{how}{qty(pd)} 天，超出 {qty(pd - mx)} 天（按 {qty(pd - mx)}/{qty(pd)} 计）；"
            f"{line_fact(b)}"
        )
        out.append(hit(b, "violating", claim, "", ev))
    return out


RULE_TYPE = RuleType(
    name="supply_days_limit",
    title="超量开药",
    nature="超支付标准",
    mode="excess_qty",
    doc=__doc__,
    doc_zh=DOC_ZH,
    evaluate=evaluate,
    items="optional",
    validate=_check,
    params=(
        Param("max_days", "number", "days of supply allowed", required=True, per_item=True, minimum=0),
        Param("outpatient_only", "bool", "judge only outpatient visits", default=False),
        Param("discharge_only", "bool", "judge only discharge medication (dscg_tkdrug_flag 1)", default=False),
    ),
    query=f"""
        WITH src AS (
            SELECT * EXCLUDE (cnt, amt, deductible),
                   cnt AS cnt0, amt AS amt0, deductible AS ded0,
                   cnt * prd_days AS cnt, amt * prd_days AS amt, deductible * prd_days AS deductible,
                   cnt * (prd_days - max_days) AS excess
            FROM {{m}}
            WHERE prd_days > max_days AND deductible > 0
              AND (NOT coalesce(outpatient_only, FALSE) OR NOT inpatient)
              AND (NOT coalesce(discharge_only, FALSE) OR dscg_tkdrug_flag = '1')),
        alloc AS ({excess_allocation("src", "rule_key, bkkp_sn")}),
        back AS (
            SELECT * EXCLUDE (cnt, amt, deductible, claim), cnt0 AS cnt, amt0 AS amt, ded0 AS deductible,
                   least(xdiv(claim, prd_days), ded0) AS claim
            FROM alloc)
        SELECT rule_key, mdtrt_id AS finding_key, mdtrt_id, bkkp_sn, 'violating' AS role, claim, '' AS ev_head,
               {ITEM_REF} || ' 限 ' || qty(max_days) || ' 天用量'
                   || CASE WHEN dscg_tkdrug_flag = '1' THEN '，出院带药 ' ELSE '，开药 ' END || qty(prd_days)
                   || ' 天，超出 ' || qty(prd_days - max_days) || ' 天（按 ' || qty(prd_days - max_days) || '/'
                   || qty(prd_days) || ' 计）；' || {LINE_FACT} AS ev_line,
               -- the line's units times the share of its days beyond the limit
               CAST(xdiv(excess_units, prd_days) AS DECIMAL(18,4)) AS excess_units
        FROM back WHERE claim > 0
    """,
)
