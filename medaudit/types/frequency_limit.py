"""超频次 frequency_limit: more units of an item on one day than the day allows.

**What it flags.** On one calendar day of one visit, the net quantity (refunds subtracted) of
one item code above `max_per_day`. The unit is whatever the item is billed in: times for a bed
fee or a consultation (1 a day), hours for a ventilator (24 a day). The excess units are taken
from the day's latest lines first (by `fee_ocur_time`, then `bkkp_sn`); those lines are the
violating lines, the day's other lines of the code are related lines.

**Why it matters.** A bed fee billed twice for one day, or 30 hours of monitoring in a day, is
money for a service that cannot have been given. National batch 8-1 lists 67 daily limits.

**Deduction.** `excess_qty`: excess units x unit price x the line's fund share, never more than
the line's deductible. A self-paid line that holds excess units absorbs them without a claim;
a day whose excess lies only on such lines is not flagged at all (the fund paid for no more
than the limit).

**Example.**

```yaml
- id: R-FRQ-001
  version: 1
  name: 普通病房床位费每日限1次
  type: frequency_limit
  items: {codes: ["001109000010000"]}
  params: {max_per_day: 1}
```

Two bed-fee lines of 1 day each on 2026-03-02 flag the later one:
`项目【普通病房床位费】(001109000010000) 每日限 1，2026-03-02 共收费 2，超出 1，按单价 30.00 元计；2026-03-02 18:00 收费 1 次，金额 30.00 元，其中 1 超出`.
"""

#: the same documentation in Chinese (`medaudit rules explain` shows it first; keep the two in step)
DOC_ZH = """超频次：某项目一天的收费数量超过每日限量。

**查什么。** 同一次就诊的同一自然日中，某一项目编码的净数量（已减退费）超过 `max_per_day`。单位按项目的计价单位：床位费、诊查费按次（每日 1 次），呼吸机按小时（每日 24 小时）。超出数量从当天最晚的明细开始分摊（按 `fee_ocur_time`，再按 `bkkp_sn`），这些明细为违规项，当天该编码的其他明细为涉及项。

**为什么。** 一天收两次床位费、一天监护 30 小时，都是为不可能提供的服务付钱。国家第 8-1 批规则列了 67 项每日限量。

**扣款。** `excess_qty`：超出数量 × 单价 × 该明细的基金支付比例，不超过可扣金额。自费明细承担的超出数量不主张扣款；超出部分全落在自费明细上的那一天不报（基金支付的没有超过限量）。
"""

from .base import ITEM_REF, Param, RuleType, excess_allocation


# ---------------------------------------------------------------------------- in memory (pre-alert)
# The same check over the request's rows, for the pre-alert fast path: a transcription of the
# query above (tests/test_prealert_parity.py holds the two equal).
from decimal import Decimal
from typing import Any
from .evidence import ZERO, Hit, excess_allocation as py_excess_allocation, yuan, qty, ref, hit


def evaluate(ctx, ms: list[dict]) -> list[Hit]:
    def g(m):
        return (m["rule_key"], m["mdtrt_id"], m["hilist_code"], m["fee_date"])

    day: dict[Any, Decimal] = {}
    for m in ms:
        day[g(m)] = day.get(g(m), ZERO) + m["cnt"]
    over = []
    for m in ms:
        if m["max_per_day"] is not None and day[g(m)] > m["max_per_day"]:
            over.append({**m, "day_qty": day[g(m)], "excess": day[g(m)] - m["max_per_day"]})
    py_excess_allocation(over, g)
    best: dict[Any, Decimal] = {}
    for r in over:
        best[g(r)] = max(best.get(g(r), r["claim"]), r["claim"])
    claimed = [r for r in over if best[g(r)] > 0]
    first: dict[Any, dict] = {}
    for r in sorted(claimed, key=lambda r: (r["fee_ocur_time"], r["bkkp_sn"])):
        first.setdefault(g(r), r)
    out = []
    for r in claimed:
        parts = []
        if first[g(r)] is r:
            parts.append(
                f"{ref(r)} 每日限 {qty(r['max_per_day'])}，{r['fee_date']:%Y-%m-%d} 共收费 {qty(r['day_qty'])}"
                f"，超出 {qty(r['excess'])}，按单价 {yuan(r['pric'])} 元计"
            )
        if r["claim"] > 0:
            parts.append(
                f"{r['fee_ocur_time']:%Y-%m-%d %H:%M} 收费 {qty(r['cnt'])} 次，金额 {yuan(r['amt'])} 元，其中 "
                f"{qty(r['excess_units'])} 超出"
            )
        out.append(hit(r, "violating" if r["claim"] > 0 else "related", r["claim"], "", "；".join(parts) or None))
    return out


