"""重复计费 duplicate_line: the same line billed twice.

**What it flags.** Two or more lines of one visit with the same code (`hilist_code`), the same
time, the same net quantity and the same unit price: every copy after the first, the first
being the one with the lowest `bkkp_sn` (compared as text). "The same time" depends on
`window`:

| window | same time means |
|---|---|
| `same_time` (default) | identical `fee_ocur_time`, to the second |
| `same_minute` | the same date, hour and minute |
| `same_hour` | the same date and clock hour |
| `same_day` | the same calendar date |

Quantities are net of refunds: a copy refunded in full is gone (nothing to flag), a copy
refunded in part no longer has the same quantity. Copies the fund did not pay (deductible 0)
are not flagged but still count as copies. The first line is a related line.

**Why it matters.** An order entered twice, or a line re-sent by the hospital system, bills the
fund twice for one service. Identical code, time, quantity and price leave no clinical
explanation.

**Deduction.** `whole_line` on each copy after the first.

**Stages.** All three: a copy is a copy as soon as both lines are billed.

**Example.**

```yaml
- id: R-DLN-001
  version: 1
  name: 同一时间重复计费
  type: duplicate_line
  params: {window: same_time}
```

gives `项目【静脉注射】(001201000040000) 2026-03-02 08:00:00 以相同数量 1、单价 10.00 元计费 2 条，首条 L10001，此条 L10002 为重复；2026-03-02 收费 1 次，金额 10.00 元`.
"""

#: the same documentation in Chinese (`medaudit rules explain` shows it first; keep the two in step)
DOC_ZH = """重复计费：同一条明细收了两次。

**查什么。** 同一次就诊中编码（`hilist_code`）、时间、净数量、单价都相同的两条或以上明细：第一条以外的每一份都命中，第一条指 `bkkp_sn`（按文本比较）最小的一条。"相同时间"取决于 `window`：

| window | 相同时间指 |
|---|---|
| `same_time`（默认） | `fee_ocur_time` 完全相同（精确到秒） |
| `same_minute` | 同一天的同一时、分 |
| `same_hour` | 同一天的同一钟点 |
| `same_day` | 同一自然日 |

数量为退费冲减后的净数量：全额退费的副本已不存在（不报），部分退费的副本数量已不同。基金未支付的副本（可扣金额为 0）不报，但仍算作副本。第一条明细为涉及项。

**为什么。** 医嘱录入两次或医院系统重复上传，同一服务基金付了两次；编码、时间、数量、单价完全相同，没有临床上的解释。

**扣款。** `whole_line`：第一条以外的每一份。

**环节。** 三个环节都适用：两条明细一旦都已收费，副本就是副本。
"""

from .base import ITEM_REF, LINE_FACT, Param, RuleType, claim, claim_of, price_text


# ---------------------------------------------------------------------------- in memory (pre-alert)
# The same check over the request's rows, for the pre-alert fast path: a transcription of the
# query above (tests/test_prealert_parity.py holds the two equal).
import datetime as dt
from .evidence import Hit, qty, price_text as py_price_text, ref, line_fact, hit


def _slot(t: dt.datetime, window: str) -> dt.datetime:
    if window == "same_day":
        return t.replace(hour=0, minute=0, second=0, microsecond=0)
    if window == "same_hour":
        return t.replace(minute=0, second=0, microsecond=0)
    if window == "same_minute":
        return t.replace(second=0, microsecond=0)
    return t


def evaluate(ctx, ms: list[dict]) -> list[Hit]:
    groups: dict[tuple, list[dict]] = {}
    for m in ms:
        w = m["window"] or "same_time"
        slot = _slot(m["fee_ocur_time"], w)
        groups.setdefault((m["rule_key"], m["mdtrt_id"], m["hilist_code"], slot, m["cnt"], m["pric"]), []).append(
            {**m, "_w": w, "slot": slot}
        )
    out = []
    for grp in groups.values():
        if len(grp) < 2:
            continue
        grp.sort(key=lambda r: r["bkkp_sn"])
        dup = [n > 0 and r["deductible"] > 0 for n, r in enumerate(grp)]
        if not any(dup):
            continue
        first = grp[0]["bkkp_sn"]
        for r, v in zip(grp, dup):
            ev = None
            if v:
                w, slot = r["_w"], r["slot"]
                when = (
                    f"{slot:%Y-%m-%d} 同日"
                    if w == "same_day"
                    else f"{slot:%Y-%m-%d %H} 时内"
                    if w == "same_hour"
                    else f"{slot:%Y-%m-%d %H:%M}"
                    if w == "same_minute"
                    else f"{slot:%Y-%m-%d %H:%M:%S}"
                )
                ev = (
                    f"{ref(r)} {when} 以相同数量 {qty(r['cnt'])}、单价 {py_price_text(r['pric'])} 元计费 {len(grp)} 条，"
                    f"首条 {first}，此条 {r['bkkp_sn']} 为重复；{line_fact(r)}"
                )
            out.append(hit(r, "violating" if v else "related", claim_of("whole_line", r, carries=v), "", ev))
    return out


