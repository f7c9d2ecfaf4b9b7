"""床位/护理天数超住院天数 bed_days_over_los: more bed or nursing days than days in hospital.

**What it flags.** On an inpatient visit, the net quantity of the rule's items (summed over
all of them: a ward bed and a single-room bed are both bed days) above the length of stay plus
`tolerance`. Length of stay is `ipt_days` when recorded, else `date(endtime) - date(begntime)`,
at least 1 either way (a same-day stay, even one recorded as 0 days, may bill one bed day).
Visits without an end (still in hospital) are not judged, unless `ipt_days` is recorded; for
the same reason the type runs at `in_process` (discharged, not yet settled) and `post_hoc`
only, never at `pre_alert`. The excess is taken from the latest lines first; those are the
violating lines, the visit's other lines of the items are related. Excess units on a line the
fund did not pay for (class C, switched to self-pay) absorb the excess without a claim, and a
visit whose excess lies only on such lines is not flagged.

**Why it matters.** A 5-day stay cannot need 7 bed days or 7 days of level-2 nursing. The
difference is billing for days that did not happen.

**Deduction.** `excess_qty`.

**Example.**

```yaml
- id: R-BED-001
  version: 1
  name: 床位费天数超住院天数
  type: bed_days_over_los
  items: {codes: ["001109000010000", "001109000010100"]}
  params: {tolerance: 0}
```

gives `住院 2026-03-01 至 2026-03-06，住院天数 5 天，床位/护理类项目共收费 7，超出 2；...`.
"""

#: the same documentation in Chinese (`medaudit rules explain` shows it first; keep the two in step)
DOC_ZH = """床位/护理天数超住院天数：床位或护理收费天数多于实际住院天数。

**查什么。** 住院就诊中，规则所列项目的净数量（所有项目合计：普通床位和单间床位都算床日）超过住院天数加 `tolerance`。住院天数取 `ipt_days`，没有时为出院日期 − 入院日期，至少 1 天（当日出入院、即使记为 0 天，也可收 1 个床日）。未出院（没有结束时间）且没有 `ipt_days` 的就诊不判断，因此本类型只在事中（已出院未结算）和事后运行，不用于事前提醒。超出的数量从最晚的明细开始分摊，这些明细为违规项，同次就诊该项目的其他明细为涉及项。基金未支付的明细（丙类、转自费）承担超出数量但不主张扣款；超出部分全落在这类明细上的就诊不报。

**为什么。** 住院 5 天不可能需要 7 个床日或 7 天二级护理，差额是对不存在的天数收费。

**扣款。** `excess_qty`：超出数量 × 单价 × 基金支付比例，不超过该明细可扣金额。
"""

from .base import ITEM_REF, LINE_FACT, Param, RuleType, excess_allocation

RULE_TYPE = RuleType(
    name="bed_days_over_los",
    title="床位/护理天数超住院天数",
    nature="超支付标准",
    mode="excess_qty",
    doc=__doc__,
    doc_zh=DOC_ZH,
    params=(Param("tolerance", "int", "days allowed above the length of stay", default=0, minimum=0),),
    # it needs the whole stay: a prospective order (pre_alert) has no length of stay to compare with
    stages=("in_process", "post_hoc"),
    query=f"""
        -- the (rule, stay) pairs over the length of stay, found by grouping: the windows below
        -- run over their lines only, not over every bed and nursing line. The stay's length
        -- comes from its visit, joined to the groups (the lines carry none of the visit's
        -- columns: a full screen's lines joined to their visits were 8.4M rows at 10M lines)
        WITH cand AS (
            SELECT m.rule_key, m.mdtrt_id, any_value(s.los) AS stay_los
            FROM {{m}} m JOIN {{visits}} s ON s.mdtrt_id = m.mdtrt_id
            WHERE m.inpatient AND s.los IS NOT NULL
            GROUP BY m.rule_key, m.mdtrt_id HAVING sum(m.cnt) > min(s.los + m.tolerance)),
        v AS (
            SELECT m.*, c.stay_los, sum(m.cnt) OVER (PARTITION BY m.rule_key, m.mdtrt_id) AS total_qty
            FROM {{m}} m JOIN cand c ON c.rule_key = m.rule_key AND c.mdtrt_id = m.mdtrt_id
            WHERE m.inpatient),
        over AS (SELECT *, total_qty - (stay_los + tolerance) AS excess FROM v WHERE total_qty > stay_los + tolerance),
        alloc AS ({excess_allocation("over", "rule_key, mdtrt_id")}),
        -- excess only on lines the fund did not pay for costs the fund nothing: no finding
        claimed AS (SELECT * FROM alloc QUALIFY max(claim) OVER (PARTITION BY rule_key, mdtrt_id) > 0)
        SELECT rule_key, mdtrt_id AS finding_key, mdtrt_id, bkkp_sn,
               CASE WHEN claim > 0 THEN 'violating' ELSE 'related' END AS role, claim,
               '住院 ' || strftime(begntime, '%Y-%m-%d') || ' 至 ' || coalesce(strftime(endtime, '%Y-%m-%d'), '')
                   || '，住院天数 ' || stay_los || ' 天' || CASE WHEN tolerance > 0 THEN '（允许多 ' || tolerance || ' 天）' ELSE '' END
                   || '，床位/护理类项目共收费 ' || qty(total_qty) || '，超出 ' || qty(excess) AS ev_head,
               CASE WHEN claim > 0 THEN {ITEM_REF} || ' ' || {LINE_FACT} || '，其中 ' || qty(excess_units) || ' 超出' END AS ev_line,
               CASE WHEN claim > 0 THEN excess_units END AS excess_units
        FROM claimed
    """,
)
