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

from .base import ITEM_REF, LINE_FACT, Param, RuleType


# ---------------------------------------------------------------------------- in memory (pre-alert)
# The same check over the request's rows, for the pre-alert fast path: a transcription of the
# query above (tests/test_prealert_parity.py holds the two equal).
from .evidence import Hit, ref, line_fact, level_cn, hit


def evaluate(ctx, ms: list[dict]) -> list[Hit]:
    out = []
    for m in ms:
        if m["min_level"] is None or not m["inst_level"] < m["min_level"] or not m["deductible"] > 0:
            continue
        out.append(hit(m, "violating", m["deductible"], f"机构等级为{level_cn(m['inst_level'])}（hosp_lv {m['hosp_lv'] or ''}）",
                        f"{ref(m)} 限{level_cn(m['min_level'])}及以上医疗机构使用，{line_fact(m)}"))
    return out


RULE_TYPE = RuleType(
    name="restrict_hosp_level",
    title="限机构等级",
    nature="超支付范围",
    mode="whole_line",
    doc=__doc__,
    evaluate=evaluate,
    params=(
        Param("min_level", "int", "lowest institution level allowed: 1, 2 or 3", required=True,
              choices=(1, 2, 3), per_item=True),
    ),
    query=f"""
        SELECT rule_key, mdtrt_id AS finding_key, mdtrt_id, bkkp_sn, 'violating' AS role, deductible AS claim,
               '机构等级为' || level_cn(inst_level) || '（hosp_lv ' || coalesce(hosp_lv, '') || '）' AS ev_head,
               {ITEM_REF} || ' 限' || level_cn(min_level) || '及以上医疗机构使用，' || {LINE_FACT} AS ev_line
        FROM {{m}}
        WHERE inst_level < min_level AND deductible > 0
    """,
)
