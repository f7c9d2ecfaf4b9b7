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


def _belongs(code: str, entry: str) -> str:
    """SQL: diagnosis ``code`` is in list ``entry`` (a prefix, or a range FROM-TO)."""
    lo = f"{icd(f'split_part({entry}, {chr(39)}-{chr(39)}, 1)')}"
    hi = f"{icd(f'split_part({entry}, {chr(39)}-{chr(39)}, 2)')}"
    c = icd(code)
    return f"""CASE WHEN contains({entry}, '-')
                    THEN left({c}, length({lo})) >= {lo} AND left({c}, length({hi})) <= {hi}
                    ELSE starts_with({c}, {icd(entry)}) END"""


RULE_TYPE = RuleType(
    name="gender_diagnosis_conflict",
    title="性别与诊断不符",
    nature="虚构服务",
    mode="whole_visit",
    doc=__doc__,
    items="none",
    default_severity="suspect",
    params=(
        Param("female_prefixes", "str_list", "diagnoses only women have: prefixes or ranges FROM-TO",
              default=["O00-O9A", "N70-N98"], check=_check_entries),
        Param("male_prefixes", "str_list", "diagnoses only men have: prefixes or ranges FROM-TO",
              default=["N40-N53"], check=_check_entries),
    ),
    query=f"""
        WITH rp AS (SELECT p.rule_key, r.* EXCLUDE (rule_key) FROM {{p}} p JOIN r_all r USING (rule_key)),
        lists AS (
            SELECT rule_key, '2' AS for_gend, unnest(female_prefixes) AS entry FROM {{p}}
            UNION ALL
            SELECT rule_key, '1' AS for_gend, unnest(male_prefixes) AS entry FROM {{p}}),
        cur AS (
            SELECT rp.rule_key, v.*
            FROM rp JOIN {LIVE_VISITS} v ON {rule_applies('rp', 'v.begin_date', 'v')}
            WHERE v.gend IN ('1', '2') AND v.mdtrt_id IN (SELECT mdtrt_id FROM lines)),
        dx AS (SELECT mdtrt_id, diag_code, max(diag_name) AS diag_name FROM diag GROUP BY mdtrt_id, diag_code),
        conflicts AS (
            SELECT c.rule_key, c.mdtrt_id, c.gend, t.for_gend, d.diag_code, d.diag_name, t.entry
            FROM cur c JOIN dx d ON d.mdtrt_id = c.mdtrt_id
            JOIN lists t ON t.rule_key = c.rule_key AND t.for_gend <> c.gend AND {_belongs('d.diag_code', 't.entry')}),
        flagged AS (
            SELECT rule_key, mdtrt_id,
                   '患者性别为' || gender_cn(any_value(gend)) || '，本次就诊 ' || mdtrt_id || ' 诊断 '
                   || array_to_string(list_sort(list(DISTINCT diag_code || coalesce('（' || diag_name || '）', ''))), '、')
                   || ' 属' || gender_cn(any_value(for_gend)) || '性专有诊断（'
                   || array_to_string(list_sort(list(DISTINCT entry)), '、') || '）' AS ev_head
            FROM conflicts GROUP BY rule_key, mdtrt_id)
        {whole_visit_hits('flagged')}
    """,
)
