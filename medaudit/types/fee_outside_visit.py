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

from .base import Param, RuleType

from ..semantics import case, cat, coalesce, col, day_diff
from .line_check import ITEM, LINE, day, line_check

_d0, _d1 = col("begntime").cast("DATE"), col("endtime").cast("DATE")  # the visit's first and last day
_early, _late = day_diff(col("fee_date"), _d0), day_diff(_d1, col("fee_date"))  # days before / after them
_tol = col("tolerance_days")

# One declaration, both executions: the query and the pre-alert evaluator are generated from it.
QUERY, evaluate = line_check(
    mode="whole_line",
    where=(col("deductible") > 0) & ((_early > coalesce(_tol, 0)) | (_late > coalesce(_tol, 0))),
    ev_head=cat(
        "就诊期 ",
        day(_d0),
        " 至 ",
        coalesce(day(_d1), "（未结束）"),
        case((_tol > 0, cat("（允许前后 ", _tol, " 天）")), default=""),
    ),
    ev_line=cat(
        ITEM,
        case((_early > _tol, cat(" 早于就诊开始 ", _early, " 天，")), default=cat(" 晚于就诊结束 ", _late, " 天，")),
        LINE,
    ),
)


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
    query=QUERY,
)
