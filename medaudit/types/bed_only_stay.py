"""挂床住院 bed_only_stay: days in hospital charged a bed and nothing else that cares for the patient.

**What it flags.** An inpatient visit (`med_type` starting with 2) with more than
`max_bed_only_days` (default 2) **bed-only days**. The days of a stay are the calendar days from
`date(begntime)` to `date(endtime)`, both included; a stay without an end (still open) runs to
its latest fee date. A day is bed-only when the visit has, dated that day, a screened line of
item class (`med_chrgitm_type`) 01 (bed) and no screened line of any class in `care_classes`
(default 03 examination, 04 lab test, 05 treatment, 06 surgery, 07 nursing, 09 western drugs,
10 herbal, 11 patent drugs). A line without a class never counts as care; lines dated outside
the stay's days count for nothing. Screened lines are netted for refunds: a day whose only drug
was refunded in full is bed-only. Exactly `max_bed_only_days` such days is not flagged. The
evidence lists the bed-only days.

Optional, off by default: `max_bed_only_share` (a number between 0 and 1) also flags a stay
whose bed-only days are more than that share of its days (`date(endtime) - date(begntime) + 1`,
an open stay to its latest fee date), e.g. 0.3 flags 2 bed-only days of a 5-day stay. A visit whose every settlement was refunded was cancelled and
is left out. The rule is judged on the admission date (validity) and the visit's scope.

**Stages.** `post_hoc` and `in_process`, where it judges the stay so far (an open stay up to its
latest fee date, the lines not settled yet); in-process findings are warnings for the hospital
while the patient is still (said to be) in the bed. Not at `pre_alert`: an order is one line,
not a day of the stay.

**Why it matters.** A patient who is registered in a bed but lives at home (挂床住院) costs the
fund a bed fee a day, and the stay its inpatient rate, while nothing is done for them: no
nursing, no drug, no examination. Empty days in a row are the trace such stays leave.

**Deduction.** `whole_visit`, default severity `suspect`: every screened line of the visit is a
violating line claiming its deductible amount, the amount at risk.

**Example.**

```yaml
- id: R-BOS-001
  version: 1
  name: 挂床住院（只收床位费的天数超过2天）
  type: bed_only_stay
  params: {max_bed_only_days: 2}
```

gives `本次住院 V9 2026-03-01 入院，2026-03-09 出院，其中 3 天只有床位费、无检查费(03)、化验费(04)、
治疗费(05)、手术费(06)、护理费(07)、西药费(09)、中药饮片费(10)、中成药费(11)：2026-03-04、2026-03-05、
2026-03-06，超过 2 天；本次就诊费用 ...`.
"""

#: the same documentation in Chinese (`medaudit rules explain` shows it first; keep the two in step)
DOC_ZH = """挂床住院：住院期间只收床位费、没有任何诊疗护理的日子。

**查什么。** 住院就诊（`med_type` 以 2 开头）中**只有床位费的天数**超过 `max_bed_only_days`（默认 2）。住院的天为入院日期到出院日期（含两端）的每个自然日；没有结束时间（仍在院）的住院算到其最晚收费日期。某天为"只有床位费"：该就诊在这一天有收费项目类别（`med_chrgitm_type`）为 01（床位费）的被审核明细，且没有任何类别属于 `care_classes` 的被审核明细（默认 03 检查、04 化验、05 治疗、06 手术、07 护理、09 西药、10 中药饮片、11 中成药）。没有类别的明细不算诊疗；日期在住院期间以外的明细不计。明细按退费冲减后计算：当天唯一的药品全部退费，该天即只有床位费。恰好等于 `max_bed_only_days` 天不报。证据列出这些天。

可选、默认关闭：`max_bed_only_share`（0 到 1 之间的数）另外标记只有床位费的天数超过住院天数（出院日期 − 入院日期 + 1，未出院算到最晚收费日期）该比例的住院，例如 0.3 时 5 天的住院有 2 天只有床位费即报。所有结算都已退费的就诊视为已取消，不查。规则按入院日期判断有效期，按就诊判断适用范围。

**环节。** 事后审核（`post_hoc`）和事中预警（`in_process`），事中判断截至目前的住院（未出院的住院算到最晚收费日期，未结算的明细）；事中问题为预警，在病人仍（据称）在床时提醒医院。不用于事前提醒：一条医嘱不是住院的一天。

**为什么。** 病人登记住院而人在家中（挂床住院），基金每天支付床位费和住院待遇，而病人没有得到任何护理、用药或检查。连续的空白日就是这种住院留下的痕迹。

**扣款。** `whole_visit`，默认严重程度 `suspect`：该就诊的每条被审核明细都是违规项，主张其可扣金额（涉及金额）。
"""

