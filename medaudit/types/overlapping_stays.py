"""重复住院/住院期间门诊 overlapping_stays: a person in two places at once.

**What it flags.** Depending on `kind`:

- `inpatient` (重复住院): an inpatient visit that overlaps another inpatient visit of the same
  person, at any institution. The later-starting stay is flagged (by `begntime`; equal times:
  the larger `mdtrt_id`). Overlap is judged on calendar dates: the later stay overlaps when its
  admission date is before the earlier stay's discharge date. A stay that begins on the day the
  other ends only touches it (a same-day transfer) and is not flagged; one day earlier is an
  overlap of 1 day.
- `outpatient` (住院期间门诊): an outpatient visit (any `med_type` not starting with 2, pharmacy
  purchases 41 included) dated strictly inside an inpatient stay of the same person at another
  institution: after the admission date and before the discharge date. A visit on the
  admission or discharge day is not flagged (the patient may come from or go to that visit).
  Visits at the same institution are not flagged (consultations of inpatients in the hospital's
  own clinics are a billing question, not a presence one).

A stay without an end time is still going on: it overlaps everything after its admission day.
When several stays overlap the flagged visit, the evidence names the earliest-starting one.
Only visits with screened lines in this stage are flagged; the other stay may come from any
batch in the database (history), settled or not. Visits whose every settlement was refunded
were cancelled and count neither way. The rule is judged on the flagged visit's start date
(validity) and its scope.

**Why it matters.** Nobody lies in two hospital beds at once, and an inpatient does not walk
into another hospital's clinic during the stay: one of the two visits was invented, or the
person's card was lent (虚构服务, 冒名就医), or the patient was "hung" in a bed (挂床住院)
while living elsewhere.

**Deduction.** `whole_visit`, default severity `suspect`: every screened line of the flagged
visit is a violating line claiming its deductible amount (amount at risk).

**Example.**

```yaml
- id: R-OVL-001
  version: 1
  name: 住院期间在其他机构住院
  type: overlapping_stays
  params: {kind: inpatient}
- id: R-OVL-002
  version: 1
  name: 住院期间在其他机构门诊就医
  type: overlapping_stays
  params: {kind: outpatient}
```

give `本次普通住院 V2（机构 H002）2026-03-09 入院，与住院 V1（机构 H001，2026-03-01 入院，
2026-03-10 出院）重叠 1 天；本次就诊费用 ...` and `本次普通门诊 V5（机构 H002）2026-03-05 就诊，
正值参保人在住院 V4（机构 H001，2026-03-01 入院，2026-03-10 出院）期间；本次就诊费用 ...`.
"""

#: the same documentation in Chinese (`medaudit rules explain` shows it first; keep the two in step)
DOC_ZH = """重复住院/住院期间门诊：同一个人同时出现在两个地方。

**查什么。** 取决于 `kind`：

- `inpatient`（重复住院）：一次住院与同一人在任何机构的另一次住院时间重叠。标记开始较晚的那次（按 `begntime`；时间相同时标记 `mdtrt_id` 较大者）。按自然日判断：较晚住院的入院日期早于较早住院的出院日期即为重叠。在另一次出院当天入院只是相接（当天转院），不报；早一天即重叠 1 天。
- `outpatient`（住院期间门诊）：门诊就诊（`med_type` 不以 2 开头，包括 41 药店购药）的日期严格落在同一人在另一机构的住院期间内：晚于入院日期且早于出院日期。入院日或出院日的就诊不报（病人可能正从该就诊来或去）。同一机构的就诊不报（住院病人在本院门诊会诊是收费问题，不是"同时在两处"的问题）。

没有结束时间的住院视为仍在进行：与入院日之后的一切重叠。有多次住院与被标记就诊重叠时，证据列出开始最早的那次。只标记本环节有被审核明细的就诊；另一次住院可以来自数据库中任一批次（历史数据），无论是否结算。所有结算都已退费的就诊视为已取消，两方面都不计。规则按被标记就诊的开始日期判断有效期和适用范围。

**为什么。** 一个人不能同时躺在两家医院的病床上，住院病人也不会在住院期间去另一家医院看门诊：两次就诊中有一次是虚构的、借用了医保卡（虚构服务、冒名就医），或病人挂床住院而人在别处。

**扣款。** `whole_visit`，默认严重程度 `suspect`：被标记就诊的每条被审核明细都是违规项，主张其可扣金额（涉及金额）。
"""

