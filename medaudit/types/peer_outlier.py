"""水位异常 peer_outlier: a doctor, department or institution far above its peers.

**What it flags.** Per calendar month (of the visits' start) and rule, every entity whose
metric is above the given percentile of its peer group; the finding names the entity, its
value and its denominator (visits or stays), the peer group's size, the peer percentile value,
the peer median and the entity's rank. A profiling warning: no lines, no money (it never
carries an amount, at any stage).

- `entity`: `doctor` (the visit's attending doctor `chfpdr_code`, else the ordering doctor of
  its largest line), `department` (`dscg_dept_codg`, else `adm_dept_codg`, else the ordering
  department of its largest line) or `institution`. A doctor's department is the one of most
  of the doctor's visits that month. Doctors and departments are
  entities within their institution (`D01` of H001 and `D01` of H002 are two departments).
- `metric`, over the screened lines of the entity's visits that month:

  | metric | value | visits counted |
  |---|---|---|
  | `drug_share` 药占比 | drug amount (list_type 101, 102) / total amount | all |
  | `consumable_share` 耗材占比 | consumables (list_type 301) / total amount | all |
  | `exam_lab_share` 检查检验占比 | examinations and lab tests (med_chrgitm_type 03, 04) / total | all |
  | `cost_per_visit` 次均费用 | total amount / visits | all |
  | `los` 平均住院日 | mean length of stay | inpatient visits with an end |
  | `readmission_rate` 再入院率 | share of inpatient admissions that begin 0-15 days after a discharge from the same institution (any diagnosis, planned Z51 stays left out; same test as `readmission`) | inpatient visits |

  Amounts are net line amounts (refunds subtracted). Use the rule's `scope.med_types` to
  compare like with like (for instance `cost_per_visit` over general inpatient stays only).
- `peer_by`: `level` (entities of institutions of the same level), `department` (doctors of
  the same main department code, or departments with the same code, across institutions;
  not for `institution`) or `none` (all entities of the kind).
- `percentile` (default 95): the peer value is the linear-interpolation percentile of the
  peers' values (as `quantile_cont`). An entity is flagged when its value is strictly above it.
- `min_visits` (default 30): entities with fewer visits counted that month are neither judged
  nor peers (a rate over a handful of stays says nothing: one readmission in one stay is
  100%). A peer group of fewer than 5 entities is not judged: a percentile of three values
  says nothing. The evidence gives the peer group's size (entities with at least
  `min_visits`), its median (as `quantile_cont(0.5)`) and the percentile value; `medaudit
  analyze` shows every entity's figures with their percentiles.
  Figures are exact decimals (ratios to 12 places), shown rounded half-up (633.175 元 ->
  633.18 元, 7.25 天 -> 7.3 天).

The rule's validity and scope are applied to each visit (its start date, med_type, level,
institution). The finding has no lines: its institution, department and doctor are the
entity's, its period is the month. Findings are warnings (status `warning`) at every stage:
there is no money to review or appeal; they feed in-process supervision (事中, 水位分析) and
the choice of targets for on-site checks.

**Why it matters.** A doctor whose drug share is far above colleagues of the same department,
or a hospital whose cost per visit tops its level, is where over-prescribing, induced demand
and upcoding concentrate. Profiling points the auditors there before any single claim breaks
a rule.

**Deduction.** `none`.

**Example.**

```yaml
- id: R-PEER-001
  version: 1
  name: 医师药占比高于同科室第95百分位
  type: peer_outlier
  params: {entity: doctor, metric: drug_share, peer_by: department, percentile: 95, min_visits: 30}
```

gives `医师 DR07（机构 H001，科室 D01）2026-03 药占比 62.5%（就诊 40 人次），高于同科室（D01）
医师第 95 百分位 48.3%；同类 20 个医师，中位数 31.0%，排第 1`.
"""

