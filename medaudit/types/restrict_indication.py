"""限适应症 restrict_indication: an item paid only for certain diagnoses.

**What it flags.** A matched line of a visit none of whose diagnoses (the main one or any
other, from `setl_list_diag_d` and `mdtrt_d.dscg_maindiag_code`) starts with one of
`diag_prefixes` (ICD-10 insurance edition; compared without regard to case). A visit with no
diagnosis recorded at all is flagged too: the indication the catalogue asks for is not
documented.

**Why it matters.** Many catalogue entries say 限...患者: the fund pays for the drug only for
the indication written in the catalogue. Without a matching diagnosis the line is outside
the scope.

**Deduction.** `whole_line`.

**Example.**

```yaml
- id: R-IND-001
  version: 1
  name: 限恶性肿瘤患者
  type: restrict_indication
  items: {codes: ["ZC01AAA0042010105549"]}   # 艾迪注射液
  params: {diag_prefixes: ["C"]}
```

gives `本次就诊诊断：J18.900；药品【艾迪注射液】(ZC01AAA0042010105549) 限诊断 C 开头的患者使用，...`.
"""

#: the same documentation in Chinese (`medaudit rules explain` shows it first; keep the two in step)
DOC_ZH = """限适应症：只对特定诊断支付的项目。

**查什么。** 匹配的明细，所在就诊的诊断（主诊断或任何其他诊断，取自 `setl_list_diag_d` 和 `mdtrt_d.dscg_maindiag_code`）没有一个以 `diag_prefixes`（医保版 ICD-10，不区分大小写）中的任一前缀开头。完全没有诊断记录的就诊也命中：目录要求的适应症没有记录。

**为什么。** 很多目录条目写明"限……患者"：基金只对目录写明的适应症支付。没有匹配的诊断，这条明细就超出支付范围。

**扣款。** `whole_line`：整条明细。
"""

from .base import ITEM_REF, LINE_FACT, Param, RuleType, claim, claim_of


# ---------------------------------------------------------------------------- in memory (pre-alert)
# The same check over the request's rows, for the pre-alert fast path: a transcription of the
# query above (tests/test_prealert_parity.py holds the two equal).
from .evidence import Hit, ref, line_fact, hit


def evaluate(ctx, ms: list[dict]) -> list[Hit]:
    out = []
    codes = [c for c in ctx.diags if c is not None]
    shown = "、".join(sorted(set(codes))) or "无"
    upper = [c.upper() for c in codes]
    for m in ms:
        if not m["deductible"] > 0 or m["diag_prefixes"] is None:
            continue
        if any(c.startswith(p.upper()) for p in m["diag_prefixes"] for c in upper):
            continue
        out.append(
            hit(
                m,
                "violating",
                claim_of("whole_line", m),
                "本次就诊诊断：" + shown,
                f"{ref(m)} 限诊断 {'、'.join(m['diag_prefixes'])} 开头的患者使用，{line_fact(m)}",
            )
        )
    return out


RULE_TYPE = RuleType(
    name="restrict_indication",
    title="限适应症",
    nature="超支付范围",
    mode="whole_line",
    doc=__doc__,
    doc_zh=DOC_ZH,
    evaluate=evaluate,
    params=(
        Param(
            "diag_prefixes",
            "str_list",
            "ICD-10 code prefixes of the diagnoses the item is paid for",
            required=True,
            per_item=True,
        ),
    ),
    query=f"""
        WITH m AS (SELECT * FROM {{m}} WHERE deductible > 0),
        pref AS (SELECT DISTINCT rule_key, mdtrt_id, unnest(diag_prefixes) AS prefix FROM m),
        ok AS (SELECT DISTINCT pref.rule_key, pref.mdtrt_id, pref.prefix
               FROM pref JOIN {{diag}} d ON d.mdtrt_id = pref.mdtrt_id AND starts_with(upper(d.diag_code), upper(pref.prefix))),
        vdiag AS (SELECT mdtrt_id, string_agg(DISTINCT diag_code, '、' ORDER BY diag_code) AS codes
                  FROM {{diag}} WHERE mdtrt_id IN (SELECT mdtrt_id FROM m) GROUP BY mdtrt_id)
        SELECT m.rule_key, m.mdtrt_id AS finding_key, m.mdtrt_id, m.bkkp_sn, 'violating' AS role, {claim("whole_line", deductible="m.deductible")} AS claim,
               '本次就诊诊断：' || coalesce(vdiag.codes, '无') AS ev_head,
               {ITEM_REF} || ' 限诊断 ' || array_to_string(diag_prefixes, '、') || ' 开头的患者使用，' || {LINE_FACT} AS ev_line
        FROM m LEFT JOIN vdiag ON vdiag.mdtrt_id = m.mdtrt_id
        WHERE NOT EXISTS (
            SELECT 1 FROM ok WHERE ok.rule_key = m.rule_key AND ok.mdtrt_id = m.mdtrt_id
              AND list_contains(m.diag_prefixes, ok.prefix))
    """,
)