from .base import LIVE_VISITS, Param, Reach, RuleType, rule_applies, whole_visit_hits

RULE_TYPE = RuleType(
    name="overlapping_stays",
    title="重复住院/住院期间门诊",
    nature="虚构服务",
    mode="whole_visit",
    doc=__doc__,
    doc_zh=DOC_ZH,
    items="none",
    # the person's stays whose dates overlap this visit
    reach=lambda rule: Reach(days=0),
    default_severity="suspect",
    params=(
        Param(
            "kind",
            "choice",
            "inpatient: overlapping stays; outpatient: clinic visits during a stay elsewhere",
            required=True,
            choices=("inpatient", "outpatient"),
        ),
    ),
    query=f"""
        WITH rp AS (SELECT p.rule_key, p.kind, r.* EXCLUDE (rule_key) FROM {{p}} p JOIN {{r}} r USING (rule_key)),
        live AS (SELECT * FROM {LIVE_VISITS}),
        cur AS (
            SELECT rp.rule_key, rp.kind, v.*
            FROM rp JOIN live v ON {rule_applies("rp", "v.begin_date", "v")}
            WHERE v.mdtrt_id IN (SELECT mdtrt_id FROM {{lines}})
              AND v.inpatient = (rp.kind = 'inpatient')),
        pairs AS (
            SELECT c.rule_key, c.kind, c.mdtrt_id, c.med_type, c.fixmedins_code, c.begin_date, c.end_date,
                   a.mdtrt_id AS other_id, a.fixmedins_code AS other_inst, a.begin_date AS other_begin,
                   a.end_date AS other_end
            FROM cur c JOIN live a
              ON a.psn_no = c.psn_no AND a.mdtrt_id <> c.mdtrt_id AND a.inpatient
             AND (a.end_date IS NULL OR c.begin_date < a.end_date)
             AND CASE WHEN c.kind = 'inpatient'
                      THEN a.begntime < c.begntime OR (a.begntime = c.begntime AND a.mdtrt_id < c.mdtrt_id)
                      ELSE a.fixmedins_code <> c.fixmedins_code AND c.begin_date > a.begin_date END
            QUALIFY row_number() OVER (PARTITION BY c.rule_key, c.mdtrt_id ORDER BY a.begntime, a.mdtrt_id) = 1),
        flagged AS (
            SELECT rule_key, mdtrt_id,
                   '本次' || med_type_cn(med_type) || ' ' || mdtrt_id || '（机构 ' || fixmedins_code || '）'
                   || strftime(begin_date, '%Y-%m-%d') || CASE WHEN kind = 'inpatient' THEN ' 入院，与住院 ' ELSE ' 就诊，正值参保人在住院 ' END
                   || other_id || '（机构 ' || other_inst || '，' || strftime(other_begin, '%Y-%m-%d') || ' 入院，'
                   || coalesce(strftime(other_end, '%Y-%m-%d') || ' 出院', '尚未出院') || '）'
                   || CASE WHEN kind = 'outpatient' THEN '期间'
                           WHEN coalesce(end_date, other_end) IS NULL THEN '重叠，两次住院均未出院'
                           ELSE '重叠 ' || date_diff('day', begin_date, least(end_date, other_end)) || ' 天' END AS ev_head
            FROM pairs)
        {whole_visit_hits("flagged")}
    """,
)
