"""周期超频次 period_limit: an item paid more often than once (or N times) per period.

**What it flags.** Per person and item code — across visits and institutions — the units of
the item are taken in time order (`fee_ocur_time`, then `bkkp_sn`; a line of quantity 2 is two
units, a fractional last unit counts as one unit of its size). A unit is **excess** when
`max_count` earlier *paid* units lie fewer than `period_days` days before it; every other unit is
paid. "Days before" is the number of calendar days between the fee dates (times of day do not
matter), so with `period_days: 15` a unit 14 days after a paid one is excess and one 15 days
after is not. Because excess units are not paid, they do not count against later units:
HbA1c once per 15 days billed on days 1, 10 and 20 flags day 10 only (day 20 is 19 days after
the last paid unit, day 1). Lines with an excess unit are violating; the paid units that block
them are related lines (they may belong to other visits or institutions, and the evidence
names their date, institution and visit; the pre-alert answer to another institution names
only the date: `2026-03-01 其他机构`).

Only lines matched to the rule's items take part, within the rule's validity period and scope.
Lines the fund did not pay (deductible 0: class C, switched to self-pay) take no part at all:
they are neither counted as paid nor flagged. Lines refunded in full take no part; partly
refunded ones count with their net quantity.

**Why it matters.** Tests and treatments with a clinical interval (HbA1c every 3 months,
rehabilitation assessment every 2 weeks) repeated sooner are either unnecessary or invented.
Spreading them over visits and hospitals hides them from a per-visit check. National batch 8-4
lists such periods.

**Deduction.** `excess_qty`: the line's excess units x unit price x its fund share, never more
than the line's deductible.

**Stages.** `pre_alert` and `post_hoc`. Whether a unit is paid depends on every earlier unit of
the person across visits and institutions, so at pre-alert the person's stored lines of the
rule's items (their other visits, from the database) are checked together with the visit so far
and the new orders: an order is flagged when the units already paid in the database, or earlier
in the visit, leave it none. Not `in_process`: that stage screens open stays only, and a unit
there could look paid when an unseen settled one already made it excess.

**Example.**

```yaml
- id: R-PER-001
  version: 1
  name: 糖化血红蛋白测定15天内限1次
  type: period_limit
  items: {codes: ["002503020070000"]}
  params: {max_count: 1, period_days: 15}
```

gives `项目【糖化血红蛋白测定】(002503020070000) 每 15 天限 1 次；2026-03-10 收费 1 次，金额 45.00 元，超出 1；此前 15 天内已支付：2026-03-01 H002 就诊 V7`.
"""

#: the same documentation in Chinese (`medaudit rules explain` shows it first; keep the two in step)
DOC_ZH = """周期超频次：某项目在一个周期内支付超过一次（或 N 次）。

**查什么。** 按人和项目编码——跨就诊、跨机构——把该项目的数量按时间顺序逐个单位排列（`fee_ocur_time`，再按 `bkkp_sn`；数量 2 的明细为两个单位，最后不足一个的部分按一个单位计）。某个单位之前不到 `period_days` 天内已有 `max_count` 个**已支付**单位时，该单位为**超出**；其他单位为已支付。"之前的天数"按收费日期的自然日差计算（不看钟点），所以 `period_days: 15` 时，已支付单位之后第 14 天的单位超出，第 15 天的不超出。超出的单位不支付，也不计入后续判断：糖化血红蛋白每 15 天一次，第 1、10、20 天收费时只标记第 10 天（第 20 天距最近的已支付单位即第 1 天已 19 天）。含超出单位的明细为违规项，挡住它的已支付单位为涉及项（可能属于其他就诊或机构，证据写明其日期、机构和就诊；事前提醒对其他机构只写日期：`2026-03-01 其他机构`）。

只有匹配规则项目、在规则有效期和适用范围内的明细参与。基金未支付的明细（可扣金额为 0：丙类、转自费）完全不参与：既不算已支付也不标记。全额退费的明细不参与；部分退费的按净数量计。

**为什么。** 有临床间隔的检查和治疗（糖化血红蛋白每 3 个月、康复评定每 2 周）提前重复，要么没有必要，要么是虚构的。分散到不同就诊和医院可以躲过按次就诊的检查。国家第 8-4 批规则列了这类周期。

**扣款。** `excess_qty`：该明细的超出数量 × 单价 × 基金支付比例，不超过可扣金额。

**环节。** 事前提醒（`pre_alert`）和事后（`post_hoc`）。某单位是否已支付取决于此人此前跨就诊、跨机构的每个单位，因此事前提醒时把数据库中此人该项目的已存明细（其他就诊）与本次就诊已有明细和新医嘱一起检查。不用于事中（`in_process`）：该环节只审核未结算的住院，看不到已结算的单位，可能把已超出的单位当作已支付。
"""

from .base import ITEM_REF, LINE_FACT, Param, Reach, RuleType, excess_allocation, max_param

_KEY = "rule_key, psn_no, hilist_code"