#: the time slot two lines must share (the rule's window)
_SLOT = """CASE coalesce("window", 'same_time')
                          WHEN 'same_day' THEN date_trunc('day', fee_ocur_time)
                          WHEN 'same_hour' THEN date_trunc('hour', fee_ocur_time)
                          WHEN 'same_minute' THEN date_trunc('minute', fee_ocur_time)
                          ELSE fee_ocur_time END"""

RULE_TYPE = RuleType(
    name="duplicate_line",
    title="重复计费",
    nature="重复收费",
    mode="whole_line",
    doc=__doc__,
    doc_zh=DOC_ZH,
    evaluate=evaluate,
    items="optional",
    params=(
        Param(
            "window",
            "choice",
            "same_time, same_minute, same_hour or same_day",
            default="same_time",
            choices=("same_time", "same_minute", "same_hour", "same_day"),
            per_item=True,
        ),
    ),
    query=f"""
        -- groups of two lines or more, found by grouping (0.2% of the lines here): the window
        -- below then numbers the lines of those groups only, not every matched line. Nearly
        -- every line is a group of its own, so the groups are found by one 64-bit hash of the
        -- six keys (a third cheaper than grouping by the six columns); lines whose hashes
        -- collide only add candidates, which the exact window below counts as groups of one.
        -- The matched lines are read twice rather than kept (a copy of every matched line cost
        -- more than matching them again). Every window lies within a day, so only lines with
        -- another line of the visit, code and day (``day_repeat``) can be in a group: the
        -- grouping then sees 0.5% of the lines, not all of them (2.8 -> 0.4 CPU s at 10M lines).
        WITH cand AS (
            SELECT hash(rule_key, mdtrt_id, hilist_code, {_SLOT}, cnt, pric) AS h FROM {{m}}
            WHERE day_repeat GROUP BY 1 HAVING count(*) > 1),
        k AS (SELECT *, {_SLOT} AS slot FROM {{m}}),
        g AS (
            SELECT k.*, row_number() OVER w AS rn, count(*) OVER w AS n, first_value(k.bkkp_sn) OVER w AS first_sn
            FROM k WHERE k.day_repeat AND hash(k.rule_key, k.mdtrt_id, k.hilist_code, k.slot, k.cnt, k.pric) IN (SELECT h FROM cand)
            WINDOW w AS (PARTITION BY k.rule_key, k.mdtrt_id, k.hilist_code, k.slot, k.cnt, k.pric ORDER BY k.bkkp_sn
                         ROWS BETWEEN UNBOUNDED PRECEDING AND UNBOUNDED FOLLOWING)),
        f AS (
            SELECT *, bool_or(rn > 1 AND deductible > 0) OVER (PARTITION BY rule_key, mdtrt_id, hilist_code, slot, cnt, pric) AS any_dup
            FROM g WHERE n > 1)
        SELECT rule_key, mdtrt_id AS finding_key, mdtrt_id, bkkp_sn,
               CASE WHEN rn > 1 AND deductible > 0 THEN 'violating' ELSE 'related' END AS role,
               {claim("whole_line", carries="rn > 1 AND deductible > 0")} AS claim,
               '' AS ev_head,
               CASE WHEN rn > 1 AND deductible > 0 THEN
                   {ITEM_REF} || ' ' || CASE coalesce("window", 'same_time')
                           WHEN 'same_day' THEN strftime(slot, '%Y-%m-%d') || ' 同日'
                           WHEN 'same_hour' THEN strftime(slot, '%Y-%m-%d %H') || ' 时内'
                           WHEN 'same_minute' THEN strftime(slot, '%Y-%m-%d %H:%M')
                           ELSE strftime(slot, '%Y-%m-%d %H:%M:%S') END
                   || ' 以相同数量 ' || qty(cnt) || '、单价 ' || {price_text("pric")} || ' 元计费 ' || n
                   || ' 条，首条 ' || first_sn || '，此条 ' || bkkp_sn || ' 为重复；' || {LINE_FACT} END AS ev_line
        FROM f WHERE any_dup
    """,
)
