"""性别与诊断不符 gender_diagnosis_conflict: a diagnosis only the other gender can have.

**What it flags.** A screened visit of a person whose gender (`mdtrt_d.gend`) is 1 (male) or
2 (female) with a diagnosis (main or other, from `setl_list_diag_d` or `dscg_maindiag_code`)
that belongs to the other gender. Gender 0 (unknown) and 9 (unstated) are never flagged.

The lists are `female_prefixes` (default `O00-O9A` pregnancy and childbirth, `N70-N98`
female pelvic and genital disorders) and `male_prefixes` (default `N40-N53` male genital
disorders). An entry is either a code prefix (`N40`, `C61`, `O80.0`) or a range `FROM-TO`.
Codes are compared upper case with dots removed. A range means every code in it: a code
belongs to `FROM-TO` when its first characters, as many as `FROM` has, are not below `FROM`
and its first characters, as many as `TO` has, are not above `TO`. So `O00-O9A` holds every
category O00 to O99 and O9A (`O80.000`, `O9A.111`), and `N70-N98` holds `N97.000` but not
`N99.0`; `N40-N53` holds `N50.8` but not `N39` or `N54`. Setting a list to `[]` switches that
direction off.

Only visits with screened lines in this stage are flagged; the rule is judged on the visit's
start date (validity) and its scope. A visit whose settlements were all refunded is left out.

**Why it matters.** A man does not give birth and a woman has no prostate: such a diagnosis
means the visit was coded for someone else, typically because an insurance card was lent or
the claim was invented (冒名就医, 虚构服务).

**Deduction.** `whole_visit`, default severity `suspect`: every screened line of the visit is a
violating line claiming its deductible amount (amount at risk).

**Example.**

```yaml
- id: R-GDX-001
  version: 1
  name: 性别与诊断不符
  type: gender_diagnosis_conflict
  params: {female_prefixes: [O00-O9A, N70-N98], male_prefixes: [N40-N53]}
```

A man whose visit V3 carries `O80.000` gives
`患者性别为男，本次就诊 V3 诊断 O80.000（单胎顺产）属女性专有诊断（O00-O9A）；本次就诊费用 ...`.
"""

#: the same documentation in Chinese (`medaudit rules explain` shows it first; keep the two in step)
DOC_ZH = """性别与诊断不符：只有另一性别才可能有的诊断。

**查什么。** 性别（`mdtrt_d.gend`）为 1（男）或 2（女）的参保人，本环节有被审核明细的就诊中，有属于另一性别的诊断（主诊断或其他诊断，取自 `setl_list_diag_d` 或 `dscg_maindiag_code`）。性别 0（未知）和 9（未说明）从不命中。

诊断列表为 `female_prefixes`（默认 `O00-O9A` 妊娠与分娩、`N70-N98` 女性盆腔及生殖器疾病）和 `male_prefixes`（默认 `N40-N53` 男性生殖器疾病）。每一项可以是编码前缀（`N40`、`C61`、`O80.0`）或范围 `FROM-TO`。编码转为大写并去掉小数点后比较。范围包含其中的每个编码：编码取与 `FROM` 同样位数的前几位不小于 `FROM`，且取与 `TO` 同样位数的前几位不大于 `TO`，即属于该范围。因此 `O00-O9A` 包含 O00 到 O99 以及 O9A 的所有类目（`O80.000`、`O9A.111`），`N70-N98` 包含 `N97.000` 但不包含 `N99.0`；`N40-N53` 包含 `N50.8`，不包含 `N39` 或 `N54`。把某个列表设为 `[]` 即关闭该方向。规则按就诊开始日期判断有效期和适用范围；所有结算都已退费的就诊不查。

**为什么。** 男性不会分娩，女性没有前列腺：这种诊断说明就诊记在了别人名下，通常是借用医保卡或虚构就诊（冒名就医、虚构服务）。

**扣款。** `whole_visit`，默认严重程度 `suspect`：该就诊的每条被审核明细都是违规项，主张其可扣金额（涉及金额）。
"""

import re

from .base import LIVE_VISITS, Param, RuleType, icd, rule_applies, whole_visit_hits