from .base import LIVE_VISITS, Param, RuleType, check_classes, chrg_names, rule_applies, whole_visit_hits

DEFAULT_CARE = ["03", "04", "05", "06", "07", "09", "10", "11"]


def _care(v: list) -> str | None:
    return check_classes(v) or (None if v else "must list at least one item class")


RULE_TYPE = RuleType(
    name="bed_only_stay",
    title="挂床住院",
    nature="虚构服务",
    mode="whole_visit",
    doc=__doc__,
    doc_zh=DOC_ZH,
    items="none",
    default_severity="suspect",
    stages=("in_process", "post_hoc"),
    params=(
        Param("max_bed_only_days", "int", "bed-only days allowed in a stay (more are flagged)", default=2, minimum=0),
        Param(
            "max_bed_only_share",
            "number",
            "optional, off by default: also flag above this share of the stay's days",
            check=lambda v: None if 0 < v < 1 else f"must be above 0 and below 1, got {v}",
        ),
        Param(
            "care_classes",
            "str_list",
            "item classes (med_chrgitm_type) that show the patient was cared for",
            default=DEFAULT_CARE,
            check=_care,
        ),
    ),
    query=f"""
        WITH rp AS (SELECT p.rule_key, p.max_bed_only_days, p.max_bed_only_share, p.care_classes, r.* EXCLUDE (rule_key)
                    FROM {{p}} p JOIN {{r}} r USING (rule_key)),
        stays AS (SELECT v.* FROM {LIVE_VISITS} v WHERE v.inpatient),
        days AS (      -- per rule, stay and day of the stay: a bed line and no care line
            SELECT rp.rule_key, s.mdtrt_id, l.fee_date
            FROM rp JOIN stays s ON {rule_applies("rp", "s.begin_date", "s")}
            JOIN {{lines}} l ON l.mdtrt_id = s.mdtrt_id
            -- the stay's days: admission to discharge (an open stay: to its latest fee date)
            WHERE l.fee_date >= s.begin_date AND (s.end_date IS NULL OR l.fee_date <= s.end_date)
            GROUP BY rp.rule_key, s.mdtrt_id, l.fee_date
            HAVING bool_or(l.med_chrgitm_type = '01')
               AND NOT bool_or(coalesce(list_contains(rp.care_classes, l.med_chrgitm_type), FALSE))),
        counted AS (
            SELECT rule_key, mdtrt_id, count(*) AS n,
                   string_agg(strftime(fee_date, '%Y-%m-%d'), '、' ORDER BY fee_date) AS day_list
            FROM days GROUP BY rule_key, mdtrt_id),
        -- an open stay's latest fee date ends its days: sought for the open stays counted only
        -- (not a grouping of every line by visit)
        last_fee AS (
            SELECT mdtrt_id, max(fee_date) AS last_fee FROM {{lines}}
            WHERE mdtrt_id IN (SELECT c.mdtrt_id FROM counted c JOIN stays s USING (mdtrt_id) WHERE s.end_date IS NULL)
            GROUP BY mdtrt_id),
        flagged AS (
            SELECT c.rule_key, c.mdtrt_id,
                   '本次住院 ' || s.mdtrt_id || ' ' || strftime(s.begin_date, '%Y-%m-%d') || ' 入院，'
                   || coalesce(strftime(s.end_date, '%Y-%m-%d') || ' 出院', '尚未出院')
                   || '，其中 ' || c.n || ' 天只有床位费、无' || {chrg_names("rp.care_classes")} || '：'
                   || c.day_list || CASE WHEN c.n > rp.max_bed_only_days THEN '，超过 ' || rp.max_bed_only_days || ' 天'
                                         ELSE '，超过住院 ' || c.days || ' 天的 ' || qty(rp.max_bed_only_share * 100) || '%' END AS ev_head
            FROM (SELECT c.*, date_diff('day', s.begin_date, coalesce(s.end_date, lf.last_fee)) + 1 AS days
                  FROM counted c JOIN stays s USING (mdtrt_id) LEFT JOIN last_fee lf USING (mdtrt_id)) c
            JOIN rp USING (rule_key) JOIN stays s ON s.mdtrt_id = c.mdtrt_id
            WHERE c.n > rp.max_bed_only_days OR c.n > rp.max_bed_only_share * c.days)
        {whole_visit_hits("flagged")}
    """,
)
