"""分解住院 readmission: an inpatient stay that begins soon after the person's last discharge.

**What it flags.** A screened inpatient visit (`med_type` starting with 2) that begins 0 to
`max_gap_days` calendar days after the discharge date of an earlier inpatient visit of the same
person (`date(begntime) - date(endtime)` of the earlier stay; 0 = discharged and readmitted on
the same day). Conditions on the earlier stay:

- `same_institution` (default true): it was at the same institution (`fixmedins_code`);
- `same_diag_prefix_len` (default 3, 0 = any diagnosis): both stays' main diagnoses share their
  first N characters, compared upper case with the dots removed (`J18.900` and `J18.000x001`
  share `J18`). The main diagnosis is `mdtrt_d.dscg_maindiag_code`, else the
  `setl_list_diag_d` row with `maindiag_flag` 1. A stay without a main diagnosis is not
  judged when N > 0 (nothing to compare);
- `exclude_diag_prefixes` (default `[Z51]`, planned chemotherapy or radiotherapy): the later
  stay is not flagged when any of its diagnoses (main or other) starts with one of them.

Edge decisions: the earlier stay must have an end time (a stay still open is not a
"previous discharge"; overlaps are `overlapping_stays`' business) and must have begun before
the flagged one. When several earlier stays qualify, the evidence names the one discharged
last. An intervening stay elsewhere does not break the chain. Only visits with screened lines
in this stage are flagged, but the earlier stay may come from any batch loaded into the
database, screened or not: the database holds the person's history. A visit whose every
settlement was refunded was cancelled and counts neither way. The rule is judged on the
flagged stay's admission date (validity) and its scope (med_type, level, institution).

**Why it matters.** Discharging a patient and readmitting them days later for the same
condition splits one stay into two (分解住院), so that each part stays under the per-case
payment limit or the DRG/DIP group price, and the fund pays two cases for one illness.

**Deduction.** `whole_visit`, default severity `suspect`: every screened line of the later
stay is a violating line claiming its deductible amount, the amount at risk; nothing is
deducted until a reviewer confirms it.

**Example.**

```yaml
- id: R-READM-001
  version: 1
  name: 15天内同一机构同病种再入院
  type: readmission
  params: {max_gap_days: 15, same_institution: true, same_diag_prefix_len: 3, exclude_diag_prefixes: [Z51]}
```

gives `本次住院 V2 2026-03-10 入院，距上次住院 V1 2026-03-05 出院 5 天（同一机构，主诊断 J18
相同），不超过 15 天；本次就诊费用 12 条，金额合计 3200.00 元，其中医保支付范围内 3000.00 元`.
"""

#: the same documentation in Chinese (`medaudit rules explain` shows it first; keep the two in step)
DOC_ZH = """分解住院：出院后不久再次入院。

**查什么。** 被审核的住院就诊（`med_type` 以 2 开头），其开始日期在同一人较早一次住院的出院日期之后 0 至 `max_gap_days` 个自然日（较早住院的出院日期到本次入院日期；0 指当天出院当天再入院）。对较早那次住院的条件：

- `same_institution`（默认 true）：在同一机构（`fixmedins_code`）；
- `same_diag_prefix_len`（默认 3，0 表示不论诊断）：两次住院的主诊断前 N 位相同，转为大写并去掉小数点后比较（`J18.900` 和 `J18.000x001` 都是 `J18`）。主诊断取 `mdtrt_d.dscg_maindiag_code`，没有时取 `setl_list_diag_d` 中 `maindiag_flag` 为 1 的行。N > 0 时没有主诊断的住院不判断；
- `exclude_diag_prefixes`（默认 `[Z51]`，计划性放化疗）：较晚那次住院的任一诊断（主诊断或其他诊断）以其中之一开头时不报。

边界规定：较早的住院必须有结束时间（仍在院的不算"上次出院"，重叠由 `overlapping_stays` 处理），且开始早于被标记的住院。有多次较早住院符合条件时，证据列出最后出院的那次。中间在别处的住院不打断。只标记本环节有被审核明细的就诊，但较早的住院可以来自数据库中任一批次（无论是否审核过）：数据库保存此人的历史。所有结算都已退费的就诊视为已取消，两方面都不计。规则按被标记住院的入院日期判断有效期和适用范围。

**为什么。** 让病人出院几天后又因同一疾病入院，把一次住院拆成两次（分解住院），使每次都低于按病种付费或 DRG/DIP 的标准，基金为一次疾病付了两次。

**扣款。** `whole_visit`，默认严重程度 `suspect`：较晚那次住院的每条被审核明细都是违规项，主张其可扣金额（涉及金额）；复核确认前不扣款。
"""

from .base import LIVE_VISITS, Param, Reach, RuleType, icd, max_param, rule_applies, whole_visit_hits


def pair_condition(c: str, a: str, max_gap: str, same_inst: str, prefix_len: str) -> str:
    """SQL condition: stay ``a`` is an earlier discharge that makes stay ``c`` a readmission.

    Both are rows of :data:`LIVE_VISITS`; the other arguments are SQL expressions. Shared with
    ``peer_outlier``'s readmission rate so the two never disagree.
    """
    return f"""{a}.psn_no = {c}.psn_no AND {a}.mdtrt_id <> {c}.mdtrt_id AND {a}.inpatient
        AND {a}.end_date IS NOT NULL
        AND ({a}.begntime < {c}.begntime OR ({a}.begntime = {c}.begntime AND {a}.mdtrt_id < {c}.mdtrt_id))
        AND date_diff('day', {a}.end_date, {c}.begin_date) BETWEEN 0 AND {max_gap}
        AND (NOT {same_inst} OR {a}.fixmedins_code = {c}.fixmedins_code)
        AND ({prefix_len} = 0 OR (length({icd(f"{c}.main_diag")}) >= {prefix_len}
             AND left({icd(f"{a}.main_diag")}, {prefix_len}) = left({icd(f"{c}.main_diag")}, {prefix_len})))"""