#: the same documentation in Chinese (`medaudit rules explain` shows it first; keep the two in step)
DOC_ZH = """水位异常：医生、科室或机构的指标远高于同类。

**查什么。** 按自然月（按就诊开始日期）和规则，指标高于同类群体给定百分位数的每个对象；问题中写明对象、其指标值及分母（就诊或住院人次）、同类群体的个数、同类的百分位数值、同类中位数和排名。这是画像预警：没有明细，任何环节都不涉及金额。

- `entity`：`doctor`（就诊的主诊医生 `chfpdr_code`，没有时取其金额最大明细的开单医生）、`department`（`dscg_dept_codg`，没有时 `adm_dept_codg`，再没有时取金额最大明细的开单科室）或 `institution`。医生所属科室为其当月多数就诊的科室。医生和科室以机构为单位区分（H001 的 `D01` 和 H002 的 `D01` 是两个科室）。
- `metric`，按对象当月就诊的被审核明细计算：`drug_share` 药占比（药品金额 list_type 101、102 / 总金额）、`consumable_share` 耗材占比（list_type 301 / 总金额）、`exam_lab_share` 检查检验占比（med_chrgitm_type 03、04 / 总金额）、`cost_per_visit` 次均费用（总金额 / 就诊次数）、`los` 平均住院日（有结束时间的住院）、`readmission_rate` 再入院率（出院后 0-15 天内在同一机构再次入院的住院占比，不论诊断，计划性 Z51 住院除外；与 `readmission` 判断相同）。金额为退费冲减后的净额。用规则的 `scope.med_types` 限定可比的就诊类型。
- `peer_by`：`level`（同级机构的对象）、`department`（同一主科室编码的医生，或跨机构同编码的科室；不适用于 `institution`）或 `none`（同类全部对象）。
- `percentile`（默认 95）：同类指标值的线性插值百分位数（同 `quantile_cont`），严格高于它才标记。
- `min_visits`（默认 30）：当月计入就诊少于此数的对象既不被判断也不作为同类（少数几次住院的比率没有意义：1 次住院有 1 次再入院即为 100%）。同类少于 5 个对象时不判断。证据给出同类群体的个数（达到 `min_visits` 的对象）、中位数（同 `quantile_cont(0.5)`）和百分位数值；`medaudit analyze` 列出每个对象的指标及其百分位。

规则对每次就诊按开始日期、就诊类型、机构等级和机构适用有效期和范围。问题没有明细：其机构、科室、医生即对象本身，期间为该月。问题在各环节都是预警（状态 `warning`）：没有金额可复核或申诉，用于事中监管（水位分析）和现场检查对象的选择。

**为什么。** 药占比远高于同科室同事的医生、次均费用居同级之首的医院，正是过度开药、诱导需求和高套编码集中的地方。画像在任何一条单据违规之前就把审核人员引向那里。

**扣款。** `none`：不扣款。
"""

from .base import LIVE_VISITS, Param, Reach, RuleType, claim, rule_applies
from .readmission import excluded_condition, pair_condition

MIN_PEERS = 5

_NOUN = "CASE entity WHEN 'doctor' THEN '医师' WHEN 'department' THEN '科室' ELSE '机构' END"
_METRIC_CN = """CASE metric WHEN 'drug_share' THEN '药占比' WHEN 'consumable_share' THEN '耗材占比'
                    WHEN 'exam_lab_share' THEN '检查检验占比' WHEN 'cost_per_visit' THEN '次均费用'
                    WHEN 'los' THEN '平均住院日' ELSE '15天内再入院率' END"""


def _fmt(x: str) -> str:
    """A metric as the evidence shows it: exact decimals rounded half-up (not ``printf`` of a
    DOUBLE: DuckDB's and Java's formatting round ties differently), the same on every engine."""
    d = f"CAST({x} AS DECIMAL(30,18))"
    return f"""CASE WHEN metric = 'cost_per_visit' THEN CAST(CAST(round({d}, 2) AS DECIMAL(18,2)) AS VARCHAR) || ' 元'
                    WHEN metric = 'los' THEN CAST(CAST(round({d}, 1) AS DECIMAL(18,1)) AS VARCHAR) || ' 天'
                    ELSE CAST(CAST(round({d} * CAST(100 AS DECIMAL(3,0)), 1) AS DECIMAL(18,1)) AS VARCHAR) || '%' END"""


def _quantile(h: str) -> str:
    """``quantile_cont`` of the sorted list ``vals`` (``n_peers`` values, DECIMAL(24,12)) at the
    exact position ``h`` (DECIMAL(18,6), 0-based): the linear interpolation, in decimals whose
    widths keep it exact on DuckDB and on Spark (no precision loss: every product under 38 digits)."""
    i = f"CAST(floor({h}) AS INTEGER)"
    return f"""(vals[{i} + 1] + CAST(CAST({h} - floor({h}) AS DECIMAL(7,6))
                                     * (vals[least({i} + 2, n_peers)] - vals[{i} + 1]) AS DECIMAL(32,18)))"""


def _validate(params: dict) -> str | None:
    if params.get("peer_by") == "department" and params.get("entity") == "institution":
        return "params.peer_by department needs entity doctor or department (institutions have no department)"
    return None


def _check_percentile(v) -> str | None:
    return None if 0 < v < 100 else f"must be above 0 and below 100, got {v}"


