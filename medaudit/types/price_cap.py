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

from ..semantics import level_price
from .base import ITEM_REF, LINE_FACT, Param, RuleType, fund_share_claim, hilist_cap, hilist_caps_join, price_text


# ---------------------------------------------------------------------------- in memory (pre-alert)
# The same check over the request's rows, for the pre-alert fast path: a transcription of the
# query above (tests/test_prealert_parity.py holds the two equal).
from ..semantics import fund_share_claim as fund_share_claim_piece
from .evidence import Hit, yuan, price_text as py_price_text, ref, line_fact, level_cn, hit


def evaluate(ctx, ms: list[dict]) -> list[Hit]:
    out = []
    for m in ms:
        if not m["deductible"] > 0:
            continue
        lv = m["inst_level"]
        own = level_price.py(lv, m["lv1_pric"], m["lv2_pric"], m["lv3_pric"])
        rule_cap = own if own is not None else m["cap"]
        cap = rule_cap if rule_cap is not None else ctx.cap(m)
        if cap is None or not m["pric"] > cap:
            continue
        over = (m["pric"] - cap) * m["cnt"]
        claim = fund_share_claim_piece.py(over, m["deductible"], m["amt"])
        where = "未定级机构（按一级）" if lv == 0 else level_cn(lv) + "机构"
        src = "规则限价" if rule_cap is not None else "医保目录限价"
        ev = (
            f"{ref(m)} {where}限价 {py_price_text(cap)} 元（{src}），实际单价 {py_price_text(m['pric'])} 元；{line_fact(m)}"
            f"，超标准 {yuan(over)} 元"
        )
        out.append(hit(m, "violating", claim, "", ev))
    return out


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
    query=f"""
        WITH c AS (
            SELECT m.*,
                   coalesce({level_price.sql("m.inst_level", "m.lv1_pric", "m.lv2_pric", "m.lv3_pric")}, m.cap) AS rule_cap,
                   {hilist_cap("m", "k")} AS cat_cap
            FROM {{m}} m {hilist_caps_join("m")}
            WHERE m.deductible > 0),
        x AS (
            SELECT *, coalesce(rule_cap, cat_cap) AS the_cap FROM c
            WHERE pric > coalesce(rule_cap, cat_cap))
        SELECT rule_key, mdtrt_id AS finding_key, mdtrt_id, bkkp_sn, 'violating' AS role,
               {fund_share_claim("(pric - the_cap) * cnt")} AS claim,
               '' AS ev_head,
               {ITEM_REF} || ' ' || CASE WHEN inst_level = 0 THEN '未定级机构（按一级）' ELSE level_cn(inst_level) || '机构' END
                   || '限价 ' || {price_text("the_cap")} || ' 元（' || CASE WHEN rule_cap IS NOT NULL THEN '规则限价' ELSE '医保目录限价' END
                   || '），实际单价 ' || {price_text("pric")} || ' 元；' || {LINE_FACT}
                   || '，超标准 ' || yuan((pric - the_cap) * cnt) || ' 元' AS ev_line
        FROM x
    """,
)
