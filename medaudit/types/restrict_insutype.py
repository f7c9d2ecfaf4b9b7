"""限险种 restrict_insutype: an item the person's insurance type does not pay for.

**What it flags.** A matched line whose visit's `insutype` is not in `allowed`
(310 employee basic, 390 resident basic, 340 retired cadres, 410 work injury, 510 maternity).

**Why it matters.** Some drugs are in the work-injury or maternity catalogue only (national
batch 3: 疤痕止痒软化膏 and rabies vaccine are work-injury drugs). Billed to basic medical
insurance they are paid from the wrong fund.

**Deduction.** `whole_line`.

**Example.**

```yaml
- id: R-INS-001
  version: 1
  name: 工伤保险目录用药
  type: restrict_insutype
  items: {codes: ["ZH01AAB0066010100716"]}
  params: {allowed: ["410"]}
```

gives `患者险种为 310（职工基本医疗保险）；药品【疤痕止痒软化膏】(ZH01AAB0066010100716) 限 410（工伤保险） 支付，...`.
"""

#: the same documentation in Chinese (`medaudit rules explain` shows it first; keep the two in step)
DOC_ZH = """限险种：参保人的险种不支付的项目。

**查什么。** 匹配的明细，其就诊的 `insutype` 不在 `allowed` 中（310 职工基本医疗保险、390 城乡居民基本医疗保险、340 离休人员、410 工伤保险、510 生育保险）。

**为什么。** 有些药品只在工伤或生育目录中（国家第 3 批：疤痕止痒软化膏和狂犬疫苗为工伤用药），记在基本医疗保险上就是由错误的基金支付。

**扣款。** `whole_line`：整条明细。
"""

from .base import Param, RuleType

from ..semantics import cat, col, join_list, list_contains
from .line_check import ITEM, LINE, insutype_cn, line_check

# One declaration, both executions: the query and the pre-alert evaluator are generated from it.
QUERY, evaluate = line_check(
    mode="whole_line",
    where=~list_contains(col("allowed"), col("insutype")) & (col("deductible") > 0),
    ev_head=cat("患者险种为 ", col("insutype"), "（", insutype_cn(col("insutype")), "）"),
    ev_line=cat(
        ITEM, " 限 ", join_list(col("allowed"), "、", lambda x: cat(x, "（", insutype_cn(x), "）")), " 支付，", LINE
    ),
)


RULE_TYPE = RuleType(
    name="restrict_insutype",
    title="限险种",
    nature="超支付范围",
    mode="whole_line",
    doc=__doc__,
    doc_zh=DOC_ZH,
    evaluate=evaluate,
    params=(
        Param("allowed", "str_list", "insurance types that may be billed, e.g. [410]", required=True, per_item=True),
    ),
    query=QUERY,
)
