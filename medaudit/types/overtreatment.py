"""过度检查 overtreatment: far more examinations than comparable visits get.

**What it flags.** A visit whose **quantity** of lines of `classes` (item classes
`med_chrgitm_type`, default 03 examination and 04 lab test) is strictly above the
`percentile` (default 95) of its **peers**. The quantity is the sum of the net `cnt` (refunds
subtracted) of the visit's screened lines whose class is in `classes` (0 when it has none; a
line without a class is never in `classes`). The peers of a visit are the visits, the visit
itself included, that share all of:

- the calendar month of `begntime`;
- the kind: inpatient (`med_type` starting with 2) or outpatient;
- the institution level (from `hosp_lv`: 3, 2, 1, 0);
- the first 3 characters of the main diagnosis (`mdtrt_d.dscg_maindiag_code`, else the
  `setl_list_diag_d` row with `maindiag_flag` 1, as `readmission` reads it), compared upper
  case with the dots removed (`J06.900` and `j06.0` are both `J06`).

A visit counts (as a peer and to be judged) when it has screened lines in the run, a main
diagnosis, and the rule applies to it (validity on its `begntime` date, scope); a visit whose
every settlement was refunded is left out. The percentile is the linear interpolation of the
group's sorted quantities, as DuckDB's `quantile_cont(q, percentile / 100)` (position
`(n - 1) x percentile / 100`), computed exactly in decimals: a quantity equal to it is not
flagged. Groups with fewer than `min_peers` (default 30) visits are not judged. The evidence
gives the visit's quantity, the percentile value, the peer group's definition and its size.

**Stages.** `post_hoc` only: the peers are whole visits of a month; an open stay's count so far
says nothing against them (so not `in_process`), and an order alone has no month of peers (not
`pre_alert`). Nightly runs re-read the whole calendar month of every touched visit, as
`peer_outlier` does (a month's peers).

**Why it matters.** Ordering far more examinations and lab tests than doctors at the same level
order for the same diagnosis in the same month is the mark of over-examination (过度检查,
过度诊疗): the bureau reviews the excess lines.

**Deduction.** `whole_line` on the lines of `classes` of the flagged visit: they are the
violating lines, each claiming its deductible amount (the amount at risk); default severity `suspect`, nothing is
deducted until a reviewer confirms it.

**Example.**

```yaml
- id: R-OVT-001
  version: 1
  name: 检查检验数量高于同月同级同病种第95百分位
  type: overtreatment
  params: {classes: ["03", "04"], percentile: 95, min_peers: 30}
```

gives `本次门诊 V12 检查费(03)、化验费(04) 数量 9，高于同类就诊第 95 百分位 3.5（2026-03 开始的
门诊，二级机构，主诊断 J06；同类 42 人次，含本次）；项目【血常规】(002503010010000) 2026-03-02
收费 3 次，金额 60.00 元；...`.
"""

#: the same documentation in Chinese (`medaudit rules explain` shows it first; keep the two in step)
DOC_ZH = """过度检查：检查检验远多于可比就诊。

**查什么。** 就诊中 `classes`（收费项目类别 `med_chrgitm_type`，默认 03 检查、04 化验）明细的**数量**严格高于其**同类就诊**的第 `percentile`（默认 95）百分位数。数量为该就诊类别属于 `classes` 的被审核明细的净数量（`cnt`，退费冲减后）之和（没有则为 0；没有类别的明细从不属于 `classes`）。同类就诊（包括该就诊本身）需同时相同：

- `begntime` 所在的自然月；
- 住院（`med_type` 以 2 开头）或门诊；
- 机构等级（由 `hosp_lv` 得出：3、2、1、0）；
- 主诊断前 3 位（取 `mdtrt_d.dscg_maindiag_code`，没有时取 `setl_list_diag_d` 中 `maindiag_flag` 为 1 的行，与 `readmission` 相同），转为大写并去掉小数点后比较（`J06.900` 和 `j06.0` 都是 `J06`）。

有本次审核明细、有主诊断且规则适用（按 `begntime` 日期判断有效期和适用范围）的就诊才计入同类并被判断；所有结算都已退费的就诊不计。百分位数为同类数量排序后的线性插值，同 DuckDB 的 `quantile_cont(q, percentile / 100)`（位置 `(n - 1) x percentile / 100`），以精确小数计算：恰好等于百分位数不报。同类少于 `min_peers`（默认 30）人次的组不判断。证据给出该就诊的数量、百分位数值、同类的定义和人次。

**环节。** 仅事后审核（`post_hoc`）：同类是一个月的完整就诊；未出院住院截至目前的数量无法与之比较（不用于事中），单条医嘱没有同月同类（不用于事前）。夜间增量运行重读每个涉及就诊所在的整个自然月，与 `peer_outlier` 相同。

**为什么。** 同一月份、同级机构、同一诊断，检查检验远多于同行，是过度检查、过度诊疗的标志：由医保部门复核多出的明细。

**扣款。** `whole_line`：被标记就诊中属于 `classes` 的明细为违规项，各自主张其可扣金额（涉及金额）；默认严重程度 `suspect`，复核确认前不扣款。
"""

from .base import (
    ITEM_REF,
    LINE_FACT,
    LIVE_VISITS,
    Param,
    Reach,
    RuleType,
    check_classes,
    chrg_names,
    claim,
    icd,
    percentile_judge,
    percentile_terms,
    rule_applies,
)
from .peer_outlier import _check_percentile

DEFAULT_CLASSES = ["03", "04"]


def _classes(v: list) -> str | None:
    return check_classes(v) or (None if v else "must list at least one item class")