# ---------------------------------------------------------------------------- in memory (pre-alert)
# The same check over the request's rows, for the pre-alert fast path: a transcription of the
# query above (tests/test_prealert_parity.py holds the two equal).
import datetime as dt
from decimal import ROUND_CEILING, Decimal
from .evidence import ZERO, Hit, excess_allocation as py_excess_allocation, qty, ref, line_fact, hit


def evaluate(ctx, ms: list[dict]) -> list[Hit]:
    """Per rule, person and code, units in time order; a unit is excess when ``max_count`` paid
    units lie fewer than ``period_days`` days before it (the query's walk, one unit at a time:
    its clusters only skip units that no paid unit can block)."""
    src = [m for m in ms if m["deductible"] > 0]
    units: dict[tuple, list[tuple]] = {}
    for m in src:
        for k in range(int(m["cnt"].to_integral_value(rounding=ROUND_CEILING))):
            units.setdefault((m["rule_key"], m["psn_no"], m["hilist_code"]), []).append(
                (m["fee_ocur_time"], m["bkkp_sn"], k, m)
            )
    excess: dict[tuple, Decimal] = {}  # (rule_key, bkkp_sn) -> excess units of the line
    blockers: dict[tuple, set] = {}  # (rule_key, bkkp_sn) -> bkkp_sn of the paid units that block it
    for us in units.values():
        us.sort(key=lambda u: u[:3])
        paid: list[tuple[dt.date, str]] = []
        for _t, sn, k, m in us:
            if len(paid) >= m["max_count"] and (m["fee_date"] - paid[0][0]).days < m["period_days"]:
                key = (m["rule_key"], sn)
                excess[key] = excess.get(key, ZERO) + min(m["cnt"] - k, 1)
                blockers.setdefault(key, set()).update(b for _d, b in paid)
            else:
                paid = (paid + [(m["fee_date"], sn)])[-m["max_count"] :]
    rows = [
        {**m, "excess": excess[(m["rule_key"], m["bkkp_sn"])]} for m in src if (m["rule_key"], m["bkkp_sn"]) in excess
    ]
    py_excess_allocation(rows, lambda r: (r["rule_key"], r["bkkp_sn"]))
    by_sn = {(m["rule_key"], m["bkkp_sn"]): m for m in src}
    out = []
    for a in rows:
        blk = sorted(
            (by_sn[(a["rule_key"], b)] for b in blockers[(a["rule_key"], a["bkkp_sn"])] if b != a["bkkp_sn"]),
            key=lambda b: (b["fee_ocur_time"], b["bkkp_sn"]),
        )
        before = a["cnt"] - a["excess_units"]
        mine = "本条前 " + qty(before) + " 次"
        if blk:
            paid_text = "、".join(f"{b['fee_date']:%Y-%m-%d} {b['fixmedins_code']} 就诊 {b['mdtrt_id']}" for b in blk)
            paid_text += "，及" + mine if before > 0 else ""
        else:
            paid_text = mine
        ev = (
            f"{ref(a)} 每 {a['period_days']} 天限 {a['max_count']} 次；{line_fact(a)}，超出 {qty(a['excess_units'])}"
            f"；此前 {a['period_days']} 天内已支付：{paid_text}"
        )
        out.append(hit(a, "violating" if a["claim"] > 0 else "related", a["claim"], "", ev))
        out += [Hit(a["rule_key"], a["mdtrt_id"], a["mdtrt_id"], b["bkkp_sn"], "related", ZERO, "", None) for b in blk]
    return list(dict.fromkeys(out))


