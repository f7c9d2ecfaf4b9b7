"""限机构等级 restrict_hosp_level: an item paid only at hospitals of a higher level.

**What it flags.** A matched line billed by an institution whose level is below `min_level`.
The level comes from `hosp_lv`: 01-04 and 12 are level 3, 05-07 and 13 level 2, 08-10 and 14
level 1, 11 (none) level 0.

**Why it matters.** Some drugs are paid only where the hospital can manage them (national
batch 5: 参附注射液 限二级及以上医疗机构). A level-1 clinic billing them is outside the scope.

**Deduction.** `whole_line`.

**Example.**

```yaml
- id: R-LVL-001
  version: 1
  name: 限二级及以上医疗机构
  type: restrict_hosp_level
  items: {codes: ["ZA05CAC0029010102312"]}
  params: {min_level: 2}
```

gives `机构等级为一级（hosp_lv 08）；药品【参附注射液】(ZA05CAC0029010102312) 限二级及以上医疗机构使用，...`.
"""

#: the same documentation in Chinese (`medaudit rules explain` shows it first; keep the two in step)
DOC_ZH = """限机构等级：只在较高等级医院支付的项目。

**查什么。** 匹配的明细，其收费机构的等级低于 `min_level`。等级取自 `hosp_lv`：01-04 和 12 为三级，05-07 和 13 为二级，08-10 和 14 为一级，11（未定级）为 0 级。

**为什么。** 有些药品只在有能力管理的医院支付（国家第 5 批：参附注射液限二级及以上医疗机构），一级机构收费即超出支付范围。

**扣款。** `whole_line`：整条明细。
"""

from .base import Param, RuleType

from ..semantics import cat, coalesce, col
from .line_check import ITEM, LINE, level_cn, line_check

# One declaration, both executions: the query and the pre-alert evaluator are generated from it.
QUERY, evaluate = line_check(
    mode="whole_line",
    where=(col("inst_level") < col("min_level")) & (col("deductible") > 0),
    ev_head=cat("机构等级为", level_cn(col("inst_level")), "（hosp_lv ", coalesce(col("hosp_lv"), ""), "）"),
    ev_line=cat(ITEM, " 限", level_cn(col("min_level")), "及以上医疗机构使用，", LINE),
)


RULE_TYPE = RuleType(
    name="restrict_hosp_level",
    title="限机构等级",
    nature="超支付范围",
    mode="whole_line",
    doc=__doc__,
    doc_zh=DOC_ZH,
    evaluate=evaluate,
    params=(
        Param(
            "min_level",
            "int",
            "lowest institution level allowed: 1, 2 or 3",
            required=True,
            choices=(1, 2, 3),
            per_item=True,
        ),
    ),
    query=QUERY,
)
