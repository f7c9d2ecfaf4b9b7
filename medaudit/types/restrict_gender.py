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

from .base import ITEM_REF, LINE_FACT, Param, RuleType


# ---------------------------------------------------------------------------- in memory (pre-alert)
# The same check over the request's rows, for the pre-alert fast path: a transcription of the
# query above (tests/test_prealert_parity.py holds the two equal).
from .evidence import Hit, ref, line_fact, gender_cn, hit


def evaluate(ctx, ms: list[dict]) -> list[Hit]:
    out = []
    for m in ms:
        if m["gend"] in ("1", "2") and m["gender"] is not None and m["gend"] != m["gender"] and m["deductible"] > 0:
            out.append(hit(m, "violating", m["deductible"], "患者性别为" + gender_cn(m["gend"]),
                            f"{ref(m)} 限{gender_cn(m['gender'])}性使用，{line_fact(m)}"))
    return out


RULE_TYPE = RuleType(
    name="restrict_gender",
    title="限性别",
    nature="超支付范围",
    mode="whole_line",
    doc=__doc__,
    evaluate=evaluate,
    params=(
        Param("gender", "choice", "the gender the item is for: 1 male, 2 female", required=True,
              choices=("1", "2"), per_item=True),
    ),
    query=f"""
        SELECT rule_key, mdtrt_id AS finding_key, mdtrt_id, bkkp_sn, 'violating' AS role,
               deductible AS claim,
               '患者性别为' || gender_cn(gend) AS ev_head,
               {ITEM_REF} || ' 限' || gender_cn(gender) || '性使用，' || {LINE_FACT} AS ev_line
        FROM {{m}}
        WHERE gend IN ('1', '2') AND gend <> gender AND deductible > 0
    """,
)