#: a line's item by its own name (no rule items here: the type takes none)
LINE_REF = ITEM_REF.replace("coalesce(hilist_name, item_name)", "hilist_name")

# the percentile's terms once per peer group (on every member they copied the group's list)
_LO, _HI, _FRAC = percentile_terms("vals", "n", "percentile")
_ABOVE, _PVAL = percentile_judge("j.q", "g.p_lo", "g.p_hi", "g.p_frac")

#: what the type reads of the lines: those of any rule's classes (what it counts and flags),
#: and which visits have screened lines at all (they are the peers, with a quantity of 0 or more)
LINE_INPUTS = {
    "class_lines": """
        SELECT mdtrt_id, bkkp_sn, med_chrgitm_type, cnt, amt, deductible, list_type, hilist_name, hilist_code, fee_date
        FROM {lines}
        WHERE med_chrgitm_type IN (SELECT c FROM (SELECT DISTINCT unnest(p.classes) AS c FROM {p} p JOIN {r} r USING (rule_key)))
    """,
    "screened_visits": "SELECT DISTINCT mdtrt_id FROM {lines}",
}

RULE_TYPE = RuleType(
    name="overtreatment",
    title="过度检查",
    nature="不合理诊疗",
    mode="whole_line",
    doc=__doc__,
    doc_zh=DOC_ZH,
    items="none",
    default_severity="suspect",
    # peers are whole visits of a month: after settlement only
    stages=("post_hoc",),
    # every visit of the calendar month (of begntime), all institutions: the peers
    reach=lambda rule: Reach(scope="month"),
    line_inputs=LINE_INPUTS,
    params=(
        Param(
            "classes",
            "str_list",
            "item classes (med_chrgitm_type) whose quantity is compared",
            default=DEFAULT_CLASSES,
            check=_classes,
        ),
        Param(
            "percentile",
            "number",
            "flag a quantity strictly above this percentile of the peers",
            default=95,
            check=_check_percentile,
        ),
        Param("min_peers", "int", "visits a peer group needs to be judged (the visit included)", default=30, minimum=1),
    ),
    query=f"""
        WITH rp AS (SELECT p.rule_key, p.classes, p.percentile, p.min_peers, r.* EXCLUDE (rule_key)
                    FROM {{p}} p JOIN {{r}} r USING (rule_key)),
        -- each visit's quantity per item class of any rule's classes, summed once for every rule
        -- (a visit has a few such classes, not hundreds of lines)
        lc AS (SELECT mdtrt_id, med_chrgitm_type, sum(cnt) AS q FROM {{class_lines}} GROUP BY mdtrt_id, med_chrgitm_type),
        vq AS (        -- per rule and visit with screened lines: its quantity of the classes (0 without), its peer key
            SELECT rp.rule_key, v.mdtrt_id, v.inpatient, v.inst_level, strftime(v.begntime, '%Y-%m') AS month,
                   left({icd("v.main_diag")}, 3) AS dg,
                   coalesce(sum(l.q), 0) AS q
            FROM rp JOIN {LIVE_VISITS} v ON {rule_applies("rp", "v.begin_date", "v")}
            LEFT JOIN lc l ON l.mdtrt_id = v.mdtrt_id AND list_contains(rp.classes, l.med_chrgitm_type)
            WHERE v.main_diag IS NOT NULL AND trim(v.main_diag) <> ''
              AND v.mdtrt_id IN (SELECT mdtrt_id FROM {{screened_visits}})
            GROUP BY rp.rule_key, v.mdtrt_id, v.inpatient, v.inst_level, month, dg),
        g AS (
            SELECT vq.rule_key, month, inpatient, inst_level, dg, count(*) AS n,
                   list_sort(list(CAST(q AS DECIMAL(18,4)))) AS vals,
                   any_value(rp.percentile) AS percentile, any_value(rp.min_peers) AS min_peers,
                   any_value(rp.classes) AS classes
            FROM vq JOIN rp USING (rule_key)
            GROUP BY vq.rule_key, month, inpatient, inst_level, dg),
        gp AS (SELECT g.* EXCLUDE (vals), {_LO} AS p_lo, {_HI} AS p_hi, {_FRAC} AS p_frac FROM g WHERE n >= min_peers),
        judged AS (
            SELECT j.rule_key, j.mdtrt_id, j.month, g.classes,
                   '本次' || CASE WHEN j.inpatient THEN '住院 ' ELSE '门诊 ' END || j.mdtrt_id || ' '
                   || {chrg_names("g.classes")} || ' 数量 ' || qty(j.q) || '，高于同类就诊第 ' || qty(g.percentile)
                   || ' 百分位 ' || qty({_PVAL}) || '（' || j.month || ' 开始的' || CASE WHEN j.inpatient THEN '住院' ELSE '门诊' END
                   || '，' || level_cn(j.inst_level) || '机构，主诊断 ' || j.dg || '；同类 ' || g.n || ' 人次，含本次）' AS ev_head
            FROM vq j JOIN gp g USING (rule_key, month, inpatient, inst_level, dg)
            WHERE {_ABOVE})
        SELECT j.rule_key, j.mdtrt_id AS finding_key, j.mdtrt_id, l.bkkp_sn, 'violating' AS role,
               {claim("whole_line", deductible="l.deductible")} AS claim, j.ev_head, {LINE_REF} || ' ' || {LINE_FACT} AS ev_line,
               j.month AS peer_month
        FROM judged j JOIN {{class_lines}} l ON l.mdtrt_id = j.mdtrt_id AND list_contains(j.classes, l.med_chrgitm_type)
    """,
)
