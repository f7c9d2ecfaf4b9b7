"""冒名就诊 identity_misuse: one card at two institutions within minutes.

**What it flags.** An outpatient visit (`med_type` not starting with 2; pharmacy purchases 41
included) of a person that begins less than `min_gap_minutes` (default 60) after, or at the same
time as, the `begntime` of an outpatient visit of the same person (`psn_no`) at another
institution (`fixmedins_code`). The later of the two is flagged; when both begin at the same
time, the one with the larger `mdtrt_id`. The gap is `begntime` minus `begntime`, to the
second: a gap of exactly `min_gap_minutes` is not flagged, one second less is. Visits at the
same institution are never a pair (a patient may see two departments of one hospital).

The other visit may come from any batch in the database (history), settled or not; only
visits with screened lines in the run are flagged. Visits whose every settlement was refunded
were cancelled and count neither way. When several visits make the flagged one suspect, the
evidence names the latest-beginning of them (the smallest gap; ties: the larger `mdtrt_id`),
with its institution and the gap in minutes. The rule is judged on the flagged visit's start
date (validity) and its scope.

The issue's other signs of a borrowed card are other types: a diagnosis of the other gender is
`gender_diagnosis_conflict`, a fee after the person's death `after_death`, an inpatient stay
elsewhere during a clinic visit `overlapping_stays`; further signals (institutions of different
cities, services against the age) would be parameters off by default and are not offered yet.

**Stages.** `post_hoc` and `in_process` (visits not settled yet, findings are warnings). Not at
`pre_alert`: the check needs the person's visits elsewhere, which the desk does not see; it
runs on the uploaded visits.

**Why it matters.** Nobody is seen at two hospitals at once, nor crosses a city in a few
minutes: one of the two visits was made with a lent or stolen insurance card (冒名就医), or
invented (虚构服务).

**Deduction.** `whole_visit`, default severity `suspect`: every screened line of the flagged
visit is a violating line claiming its deductible amount (amount at risk).

**Example.**

```yaml
- id: R-IDM-001
  version: 1
  name: 同一参保人短时间内在不同机构门诊就诊（冒名就诊）
  type: identity_misuse
  params: {min_gap_minutes: 60}
```

gives `本次普通门诊 V5（机构 H002）2026-03-02 08:40:00 开始，距同一参保人在机构 H001 的普通门诊
V4（2026-03-02 08:00:00 开始）仅 40 分钟，不足 60 分钟；本次就诊费用 ...`.
"""

#: the same documentation in Chinese (`medaudit rules explain` shows it first; keep the two in step)
DOC_ZH = """冒名就诊：同一张医保卡几分钟内出现在两家机构。

**查什么。** 参保人的门诊就诊（`med_type` 不以 2 开头，包括 41 药店购药），其开始时间在同一参保人（`psn_no`）在另一机构（`fixmedins_code`）的门诊就诊的 `begntime` 之后不足 `min_gap_minutes`（默认 60）分钟，或与之同时。标记较晚的一次；开始时间相同时标记 `mdtrt_id` 较大者。间隔为两次 `begntime` 之差，精确到秒：恰好 `min_gap_minutes` 分钟不报，少一秒即报。同一机构的两次就诊不配对（病人可以在同一医院看两个科室）。

另一次就诊可以来自数据库中任一批次（历史数据），无论是否结算；只标记本环节有被审核明细的就诊。所有结算都已退费的就诊视为已取消，两方面都不计。有多次就诊使被标记就诊可疑时，证据列出开始最晚的那次（间隔最小；相同时取 `mdtrt_id` 较大者），写明其机构和相隔分钟数。规则按被标记就诊的开始日期判断有效期和适用范围。

问题单中冒用医保卡的其他迹象由其他类型处理：与性别不符的诊断为 `gender_diagnosis_conflict`，死亡后的费用为 `after_death`，门诊期间在他处住院为 `overlapping_stays`；更多信号（不同城市的机构、与年龄不符的服务）应作为默认关闭的参数，目前未提供。

**环节。** 事后审核（`post_hoc`）和事中预警（`in_process`，未结算的就诊，问题为预警）。不用于事前提醒：需要参保人在其他机构的就诊，医生工作站看不到；对上传的就诊运行。

**为什么。** 没有人能同时在两家医院看病，也不能几分钟内穿过一座城市：两次就诊中有一次使用了借用或盗用的医保卡（冒名就医），或是虚构的（虚构服务）。

**扣款。** `whole_visit`，默认严重程度 `suspect`：被标记就诊的每条被审核明细都是违规项，主张其可扣金额（涉及金额）。
"""

