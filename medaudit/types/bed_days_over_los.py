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

from .base import ITEM_REF, LINE_FACT, Param, RuleType, excess_allocation

RULE_TYPE = RuleType(
    name="bed_days_over_los",
    title="床位/护理天数超住院天数",
    nature="超支付标准",
    mode="excess_qty",
    doc=__doc__,
    params=(Param("tolerance", "int", "days allowed above the length of stay", default=0, minimum=0),),
    # it needs the whole stay: a prospective order (pre_alert) has no length of stay to compare with
    stages=("in_process", "post_hoc"),
    query=f"""
        WITH v AS (
            SELECT *, sum(cnt) OVER (PARTITION BY rule_key, mdtrt_id) AS total_qty
            FROM {{m}} WHERE inpatient AND los IS NOT NULL),
        over AS (SELECT *, total_qty - (los + tolerance) AS excess FROM v WHERE total_qty > los + tolerance),
        alloc AS ({excess_allocation('over', 'rule_key, mdtrt_id')}),
        -- excess only on lines the fund did not pay for costs the fund nothing: no finding
        claimed AS (SELECT * FROM alloc QUALIFY max(claim) OVER (PARTITION BY rule_key, mdtrt_id) > 0)
        SELECT rule_key, mdtrt_id AS finding_key, mdtrt_id, bkkp_sn,
               CASE WHEN claim > 0 THEN 'violating' ELSE 'related' END AS role, claim,
               '住院 ' || strftime(begntime, '%Y-%m-%d') || ' 至 ' || coalesce(strftime(endtime, '%Y-%m-%d'), '')
                   || '，住院天数 ' || los || ' 天' || CASE WHEN tolerance > 0 THEN '（允许多 ' || tolerance || ' 天）' ELSE '' END
                   || '，床位/护理类项目共收费 ' || qty(total_qty) || '，超出 ' || qty(excess) AS ev_head,
               CASE WHEN claim > 0 THEN {ITEM_REF} || ' ' || {LINE_FACT} || '，其中 ' || qty(excess_units) || ' 超出' END AS ev_line
        FROM claimed
    """,
)