RULE_TYPE = RuleType(
    name="period_limit",
    title="周期超频次",
    nature="超支付标准",
    mode="excess_qty",
    doc=__doc__,
    doc_zh=DOC_ZH,
    evaluate=evaluate,
    stages=("pre_alert", "post_hoc"),
    person_history=True,
    # a period counts the person's units of the code within period_days of each other
    reach=lambda rule: Reach(days=max_param(rule, "period_days", 1)),
    params=(
        Param("max_count", "int", "units paid at most within any period", required=True, per_item=True, minimum=1),
        Param("period_days", "int", "length of the period in calendar days", required=True, per_item=True, minimum=1),
    ),
    # Set-based walk: units split into clusters where the gap to the previous unit is at least
    # period_days (nothing before such a gap can block anything after it). Clusters of at most
    # max_count units are all paid; the others go through one recursive CTE that carries, per
    # cluster, the last max_count paid units — one step per unit, all clusters in parallel.
    query=f"""
        WITH RECURSIVE
        src AS (SELECT * FROM {{m}} WHERE deductible > 0),
        u AS (
            SELECT rule_key, psn_no, hilist_code, bkkp_sn, fee_ocur_time, fee_date, cnt, max_count, period_days,
                   unnest(range(CAST(ceil(cnt) AS BIGINT))) AS k
            FROM src),
        o AS (
            SELECT *, least(cnt - k, 1) AS usize,
                   row_number() OVER w AS pos,
                   date_diff('day', lag(fee_date) OVER w, fee_date) AS gap
            FROM u WINDOW w AS (PARTITION BY {_KEY} ORDER BY fee_ocur_time, bkkp_sn, k)),
        c AS (
            SELECT *, sum(CASE WHEN gap IS NULL OR gap >= period_days THEN 1 ELSE 0 END)
                          OVER (PARTITION BY {_KEY} ORDER BY pos ROWS UNBOUNDED PRECEDING) AS cl
            FROM o),
        cs AS (
            SELECT *, count(*) OVER (PARTITION BY {_KEY}, cl) AS cl_size,
                   row_number() OVER (PARTITION BY {_KEY}, cl ORDER BY pos) AS rn
            FROM c),
        cand AS MATERIALIZED (
            SELECT *, dense_rank() OVER (ORDER BY {_KEY}, cl) AS ck FROM cs WHERE cl_size > max_count),
        walk(ck, rn, paid, is_excess, blockers) AS (
            SELECT ck, rn, [{{{{'d': fee_date, 'sn': bkkp_sn}}}}], FALSE, NULL::STRUCT(d DATE, sn VARCHAR)[]
            FROM cand WHERE rn = 1
            UNION ALL
            SELECT c.ck, c.rn,
                   CASE WHEN array_length(w.paid) >= c.max_count AND date_diff('day', w.paid[1].d, c.fee_date) < c.period_days
                        THEN w.paid
                        ELSE list_slice(list_append(w.paid, {{{{'d': c.fee_date, 'sn': c.bkkp_sn}}}}), -c.max_count, -1) END,
                   array_length(w.paid) >= c.max_count AND date_diff('day', w.paid[1].d, c.fee_date) < c.period_days,
                   CASE WHEN array_length(w.paid) >= c.max_count AND date_diff('day', w.paid[1].d, c.fee_date) < c.period_days
                        THEN w.paid END
            FROM walk w JOIN cand c ON c.ck = w.ck AND c.rn = w.rn + 1),
        ex AS (
            SELECT c.rule_key, c.bkkp_sn, c.usize, w.blockers
            FROM walk w JOIN cand c ON c.ck = w.ck AND c.rn = w.rn
            WHERE w.is_excess),
        line_ex AS (
            SELECT src.*, e.excess FROM src
            JOIN (SELECT rule_key, bkkp_sn, sum(usize) AS excess FROM ex GROUP BY ALL) e USING (rule_key, bkkp_sn)),
        alloc AS ({excess_allocation("line_ex", "rule_key, bkkp_sn")}),
        blk AS (
            SELECT DISTINCT rule_key, bkkp_sn, b.sn AS b_sn
            FROM (SELECT rule_key, bkkp_sn, unnest(blockers) AS b FROM ex)),
        blk_l AS (
            SELECT blk.rule_key, blk.bkkp_sn, blk.b_sn, b.mdtrt_id AS b_visit, b.fixmedins_code AS b_inst,
                   b.fee_date AS b_date, b.fee_ocur_time AS b_time
            FROM blk JOIN src b ON b.rule_key = blk.rule_key AND b.bkkp_sn = blk.b_sn),
        blk_txt AS (
            SELECT rule_key, bkkp_sn,
                   string_agg(strftime(b_date, '%Y-%m-%d') || ' ' || b_inst || ' 就诊 ' || b_visit, '、'
                              ORDER BY b_time, b_sn) AS btext
            FROM blk_l WHERE b_sn <> bkkp_sn GROUP BY ALL)
        SELECT a.rule_key, a.mdtrt_id AS finding_key, a.mdtrt_id, a.bkkp_sn,
               CASE WHEN a.claim > 0 THEN 'violating' ELSE 'related' END AS role, a.claim, '' AS ev_head,
               {ITEM_REF} || ' 每 ' || a.period_days || ' 天限 ' || a.max_count || ' 次；' || {LINE_FACT}
                   || '，超出 ' || qty(a.excess_units) || '；此前 ' || a.period_days || ' 天内已支付：'
                   || coalesce(t.btext || CASE WHEN a.cnt - a.excess_units > 0 THEN '，及本条前 ' || qty(a.cnt - a.excess_units) || ' 次' ELSE '' END,
                               '本条前 ' || qty(a.cnt - a.excess_units) || ' 次') AS ev_line,
               CASE WHEN a.claim > 0 THEN a.excess_units END AS excess_units
        FROM alloc a LEFT JOIN blk_txt t USING (rule_key, bkkp_sn)
        UNION ALL
        SELECT DISTINCT l.rule_key, a.mdtrt_id, a.mdtrt_id, l.b_sn, 'related', 0, '', NULL, NULL
        FROM blk_l l JOIN alloc a ON a.rule_key = l.rule_key AND a.bkkp_sn = l.bkkp_sn
        WHERE l.b_sn <> l.bkkp_sn
    """,
)