from .base import LIVE_VISITS, Param, Reach, RuleType, max_param, rule_applies, whole_visit_hits


def _reach(rule) -> Reach:
    """The person's visits within the gap: whole days, at least 1 (a visit at 23:50 and one at
    00:20 the next day are 30 minutes apart)."""
    minutes = max_param(rule, "min_gap_minutes", 60)
    return Reach(days=max(1, -(-minutes // 1440)))


RULE_TYPE = RuleType(
    name="identity_misuse",
    title="冒名就诊",
    nature="虚构服务",
    mode="whole_visit",
    doc=__doc__,
    doc_zh=DOC_ZH,
    items="none",
    default_severity="suspect",
    stages=("in_process", "post_hoc"),
    reach=_reach,
    params=(
        Param(
            "min_gap_minutes",
            "int",
            "minutes from one institution's visit to another's below which the later is flagged",
            default=60,
            minimum=1,
        ),
    ),
    query=f"""
        WITH rp AS (SELECT p.rule_key, p.min_gap_minutes, r.* EXCLUDE (rule_key) FROM {{p}} p JOIN {{r}} r USING (rule_key)),
        live AS (SELECT * FROM {LIVE_VISITS} WHERE NOT inpatient),
        cur AS (
            SELECT rp.rule_key, rp.min_gap_minutes, v.*
            FROM rp JOIN live v ON {rule_applies("rp", "v.begin_date", "v")}
            WHERE v.mdtrt_id IN (SELECT mdtrt_id FROM {{lines}})),
        pairs AS (
            SELECT c.rule_key, c.mdtrt_id, c.med_type, c.fixmedins_code, c.begntime, c.min_gap_minutes,
                   a.mdtrt_id AS other_id, a.med_type AS other_type, a.fixmedins_code AS other_inst,
                   a.begntime AS other_begin, date_diff('second', a.begntime, c.begntime) AS gap_s
            FROM cur c JOIN live a
              ON a.psn_no = c.psn_no AND a.fixmedins_code <> c.fixmedins_code
             AND (a.begntime < c.begntime OR (a.begntime = c.begntime AND a.mdtrt_id < c.mdtrt_id))
             AND date_diff('second', a.begntime, c.begntime) < c.min_gap_minutes * 60
            QUALIFY row_number() OVER (PARTITION BY c.rule_key, c.mdtrt_id ORDER BY a.begntime DESC, a.mdtrt_id DESC) = 1),
        flagged AS (
            SELECT rule_key, mdtrt_id,
                   '本次' || med_type_cn(med_type) || ' ' || mdtrt_id || '（机构 ' || fixmedins_code || '）'
                   || strftime(begntime, '%Y-%m-%d %H:%M:%S') || ' 开始，'
                   || CASE WHEN gap_s = 0 THEN '与同一参保人在机构 ' ELSE '距同一参保人在机构 ' END
                   || other_inst || ' 的' || med_type_cn(other_type) || ' ' || other_id || '（'
                   || strftime(other_begin, '%Y-%m-%d %H:%M:%S') || ' 开始）'
                   || CASE WHEN gap_s = 0 THEN '同时开始'
                           ELSE '仅 ' || (gap_s // 60) || ' 分钟' || CASE WHEN gap_s % 60 > 0 THEN ' ' || (gap_s % 60) || ' 秒' ELSE '' END END
                   || '，不足 ' || min_gap_minutes || ' 分钟' AS ev_head
            FROM pairs)
        {whole_visit_hits("flagged")}
    """,
)
