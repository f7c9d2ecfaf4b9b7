"""限就医方式 restrict_visit_type: an item paid only for inpatients (or only outpatients).

**What it flags.** A matched line of a visit that is not of the `allowed` kind. Inpatient means
a `med_type` starting with 2 (21, 22, 24, 28 day surgery, ...); everything else is outpatient,
13 emergency included. `med_types` lists extra visit types that are allowed too (for
example 14 outpatient chronic disease for a drug otherwise limited to inpatients).

**Why it matters.** Parenteral nutrition and many injections are paid only for inpatients
who have been screened for the need (national batch 4); billed at an outpatient visit they
are outside the scope the fund pays for.

**Deduction.** `whole_line`.

**Example.**

```yaml
- id: R-VIS-001
  version: 1
  name: 限住院使用
  type: restrict_visit_type
  items: {codes: ["XB05BAU012B002010102180"]}
  params: {allowed: inpatient}
```

gives `就诊类型为 11（普通门诊）；药品【...】(XB05BAU012B002010102180) 限住院使用，...`.
"""

#: the same documentation in Chinese (`medaudit rules explain` shows it first; keep the two in step)
DOC_ZH = """限就医方式：只对住院（或只对门诊）支付的项目。

**查什么。** 匹配的明细，所在就诊不是 `allowed` 规定的类型。住院指 `med_type` 以 2 开头（21、22、24、28 日间手术……），其余都是门诊，包括 13 急诊。`med_types` 列出另外允许的就诊类型（例如某个限住院的药品另外允许 14 门诊慢特病）。

**为什么。** 肠外营养和很多注射剂只对经过评估的住院病人支付（国家第 4 批），在门诊收费即超出基金支付范围。

**扣款。** `whole_line`：整条明细。
"""

from .base import Param, RuleType

from ..semantics import case, cat, coalesce, col, join_list, list_contains
from .line_check import ITEM, LINE, line_check, med_type_cn

# One declaration, both executions: the query and the pre-alert evaluator are generated from it.
QUERY, evaluate = line_check(
    mode="whole_line",
    where=(col("deductible") > 0)
    & col("inpatient").ne(col("allowed").eq("inpatient"))
    & ~coalesce(list_contains(col("med_types"), col("med_type")), False),
    ev_head=cat("就诊类型为 ", col("med_type"), "（", med_type_cn(col("med_type")), "）"),
    ev_line=cat(
        ITEM,
        " 限",
        case((col("allowed").eq("inpatient"), "住院"), default="门诊"),
        "使用",
        coalesce(cat("（另可用于 ", join_list(col("med_types"), "、"), "）"), ""),
        "，",
        LINE,
    ),
)


RULE_TYPE = RuleType(
    name="restrict_visit_type",
    title="限就医方式",
    nature="超支付范围",
    mode="whole_line",
    doc=__doc__,
    doc_zh=DOC_ZH,
    evaluate=evaluate,
    params=(
        Param(
            "allowed",
            "choice",
            "inpatient or outpatient",
            required=True,
            choices=("inpatient", "outpatient"),
            per_item=True,
        ),
        Param("med_types", "str_list", "extra med_type codes that are allowed as well", per_item=True),
    ),
    query=QUERY,
)
