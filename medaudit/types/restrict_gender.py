"""限性别 restrict_gender: an item for one gender billed to a person of the other.

**What it flags.** A matched line whose person's gender (`mdtrt_d.gend`) is 1 (male) or 2
(female) and differs from the gender the item is restricted to. Gender 0 (unknown) and 9
(unstated) are never flagged: nothing contradicts them.

**Why it matters.** Gender-specific drugs and services (a uterine X-ray, a prostate drug)
billed to the other gender are either coding errors or a sign that the claim was invented or
that someone else's insurance card was used. The national knowledge batch 1 lists 6,472 drug
codes and 390 service items restricted by gender.

**Deduction.** `whole_line`: the line's deductible amount.

**Example.**

```yaml
- id: R-SEX-001
  version: 1
  name: 限女性使用的检查项目
  type: restrict_gender
  items: {codes: ["002101030300000"]}   # 子宫造影
  params: {gender: 2}
```

A man billed 子宫造影 once for 180.00 gives the finding
`患者性别为男；项目【子宫造影】(002101030300000) 限女性使用，2026-03-02 收费 1 次，金额 180.00 元`.
The gender may also be given per item, as a `gender` column of the item table.
"""

#: the same documentation in Chinese (`medaudit rules explain` shows it first; keep the two in step)
DOC_ZH = """限性别：限定某一性别的项目用于另一性别的人。

**查什么。** 匹配的明细，其参保人性别（`mdtrt_d.gend`）为 1（男）或 2（女），且与项目限定的性别不同。性别 0（未知）和 9（未说明）从不命中：没有可矛盾之处。

**为什么。** 限性别的药品和服务（子宫造影、前列腺用药）用于另一性别，要么是编码错误，要么说明就诊是虚构的或冒用他人医保卡。国家第 1 批规则列了 6,472 个限性别药品编码和 390 项服务项目。

**扣款。** `whole_line`：该明细的可扣金额。
"""

from .base import Param, RuleType

from ..semantics import cat, col
from .line_check import ITEM, LINE, gender_cn, line_check

# One declaration, both executions: the query and the pre-alert evaluator are generated from it.
QUERY, evaluate = line_check(
    mode="whole_line",
    where=col("gend").isin("1", "2") & col("gend").ne(col("gender")) & (col("deductible") > 0),
    ev_head=cat("患者性别为", gender_cn(col("gend"))),
    ev_line=cat(ITEM, " 限", gender_cn(col("gender")), "性使用，", LINE),
)


RULE_TYPE = RuleType(
    name="restrict_gender",
    title="限性别",
    nature="超支付范围",
    mode="whole_line",
    doc=__doc__,
    doc_zh=DOC_ZH,
    evaluate=evaluate,
    params=(
        Param(
            "gender",
            "choice",
            "the gender the item is for: 1 male, 2 female",
            required=True,
            choices=("1", "2"),
            per_item=True,
        ),
    ),
    query=QUERY,
)
