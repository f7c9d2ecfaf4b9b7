"""目录外 not_in_catalog: a code the insurance catalogue does not hold on the fee date.

**What it flags.** A matched line (every line when the rule names no items; name codes or
prefixes to limit it, e.g. `prefixes: [X, Z]` for drugs) whose `hilist_code` has no row in the
`hilist` knowledge table in force on the fee date: no row with that code at all, or only rows
whose `begndate`..`enddate` (both inclusive, either may be empty) do not cover the fee date.
**Only when a catalogue is loaded:** with an empty `hilist` table the type flags nothing (it
cannot tell a missing code from a missing catalogue); load the catalogue as a knowledge table
of the batch. Lines the fund did not pay (deductible 0, e.g. switched to self-pay) are not
flagged.

**Why it matters.** The fund pays only for drugs, services and consumables of the catalogue.
A code outside it (an expired code, a hospital's own code reported as a national one, a drug
delisted at the start of the year) should have been paid by the patient.

**Deduction.** `whole_line`: the line's deductible amount.

**Stages.** All three: one line and the catalogue are all it needs.

**Example.**

```yaml
- id: R-CAT-001
  version: 1
  name: 医保目录外药品
  type: not_in_catalog
  items: {prefixes: [X, Z]}
```

gives `药品【某注射液】(XA01BAA001A001010100001) 不在医保目录内；2026-03-02 收费 1 次，金额 35.00 元`,
or, for a code whose catalogue row has expired,
`... 医保目录有效期 2020-01-01 至 2025-12-31，收费日期不在有效期内；...`.
"""

#: the same documentation in Chinese (`medaudit rules explain` shows it first; keep the two in step)
DOC_ZH = """目录外：收费日期当天医保目录中没有的编码。

**查什么。** 匹配的明细（规则未列项目时为所有明细；可用编码或前缀限定，例如药品用 `prefixes: [X, Z]`），其 `hilist_code` 在 `hilist` 知识表中没有收费日期当天有效的行：根本没有该编码，或只有 `begndate`..`enddate`（首尾都含，任一可为空）不覆盖收费日期的行。**仅在加载了目录时生效：** `hilist` 表为空时本类型不报任何问题（无法区分编码缺失和目录缺失），请把目录作为批次的知识表加载。基金未支付的明细（可扣金额为 0，例如转自费）不报。

**为什么。** 基金只支付目录内的药品、服务和耗材。目录外的编码（已失效的编码、医院自编码冒充国家编码、年初被调出目录的药品）应由患者自付。

**扣款。** `whole_line`：该明细的可扣金额。

**环节。** 三个环节都适用：一条明细加上目录就能判断。
"""

from ..semantics import case, cat, col
from .base import RuleType
from .line_check import ITEM, LINE, CatalogueStatus, line_check

#: the catalogue's word on the line's code on its fee date (loaded at all, in force, its spans)
CATALOGUE = CatalogueStatus()

# One declaration, both executions: the query and the pre-alert evaluator are generated from it.
QUERY, evaluate = line_check(
    mode="whole_line",
    # only with a catalogue (an empty one cannot tell a missing code from a missing catalogue);
    # lines the fund did not pay are not flagged
    where=(col("deductible") > 0) & CATALOGUE.loaded & ~CATALOGUE.in_force,
    ev_head=cat(""),
    ev_line=cat(
        ITEM,
        case(
            (CATALOGUE.spans.is_null(), " 不在医保目录内；"),
            default=cat(" 医保目录有效期 ", CATALOGUE.spans, "，收费日期不在有效期内；"),
        ),
        LINE,
    ),
    lookups=(CATALOGUE,),
)


RULE_TYPE = RuleType(
    name="not_in_catalog",
    title="目录外",
    nature="超支付范围",
    mode="whole_line",
    doc=__doc__,
    doc_zh=DOC_ZH,
    evaluate=evaluate,
    items="optional",
    query=QUERY,
)