#: what the type reads of the lines: per visit, its amounts by class and the doctor and
#: department of its largest line (a visit's lines are all in its person's part of a big screen).
#: The largest line's doctor and department stand in for the visit's own only (``coalesce`` in
#: the query), so they are sought on the visits without them alone (the two ``arg_max`` were
#: 1.2 of this input's 2.1 CPU s at 10.48M lines whose visits all name both)
VISIT_AMOUNTS = """
    SELECT l.mdtrt_id, sum(l.amt) AS amt,
           coalesce(sum(l.amt) FILTER (WHERE l.list_type IN ('101', '102')), 0) AS drug_amt,
           coalesce(sum(l.amt) FILTER (WHERE l.list_type = '301'), 0) AS cons_amt,
           coalesce(sum(l.amt) FILTER (WHERE l.med_chrgitm_type IN ('03', '04')), 0) AS exlab_amt,
           -- ties between equal amounts: the largest code (the same on every engine)
           arg_max(l.bilg_dr_code, (l.amt, l.bilg_dr_code)) FILTER (WHERE l.bilg_dr_code IS NOT NULL AND w.no_dr) AS line_dr,
           arg_max(l.bilg_dept_codg, (l.amt, l.bilg_dept_codg)) FILTER (WHERE l.bilg_dept_codg IS NOT NULL AND w.no_dept) AS line_dept
    FROM {lines} l
    LEFT JOIN (SELECT mdtrt_id, chfpdr_code IS NULL AS no_dr, dscg_dept_codg IS NULL AND adm_dept_codg IS NULL AS no_dept
               FROM {visits} WHERE chfpdr_code IS NULL OR (dscg_dept_codg IS NULL AND adm_dept_codg IS NULL)) w
           ON w.mdtrt_id = l.mdtrt_id
    GROUP BY l.mdtrt_id
"""

