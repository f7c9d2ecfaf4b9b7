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

from .base import ITEM_REF, LINE_FACT, Param, RuleType


# ---------------------------------------------------------------------------- in memory (pre-alert)
# The same check over the request's rows, for the pre-alert fast path: a transcription of the
# query above (tests/test_prealert_parity.py holds the two equal).
from .evidence import Hit, ref, line_fact, insutype_cn, hit


def evaluate(ctx, ms: list[dict]) -> list[Hit]:
    out = []
    for m in ms:
        allowed, t = m["allowed"], m["insutype"]
        if allowed is None or t is None or t in allowed or not m["deductible"] > 0:
            continue
        names = "、".join(f"{x}（{insutype_cn(x)}）" for x in allowed)
        out.append(
            hit(
                m,
                "violating",
                m["deductible"],
                f"患者险种为 {t}（{insutype_cn(t)}）",
                f"{ref(m)} 限 {names} 支付，{line_fact(m)}",
            )
        )
    return out


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
    query=f"""
        SELECT rule_key, mdtrt_id AS finding_key, mdtrt_id, bkkp_sn, 'violating' AS role, deductible AS claim,
               '患者险种为 ' || insutype || '（' || insutype_cn(insutype) || '）' AS ev_head,
               {ITEM_REF} || ' 限 ' || array_to_string(list_transform(allowed, lambda x: x || '（' || insutype_cn(x) || '）'), '、')
                   || ' 支付，' || {LINE_FACT} AS ev_line
        FROM {{m}}
        WHERE NOT list_contains(allowed, insutype) AND deductible > 0
    """,
)
