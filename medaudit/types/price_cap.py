"""超标准收费 price_cap: a unit price above the cap for the institution's level.

**What it flags.** A matched line (every line when the rule names no items) whose unit price
`pric` is above the cap that applies to it. The cap, for the institution's level (from
`hosp_lv`; level 0, 未定级, uses the level-1 cap), comes from, in this order:

1. the rule's item table: column `lv1_pric`, `lv2_pric` or `lv3_pric` of the line's level;
2. the rule's item table: column `cap` (any level);
3. the `hilist` catalogue row of the code in force on the fee date (`begndate`..`enddate`,
   inclusive): its `lv1_pric`/`lv2_pric`/`lv3_pric` (several rows in force: the highest cap).

A line with no cap from any of these is not judged. A price equal to the cap is fine. Lines
the fund did not pay (deductible 0) are not flagged.

**Why it matters.** Service prices are set by the price bureau per hospital level; charging
a level-2 price at a level-1 clinic, or above the list price, takes the difference from the
fund (and from the patient).

**Deduction.** `price_diff`: (price - cap) x net quantity x the line's fund share
(deductible / amount), never more than the line's deductible.

**Stages.** All three: one line and its cap are all it needs.

**Example.**

```yaml
- id: R-PRC-001
  version: 1
  name: 诊查费超标准收费
  type: price_cap
  items:
    rows:
      - {code: "001102000010000", lv1_pric: 8, lv2_pric: 10, lv3_pric: 12}
```

A level-2 hospital charging 12.00 for two consultations gives
`项目【普通门诊诊查费】(001102000010000) 二级机构限价 10.00 元（规则限价），实际单价 12.00 元；2026-03-02 收费 2 次，金额 24.00 元，超标准 4.00 元`.
Without price columns in the rule (`items` may be left out altogether), the caps come from
the `hilist` catalogue and the evidence says `（医保目录限价）`.
"""

#: the same documentation in Chinese (`medaudit rules explain` shows it first; keep the two in step)
DOC_ZH = """超标准收费：单价高于机构等级对应的限价。

**查什么。** 匹配的明细（规则未列项目时为所有明细）单价 `pric` 高于适用的限价。限价按机构等级（取自 `hosp_lv`；0 级即未定级按一级），依次取自：

1. 规则项目表中与明细等级对应的列 `lv1_pric`、`lv2_pric` 或 `lv3_pric`；
2. 规则项目表的 `cap` 列（不分等级）；
3. `hilist` 目录中该编码在收费日期有效（`begndate`..`enddate`，首尾都含）的行的 `lv1_pric`/`lv2_pric`/`lv3_pric`（多行有效时取最高的限价）。

三处都没有限价的明细不判断。单价等于限价不算。基金未支付的明细（可扣金额为 0）不报。

**为什么。** 服务价格由价格主管部门按医院等级制定；一级机构按二级价格收费，或高于目录价格收费，差价由基金（和患者）承担。

**扣款。** `price_diff`：（单价 − 限价）× 净数量 × 基金支付比例（可扣金额 / 金额），不超过该明细可扣金额。

**环节。** 三个环节都适用：一条明细和它的限价就能判断。
"""

from .base import Param, RuleType

from ..semantics import case, cat, col, level_price
from .line_check import ITEM, LINE, CatalogueCap, level_cn, line_check, price_text, yuan

_level, _pric = col("inst_level"), col("pric")
#: the rule's cap: the item's column for the line's level, else its cap at any level
_rule_cap = level_price.build(_level, col("lv1_pric"), col("lv2_pric"), col("lv3_pric"))
_rule_cap = case((_rule_cap.is_null(), col("cap")), default=_rule_cap)
#: the cap that applies: the rule's, else the catalogue's (asked only when the rule has none)
_catalogue_cap = CatalogueCap()
_cap = case((_rule_cap.is_null(), _catalogue_cap), default=_rule_cap)
_over = (_pric - _cap) * col("cnt")  # the overcharge in yuan

# One declaration, both executions: the query and the pre-alert evaluator are generated from it.
QUERY, evaluate = line_check(
    where=(col("deductible") > 0) & (_pric > _cap),
    mode="price_diff",
    claim_inputs={"overcharge": _over},
    ev_head=cat(""),
    ev_line=cat(
        ITEM,
        " ",
        case((_level.eq(0), "未定级机构（按一级）"), default=cat(level_cn(_level), "机构")),
        "限价 ",
        price_text(_cap),
        " 元（",
        case((_rule_cap.is_null(), "医保目录限价"), default="规则限价"),
        "），实际单价 ",
        price_text(_pric),
        " 元；",
        LINE,
        "，超标准 ",
        yuan(_over),
        " 元",
    ),
    lookups=(_catalogue_cap,),
)


RULE_TYPE = RuleType(
    name="price_cap",
    title="超标准收费",
    nature="超支付标准",
    mode="price_diff",
    doc=__doc__,
    doc_zh=DOC_ZH,
    evaluate=evaluate,
    items="optional",
    params=(
        Param("lv1_pric", "number", "cap at level-1 (and level-0) institutions", per_item=True, minimum=0),
        Param("lv2_pric", "number", "cap at level-2 institutions", per_item=True, minimum=0),
        Param("lv3_pric", "number", "cap at level-3 institutions", per_item=True, minimum=0),
        Param("cap", "number", "cap at any level (when the level's own column is empty)", per_item=True, minimum=0),
    ),
    query=QUERY,
)
