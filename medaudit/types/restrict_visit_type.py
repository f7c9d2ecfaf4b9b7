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

from .base import ITEM_REF, LINE_FACT, Param, RuleType


# ---------------------------------------------------------------------------- in memory (pre-alert)
# The same check over the request's rows, for the pre-alert fast path: a transcription of the
# query above (tests/test_prealert_parity.py holds the two equal).
from .evidence import Hit, ref, line_fact, med_type_cn, hit


def evaluate(ctx, ms: list[dict]) -> list[Hit]:
    out = []
    for m in ms:
        if m["allowed"] is None or m["med_type"] is None or not m["deductible"] > 0:
            continue
        extra = m["med_types"]
        if m["inpatient"] == (m["allowed"] == "inpatient") or (extra is not None and m["med_type"] in extra):
            continue
        also = f"（另可用于 {'、'.join(extra)}）" if extra is not None else ""
        where = "住院" if m["allowed"] == "inpatient" else "门诊"
        out.append(
            hit(
                m,
                "violating",
                m["deductible"],
                f"就诊类型为 {m['med_type']}（{med_type_cn(m['med_type'])}）",
                f"{ref(m)} 限{where}使用{also}，{line_fact(m)}",
            )
        )
    return out


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
    query=f"""
        SELECT rule_key, mdtrt_id AS finding_key, mdtrt_id, bkkp_sn, 'violating' AS role, deductible AS claim,
               '就诊类型为 ' || med_type || '（' || med_type_cn(med_type) || '）' AS ev_head,
               {ITEM_REF} || ' 限' || CASE allowed WHEN 'inpatient' THEN '住院' ELSE '门诊' END || '使用'
                   || coalesce('（另可用于 ' || array_to_string(med_types, '、') || '）', '')
                   || '，' || {LINE_FACT} AS ev_line
        FROM {{m}}
        WHERE deductible > 0
          AND inpatient <> (allowed = 'inpatient')
          AND NOT coalesce(list_contains(med_types, med_type), FALSE)
    """,
)
