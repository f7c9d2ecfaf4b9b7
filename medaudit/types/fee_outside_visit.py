"""费用超出就诊期 fee_outside_visit: a fee dated outside the visit it is billed to.

**What it flags.** A matched line (every line when the rule names no items) whose fee date
(`fee_ocur_time`, as a calendar date) is before the visit's start date (`date(begntime)`) or
after its end date (`date(endtime)`) by more than `tolerance_days` calendar days. Only dates
count: a fee at 07:00 on the day of an 08:00 admission is inside the visit. A visit without an
end (still open, at stage `in_process` or `pre_alert`) is only checked against its start.
Lines the fund did not pay (deductible 0) are not flagged.

**Why it matters.** A fee before admission or after discharge was not given during the stay it
is billed to: either it belongs to another visit (an outpatient test moved into a stay to be
paid at the inpatient rate) or it was never given at all (charges added after discharge).

**Deduction.** `whole_line`: the line's deductible amount.

**Stages.** All three: a fee can be judged against the visit's dates as soon as it is billed.

**Example.**

```yaml
- id: R-OUT-001
  version: 1
  name: 费用发生时间超出住院期间
  type: fee_outside_visit
  params: {tolerance_days: 0}
```

A CT billed on 2026-03-08 to a stay of 2026-03-01 to 2026-03-05 gives
`就诊期 2026-03-01 至 2026-03-05；项目【X线计算机体层(CT)平扫】(002103020010000) 晚于就诊结束 3 天，2026-03-08 收费 1 次，金额 120.00 元`.
"""

#: the same documentation in Chinese (`medaudit rules explain` shows it first; keep the two in step)
DOC_ZH = """费用超出就诊期：明细的收费日期不在其所属就诊的期间内。

**查什么。** 匹配的明细（规则未列项目时为所有明细），其收费日期（`fee_ocur_time` 的日期）早于就诊开始日期（`begntime` 的日期）或晚于结束日期（`endtime` 的日期）超过 `tolerance_days` 个自然日。只比较日期：08:00 入院当天 07:00 的收费在就诊期内。没有结束时间的就诊（仍在院，事中或事前提醒环节）只与开始日期比较。基金未支付的明细（可扣金额为 0）不报。

**为什么。** 入院前或出院后的收费不是在这次住院期间发生的：要么属于另一次就诊（把门诊检查挪进住院按住院报销），要么根本没有发生（出院后追加收费）。

**扣款。** `whole_line`：该明细的可扣金额。

**环节。** 三个环节都适用：明细一经收费即可与就诊日期比较。
"""

from .base import ITEM_REF, LINE_FACT, Param, RuleType


# ---------------------------------------------------------------------------- in memory (pre-alert)
# The same check over the request's rows, for the pre-alert fast path: a transcription of the
# query above (tests/test_prealert_parity.py holds the two equal).
import datetime as dt
from .evidence import Hit, ref, line_fact, hit


def evaluate(ctx, ms: list[dict]) -> list[Hit]:
    out = []
    for m in ms:
        if not m["deductible"] > 0 or m["begntime"] is None:
            continue
        d0 = m["begntime"].date() if isinstance(m["begntime"], dt.datetime) else m["begntime"]
        d1 = m["endtime"].date() if isinstance(m["endtime"], dt.datetime) else m["endtime"]
        early = (d0 - m["fee_date"]).days
        late = (m["fee_date"] - d1).days if d1 is not None else None
        tol = m["tolerance_days"]
        t0 = tol if tol is not None else 0
        if not (early > t0 or (late is not None and late > t0)):
            continue
        head = (
            f"就诊期 {d0:%Y-%m-%d} 至 "
            + (f"{d1:%Y-%m-%d}" if d1 is not None else "（未结束）")
            + (f"（允许前后 {tol} 天）" if tol is not None and tol > 0 else "")
        )
        if tol is not None and early > tol:
            ev = f"{ref(m)} 早于就诊开始 {early} 天，{line_fact(m)}"
        elif late is not None:
            ev = f"{ref(m)} 晚于就诊结束 {late} 天，{line_fact(m)}"
        else:
            ev = None
        out.append(hit(m, "violating", m["deductible"], head, ev))
    return out


RULE_TYPE = RuleType(
    name="fee_outside_visit",
    title="费用超出就诊期",
    nature="超支付范围",
    mode="whole_line",
    doc=__doc__,
    doc_zh=DOC_ZH,
    evaluate=evaluate,
    items="optional",
    params=(
        Param(
            "tolerance_days",
            "int",
            "calendar days a fee may lie before the start or after the end",
            default=0,
            minimum=0,
        ),
    ),
    query=f"""
        WITH x AS (
            SELECT *, CAST(begntime AS DATE) AS d0, CAST(endtime AS DATE) AS d1,
                   date_diff('day', fee_date, CAST(begntime AS DATE)) AS early,
                   date_diff('day', CAST(endtime AS DATE), fee_date) AS late
            FROM {{m}} WHERE deductible > 0)
        SELECT rule_key, mdtrt_id AS finding_key, mdtrt_id, bkkp_sn, 'violating' AS role, deductible AS claim,
               '就诊期 ' || strftime(d0, '%Y-%m-%d') || ' 至 ' || coalesce(strftime(d1, '%Y-%m-%d'), '（未结束）')
                   || CASE WHEN tolerance_days > 0 THEN '（允许前后 ' || tolerance_days || ' 天）' ELSE '' END AS ev_head,
               {ITEM_REF} || CASE WHEN early > tolerance_days THEN ' 早于就诊开始 ' || early || ' 天，'
                                  ELSE ' 晚于就诊结束 ' || late || ' 天，' END || {LINE_FACT} AS ev_line
        FROM x
        WHERE early > coalesce(tolerance_days, 0) OR late > coalesce(tolerance_days, 0)
    """,
)