_ENTRY = re.compile(r"^[A-Za-z0-9.]+(-[A-Za-z0-9.]+)?$")


def _check_entries(v: list) -> str | None:
    for e in v:
        if not _ENTRY.match(e):
            return f"entries must be ICD-10 prefixes or ranges like O00-O9A, got {e!r}"
        if "-" in e:
            lo, hi = (x.replace(".", "").upper() for x in e.split("-"))
            if lo[: len(hi)] > hi:
                return f"range {e!r} ends before it starts"
    return None


def _belongs(code: str, t: str) -> str:
    """SQL: the normalised diagnosis ``code`` (:func:`icd`) is in the list entry of ``t`` (a row of
    ``lists``: a prefix ``pfx``, or a range ``lo``-``hi`` when ``is_range``), each normalised once
    per entry and per diagnosis, not once per pair (at 10M lines the pairs' normalisation was a
    third of the type's time)."""
    return f"""CASE WHEN {t}.is_range
                    THEN left({code}, length({t}.lo)) >= {t}.lo AND left({code}, length({t}.hi)) <= {t}.hi
                    ELSE starts_with({code}, {t}.pfx) END"""


RULE_TYPE = RuleType(
    name="gender_diagnosis_conflict",
    title="性别与诊断不符",
    nature="虚构服务",
    mode="whole_visit",
    doc=__doc__,
    doc_zh=DOC_ZH,
    items="none",
    default_severity="suspect",
    params=(
        Param(
            "female_prefixes",
            "str_list",
            "diagnoses only women have: prefixes or ranges FROM-TO",
            default=["O00-O9A", "N70-N98"],
            check=_check_entries,
        ),
        Param(
            "male_prefixes",
            "str_list",
            "diagnoses only men have: prefixes or ranges FROM-TO",
            default=["N40-N53"],
            check=_check_entries,
        ),
    ),
    query=f"""
        WITH rp AS (SELECT p.rule_key, r.* EXCLUDE (rule_key) FROM {{p}} p JOIN {{r}} r USING (rule_key)),
        lists AS (
            SELECT *, contains(entry, '-') AS is_range, {icd("split_part(entry, '-', 1)")} AS lo,
                   {icd("split_part(entry, '-', 2)")} AS hi, {icd("entry")} AS pfx
            FROM (SELECT rule_key, '2' AS for_gend, unnest(female_prefixes) AS entry FROM {{p}}
                  UNION ALL
                  SELECT rule_key, '1' AS for_gend, unnest(male_prefixes) AS entry FROM {{p}})),
        cur AS (
            SELECT rp.rule_key, v.*
            FROM rp JOIN {LIVE_VISITS} v ON {rule_applies("rp", "v.begin_date", "v")}
            WHERE v.gend IN ('1', '2') AND v.mdtrt_id IN (SELECT mdtrt_id FROM {{lines}})),
        dx AS (SELECT mdtrt_id, diag_code, {icd("diag_code")} AS dc, max(diag_name) AS diag_name
               FROM {{diag}} GROUP BY mdtrt_id, diag_code),
        conflicts AS (
            SELECT c.rule_key, c.mdtrt_id, c.gend, t.for_gend, d.diag_code, d.diag_name, t.entry
            FROM cur c JOIN dx d ON d.mdtrt_id = c.mdtrt_id
            JOIN lists t ON t.rule_key = c.rule_key AND t.for_gend <> c.gend AND {_belongs("d.dc", "t")}),
        flagged AS (
            SELECT rule_key, mdtrt_id,
                   '患者性别为' || gender_cn(any_value(gend)) || '，本次就诊 ' || mdtrt_id || ' 诊断 '
                   || array_to_string(list_sort(list(DISTINCT diag_code || coalesce('（' || diag_name || '）', ''))), '、')
                   || ' 属' || gender_cn(any_value(for_gend)) || '性专有诊断（'
                   || array_to_string(list_sort(list(DISTINCT entry)), '、') || '）' AS ev_head
            FROM conflicts GROUP BY rule_key, mdtrt_id)
        {whole_visit_hits("flagged")}
    """,
)