def _starts(diag_code: str, prefix: str) -> str:
    """SQL condition: a diagnosis code starts with an exclusion prefix (both as ICD codes)."""
    return f"starts_with({icd(diag_code)}, {icd(prefix)})"


def excluded_condition(c: str, prefixes: str, diag: str = "{diag}") -> str:
    """SQL condition: some diagnosis of visit ``c`` starts with one of ``prefixes``, a list that
    does not depend on ``c`` (a literal): the subquery's only outer reference is ``c.mdtrt_id``.
    Per-rule lists: :func:`excluded_visits`. ``diag``: the diagnoses' table (the types' name in braces by default)."""
    return f"""EXISTS (SELECT 1 FROM {diag} d, unnest({prefixes}) AS x(pre)
                   WHERE d.mdtrt_id = {c}.mdtrt_id AND {_starts("d.diag_code", "x.pre")})"""


def excluded_visits(rules: str, prefixes: str) -> str:
    """SQL query: ``(rule_key, mdtrt_id)`` of the visits with a diagnosis starting with one of
    the prefixes of the rule (``prefixes``, a list column of ``rules``): :func:`excluded_condition`
    for per-rule lists, as a join (no subquery unnesting an outer row's list, which Spark refuses)."""
    return f"""SELECT DISTINCT x.rule_key, d.mdtrt_id
               FROM (SELECT DISTINCT rule_key, unnest({prefixes}) AS pre FROM {rules}) x
               JOIN {{diag}} d ON {_starts("d.diag_code", "x.pre")}"""


RULE_TYPE = RuleType(
    name="readmission",
    title="分解住院",
    nature="不合理诊疗",
    mode="whole_visit",
    doc=__doc__,
    doc_zh=DOC_ZH,
    items="none",
    # the previous stay ended at most max_gap_days before this one began
    reach=lambda rule: Reach(days=max_param(rule, "max_gap_days", 15)),
    default_severity="suspect",
    params=(
        Param(
            "max_gap_days",
            "int",
            "days from the previous discharge to this admission (0 = same day)",
            default=15,
            minimum=0,
        ),
        Param("same_institution", "bool", "the previous stay must be at the same institution", default=True),
        Param(
            "same_diag_prefix_len",
            "int",
            "main diagnoses must share this many characters (0 = any)",
            default=3,
            minimum=0,
        ),
        Param(
            "exclude_diag_prefixes",
            "str_list",
            "a later stay with a diagnosis starting so is never flagged",
            default=["Z51"],
        ),
    ),
    query=f"""
        WITH rp AS (SELECT p.rule_key, p.max_gap_days, p.same_institution, p.same_diag_prefix_len,
                           p.exclude_diag_prefixes, r.* EXCLUDE (rule_key)
                    FROM {{p}} p JOIN {{r}} r USING (rule_key)),
        stays AS (SELECT * FROM {LIVE_VISITS} WHERE inpatient),
        cur AS (
            SELECT rp.rule_key, rp.max_gap_days, rp.same_institution, rp.same_diag_prefix_len,
                   rp.exclude_diag_prefixes, s.*
            FROM rp JOIN stays s ON {rule_applies("rp", "s.begin_date", "s")}
            WHERE s.mdtrt_id IN (SELECT mdtrt_id FROM {{lines}})),
        excl AS ({excluded_visits("rp", "exclude_diag_prefixes")}),
        pairs AS (
            SELECT c.rule_key, c.mdtrt_id, c.begin_date, c.fixmedins_code, c.main_diag, c.max_gap_days,
                   c.same_diag_prefix_len AS n, a.mdtrt_id AS prev_id, a.end_date AS prev_end,
                   a.fixmedins_code AS prev_inst, date_diff('day', a.end_date, c.begin_date) AS gap
            FROM cur c JOIN stays a
              ON {pair_condition("c", "a", "c.max_gap_days", "c.same_institution", "c.same_diag_prefix_len")}
            WHERE NOT EXISTS (SELECT 1 FROM excl e WHERE e.rule_key = c.rule_key AND e.mdtrt_id = c.mdtrt_id)
            QUALIFY row_number() OVER (PARTITION BY c.rule_key, c.mdtrt_id
                                       ORDER BY a.endtime DESC, a.mdtrt_id DESC) = 1),
        flagged AS (
            SELECT rule_key, mdtrt_id,
                   '本次住院 ' || mdtrt_id || ' ' || strftime(begin_date, '%Y-%m-%d') || ' 入院，距上次住院 '
                   || prev_id || ' ' || strftime(prev_end, '%Y-%m-%d') || ' 出院 ' || gap || ' 天（'
                   || concat_ws('，',
                        CASE WHEN prev_inst = fixmedins_code THEN '同一机构' ELSE '上次住院机构 ' || prev_inst END,
                        CASE WHEN n > 0 THEN '主诊断 ' || left({icd("main_diag")}, n) || ' 相同' END)
                   || '），不超过 ' || max_gap_days || ' 天' AS ev_head
            FROM pairs)
        {whole_visit_hits("flagged")}
    """,
)