RULE_TYPE = RuleType(
    name="frequency_limit",
    title="超频次",
    nature="超支付标准",
    mode="excess_qty",
    doc=__doc__,
    doc_zh=DOC_ZH,
    evaluate=evaluate,
    params=(
        Param(
            "max_per_day",
            "number",
            "units allowed per calendar day (times or hours)",
            required=True,
            per_item=True,
            minimum=0,
        ),
    ),
    query=f"""
        WITH -- the (rule, visit, code, day) groups over a limit, found by grouping: the windows
        -- below run over their lines only, not over every matched line. Grouped by the hash of
        -- (visit, code, day): nearly every line is a group of its own (7M groups at 10M lines),
        -- and one number groups at half the cost of three texts. Two groups that share a hash
        -- add up (units are positive): a candidate too many, which the windows below drop.
        -- A day of one line (``day_repeat`` FALSE) is over the limit by that line alone, so only
        -- lines with a same-day twin or over the limit themselves are grouped (2.9 -> 1.4 CPU s at 10M).
        cand AS (
            SELECT rule_key, hash(mdtrt_id, hilist_code, fee_date) AS g FROM {{m}}
            WHERE day_repeat OR cnt > max_per_day
            GROUP BY rule_key, g HAVING sum(cnt) > min(max_per_day)),
        day AS (
            SELECT m.*, sum(m.cnt) OVER (PARTITION BY m.rule_key, m.mdtrt_id, m.hilist_code, m.fee_date) AS day_qty
            FROM {{m}} m JOIN cand c
              ON c.rule_key = m.rule_key AND c.g = hash(m.mdtrt_id, m.hilist_code, m.fee_date)),
        over AS (SELECT *, day_qty - max_per_day AS excess FROM day WHERE day_qty > max_per_day),
        alloc AS ({excess_allocation("over", "rule_key, mdtrt_id, hilist_code, fee_date")}),
        -- a day whose excess sits only on lines the fund did not pay for costs the fund nothing
        claimed AS (SELECT * FROM alloc
                    QUALIFY max(claim) OVER (PARTITION BY rule_key, mdtrt_id, hilist_code, fee_date) > 0)
        SELECT rule_key, mdtrt_id AS finding_key, mdtrt_id, bkkp_sn,
               CASE WHEN claim > 0 THEN 'violating' ELSE 'related' END AS role,
               claim, '' AS ev_head,
               nullif(concat_ws('；',
                   -- the day's summary, on its earliest line so it leads that day's evidence
                   CASE WHEN row_number() OVER (PARTITION BY rule_key, mdtrt_id, hilist_code, fee_date
                                                ORDER BY fee_ocur_time, bkkp_sn) = 1
                        THEN {ITEM_REF} || ' 每日限 ' || qty(max_per_day) || '，' || strftime(fee_date, '%Y-%m-%d')
                             || ' 共收费 ' || qty(day_qty) || '，超出 ' || qty(excess)
                             || '，按单价 ' || yuan(pric) || ' 元计' END,
                   -- each deducted line: when, how much, and how many of its units are excess
                   CASE WHEN claim > 0
                        THEN strftime(fee_ocur_time, '%Y-%m-%d %H:%M') || ' 收费 ' || qty(cnt) || ' 次，金额 '
                             || yuan(amt) || ' 元，其中 ' || qty(excess_units) || ' 超出' END), '') AS ev_line,
               CASE WHEN claim > 0 THEN excess_units END AS excess_units
        FROM claimed
    """,
)