RULE_TYPE = RuleType(
    name="peer_outlier",
    title="水位异常",
    nature="不合理诊疗",
    mode="none",
    doc=__doc__,
    doc_zh=DOC_ZH,
    items="none",
    default_severity="suspect",
    stages=("in_process", "post_hoc"),
    # every visit of the month, all institutions (the peers)
    reach=lambda rule: Reach(scope="month"),
    validate=_validate,
    line_inputs={"visit_amounts": VISIT_AMOUNTS},
    params=(
        Param("entity", "choice", "who is profiled", required=True, choices=("doctor", "department", "institution")),
        Param(
            "metric",
            "choice",
            "what is measured",
            required=True,
            choices=("drug_share", "consumable_share", "exam_lab_share", "cost_per_visit", "los", "readmission_rate"),
        ),
        Param("peer_by", "choice", "who the peers are", default="level", choices=("level", "department", "none")),
        Param("percentile", "number", "flag above this percentile of the peers", default=95, check=_check_percentile),
        Param("min_visits", "int", "visits an entity needs in the month to be judged", default=30, minimum=1),
    ),
    query=f"""
        WITH rp AS (SELECT p.rule_key, p.entity, p.metric, p.peer_by, p.percentile, p.min_visits, r.* EXCLUDE (rule_key)
                    FROM {{p}} p JOIN {{r}} r USING (rule_key)),
        vl AS (SELECT * FROM {{visit_amounts}}),
        live AS (SELECT * FROM {LIVE_VISITS}),
        readm AS (   -- admissions that are readmissions (as the readmission type's defaults, any diagnosis)
            SELECT DISTINCT c.mdtrt_id FROM live c JOIN live a ON {pair_condition("c", "a", "15", "TRUE", "0")}
            WHERE c.inpatient AND NOT {excluded_condition("c", "['Z51']")}),
        vv AS (
            SELECT v.mdtrt_id, v.fixmedins_code, v.inst_level, v.med_type, v.inpatient, v.los, v.begin_date,
                   strftime(v.begntime, '%Y-%m') AS month, vl.amt, vl.drug_amt, vl.cons_amt, vl.exlab_amt,
                   coalesce(v.chfpdr_code, vl.line_dr) AS dr,
                   coalesce(v.dscg_dept_codg, v.adm_dept_codg, vl.line_dept) AS dept,
                   r.mdtrt_id IS NOT NULL AS readmitted
            FROM live v JOIN vl USING (mdtrt_id) LEFT JOIN readm r ON r.mdtrt_id = v.mdtrt_id),
        ev AS (
            SELECT rp.rule_key, rp.entity, rp.metric, rp.peer_by, rp.percentile, rp.min_visits, vv.*,
                   CASE rp.entity WHEN 'doctor' THEN vv.dr WHEN 'department' THEN vv.dept ELSE vv.fixmedins_code END AS ent
            FROM rp JOIN vv ON {rule_applies("rp", "vv.begin_date", "vv")}
            WHERE (rp.metric NOT IN ('los', 'readmission_rate') OR vv.inpatient)
              AND (rp.metric <> 'los' OR vv.los IS NOT NULL)),
        ent AS (
            SELECT rule_key, month, fixmedins_code, ent,
                   any_value(entity) AS entity, any_value(metric) AS metric, any_value(peer_by) AS peer_by,
                   any_value(percentile) AS percentile, any_value(min_visits) AS min_visits,
                   count(*) AS n, max(inst_level) AS inst_level,
                   -- exact decimals (xdiv: 12 places; NULL over a zero total), not DOUBLE averages
                   CAST(CASE any_value(metric)
                        WHEN 'drug_share' THEN xdiv(sum(drug_amt), sum(amt))
                        WHEN 'consumable_share' THEN xdiv(sum(cons_amt), sum(amt))
                        WHEN 'exam_lab_share' THEN xdiv(sum(exlab_amt), sum(amt))
                        WHEN 'cost_per_visit' THEN xdiv(sum(amt), count(*))
                        WHEN 'los' THEN xdiv(sum(los), count(*))
                        ELSE xdiv(count(*) FILTER (WHERE readmitted), count(*)) END AS DECIMAL(24,12)) AS value
            FROM ev WHERE ent IS NOT NULL GROUP BY rule_key, month, fixmedins_code, ent),
        md AS (      -- an entity's main department: the one of most of its visits (ties: the smallest code)
            SELECT rule_key, month, fixmedins_code, ent, arg_min(dept, (-k, dept)) AS main_dept
            FROM (SELECT rule_key, month, fixmedins_code, ent, dept, count(*) AS k FROM ev
                  WHERE ent IS NOT NULL AND dept IS NOT NULL GROUP BY ALL)
            GROUP BY ALL),
        elig AS (
            SELECT *, CASE peer_by WHEN 'level' THEN CAST(inst_level AS VARCHAR)
                                   WHEN 'department' THEN CASE WHEN entity = 'department' THEN ent ELSE main_dept END
                                   ELSE '' END AS peer_key
            FROM ent LEFT JOIN md USING (rule_key, month, fixmedins_code, ent)
            WHERE n >= min_visits AND value IS NOT NULL),
        peers AS (
            SELECT rule_key, month, peer_key, count(*) AS n_peers, list_sort(list(value)) AS vals,
                   -- the percentile's and the median's places in the sorted values, exact
                   CAST((count(*) - 1) * CAST(any_value(percentile) AS DECIMAL(9,4)) * CAST(0.01 AS DECIMAL(3,2))
                        AS DECIMAL(18,6)) AS h,
                   CAST((count(*) - 1) * CAST(0.5 AS DECIMAL(2,1)) AS DECIMAL(18,6)) AS h_med
            FROM elig WHERE peer_key IS NOT NULL GROUP BY rule_key, month, peer_key),
        pv AS (
            SELECT *, {_quantile("h")} AS pval, {_quantile("h_med")} AS pmed
            FROM peers WHERE n_peers >= {MIN_PEERS}),
        ranked AS (
            SELECT e.*, pv.pval, pv.pmed, pv.n_peers,
                   rank() OVER (PARTITION BY e.rule_key, e.month, e.peer_key ORDER BY e.value DESC) AS rnk
            FROM elig e JOIN pv USING (rule_key, month, peer_key))
        SELECT rule_key, entity || '|' || fixmedins_code || '|' || ent || '|' || month AS finding_key,
               NULL AS mdtrt_id, NULL AS bkkp_sn, 'violating' AS role, {claim("none")} AS claim,
               CASE entity WHEN 'doctor' THEN '医师 ' || ent || '（机构 ' || fixmedins_code || coalesce('，科室 ' || main_dept, '') || '）'
                           WHEN 'department' THEN '科室 ' || ent || '（机构 ' || fixmedins_code || '）'
                           ELSE '机构 ' || ent || ' ' END
                   || month || ' ' || {_METRIC_CN} || ' ' || {_fmt("value")}
                   || '（' || CASE WHEN metric IN ('los', 'readmission_rate') THEN '住院 ' ELSE '就诊 ' END || n || ' 人次），高于'
                   || CASE peer_by WHEN 'level' THEN '同级（' || level_cn(inst_level) || '）'
                                   WHEN 'department' THEN '同科室（' || peer_key || '）' ELSE '全部' END
                   || {_NOUN} || '第 ' || qty(percentile) || ' 百分位 ' || {_fmt("pval")}
                   || '；同类 ' || n_peers || ' 个' || {_NOUN} || '，中位数 ' || {_fmt("pmed")}
                   || '，排第 ' || rnk AS ev_head,
               NULL AS ev_line,
               fixmedins_code,
               CASE WHEN entity = 'department' THEN ent WHEN entity = 'doctor' THEN main_dept END AS dept_code,
               CASE WHEN entity = 'doctor' THEN ent END AS dr_code,
               month AS period
        FROM ranked WHERE value > pval
    """,
)
