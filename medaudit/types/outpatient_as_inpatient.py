"""门诊转住院 outpatient_as_inpatient: a short stay whose services could have been outpatient.

**What it flags.** An inpatient visit (`med_type` starting with 2) that was settled (it has a
settlement not refunded: its lines are screened at `post_hoc`) and for which all of these hold:

- its length of stay (LOS) is at most `max_los` (default 3): `ipt_days` when recorded, else
  `date(endtime) - date(begntime)`, at least 1 (the LOS every type reads);
- the visit has no row in `setl_list_oprn_d` (no operation or procedure recorded, from any
  batch in the database);
- it has at least one screened line, and every screened line's item class
  (`med_chrgitm_type`) is in `allowed_classes` (default every class but 05 treatment, 06
  surgery and 08 materials: 01, 02, 03, 04, 07, 09, 10, 11, 12, 13, 14). A line without a
  class is never in the allowed set: one such line keeps the visit from being flagged;
- when `diag_prefixes` is given (optional, off by default), its main diagnosis starts with one
  of them. The main diagnosis is `mdtrt_d.dscg_maindiag_code`, else the `setl_list_diag_d` row
  with `maindiag_flag` 1 (as `readmission` reads it); codes are compared upper case with the
  dots removed (`J06.900` starts with `J06`). A visit without a main diagnosis is then not flagged.

The issue's further signals (no nursing above 二级, item classes beyond the defaults) are
parameters: `allowed_classes` is the list, e.g. leave out 07 to refuse any nursing line.
Refunds are netted (a fully refunded treatment line no longer counts); a visit whose every
settlement was refunded was cancelled and is left out. The rule is judged on the admission
date (validity) and the visit's scope (med_type, level, institution).

**Stages.** `post_hoc` (the settled visit) and `in_process`, where it judges **the stay so
far**: a stay not settled yet (the in-process lines) with its LOS so far, which is the LOS
above when the stay has an end or `ipt_days`, else `date(latest fee date) - date(begntime)`,
at least 1 (an open stay runs to its latest fee date); in-process findings are warnings. It
does not run at `pre_alert`: an order alone says nothing about the whole stay.

**Why it matters.** Admitting a patient for examinations, lab tests and oral drugs that a
clinic visit would have given turns an outpatient bill into an inpatient case that the fund
pays at the inpatient rate (门诊转住院, 挂床检查), a campaign target of the bureaus (专项治理).

**Deduction.** `whole_visit`, default severity `suspect`: every screened line of the visit is a
violating line claiming its deductible amount, the amount at risk; nothing is deducted until a
reviewer confirms it.

**Example.**

```yaml
- id: R-OAI-001
  version: 1
  name: 短期住院仅检查检验口服药（门诊转住院）
  type: outpatient_as_inpatient
  params: {max_los: 3}
```

gives `本次住院 V7 2026-03-02 入院，住院 2 天（不超过 3 天），无手术操作记录，费用 5 条全部属于
床位费(01)、化验费(04)、护理费(07)、西药费(09)，无允许类别以外的费用；本次就诊费用 5 条，
金额合计 412.00 元，其中医保支付范围内 412.00 元`.
"""

#: the same documentation in Chinese (`medaudit rules explain` shows it first; keep the two in step)
DOC_ZH = """门诊转住院：本可在门诊完成的短期住院。

**查什么。** 已结算（有未退费的结算，事后审核时其明细被审核）的住院就诊（`med_type` 以 2 开头），同时满足：

- 住院天数不超过 `max_los`（默认 3）：取 `ipt_days`，没有时为出院日期 − 入院日期，至少 1 天（各类型通用的住院天数）；
- 该就诊在 `setl_list_oprn_d` 中没有任何记录（数据库中任一批次都没有手术操作）；
- 至少有一条被审核明细，且每条被审核明细的收费项目类别（`med_chrgitm_type`）都在 `allowed_classes` 中（默认除 05 治疗费、06 手术费、08 卫生材料费以外的所有类别：01、02、03、04、07、09、10、11、12、13、14）。没有类别的明细从不属于允许的类别：有一条这样的明细，就诊即不报；
- 给出 `diag_prefixes` 时（可选，默认不用），主诊断以其中之一开头。主诊断取 `mdtrt_d.dscg_maindiag_code`，没有时取 `setl_list_diag_d` 中 `maindiag_flag` 为 1 的行（与 `readmission` 相同）；编码转为大写并去掉小数点后比较。此时没有主诊断的就诊不报。

问题单中的其他信号（护理不高于二级等）通过参数表达：`allowed_classes` 即允许的类别，例如去掉 07 则任何护理明细都不允许。退费冲减后计算（全部退费的治疗明细不再计入）；所有结算都已退费的就诊视为已取消，不查。规则按入院日期判断有效期，按就诊判断适用范围（就诊类型、机构等级、机构）。

**环节。** 事后审核（`post_hoc`，已结算的就诊）和事中预警（`in_process`），事中判断**截至目前的住院**：尚未结算的住院（事中明细），住院天数为截至目前的天数：有出院时间或 `ipt_days` 时同上，否则为最晚收费日期 − 入院日期，至少 1 天（未出院的住院算到其最晚收费日期）；事中问题为预警。不用于事前提醒：单条医嘱无法判断整个住院。

**为什么。** 把本可门诊完成的检查、化验和口服药收为住院，使门诊费用变成按住院待遇支付的住院病例（门诊转住院、挂床检查），是专项治理的重点。

**扣款。** `whole_visit`，默认严重程度 `suspect`：该就诊的每条被审核明细都是违规项，主张其可扣金额（涉及金额）；复核确认前不扣款。
"""

from .base import LIVE_VISITS, Param, RuleType, check_classes, chrg_names, icd, rule_applies, whole_visit_hits

DEFAULT_ALLOWED = ["01", "02", "03", "04", "07", "09", "10", "11", "12", "13", "14"]


def _nonempty(v: list) -> str | None:
    return None if v else "must list at least one prefix (leave it out to judge every diagnosis)"


def _allowed(v: list) -> str | None:
    return check_classes(v) or (None if v else "must list at least one item class")


def los_so_far(v: str, last_fee: str) -> str:
    """SQL: a stay's LOS (``{v}.los``, see :mod:`medaudit.engine`), or for an open stay without
    ``ipt_days`` its LOS so far: to its latest fee date, at least 1."""
    return f"coalesce({v}.los, greatest(date_diff('day', {v}.begin_date, {last_fee}), 1))"


RULE_TYPE = RuleType(
    name="outpatient_as_inpatient",
    title="门诊转住院",
    nature="不合理诊疗",
    mode="whole_visit",
    doc=__doc__,
    doc_zh=DOC_ZH,
    items="none",
    default_severity="suspect",
    # the whole stay (or the stay so far); an order alone says nothing about it
    stages=("in_process", "post_hoc"),
    params=(
        Param("max_los", "int", "longest stay flagged, in days (LOS)", default=3, minimum=1),
        Param(
            "allowed_classes",
            "str_list",
            "item classes (med_chrgitm_type) an outpatient visit could have given",
            default=DEFAULT_ALLOWED,
            check=_allowed,
        ),
        Param("diag_prefixes", "str_list", "optional: only stays whose main diagnosis starts so", check=_nonempty),
    ),
    query=f"""
        WITH rp AS (SELECT p.rule_key, p.max_los, p.allowed_classes, p.diag_prefixes, r.* EXCLUDE (rule_key)
                    FROM {{p}} p JOIN {{r}} r USING (rule_key)),
        vl AS (SELECT mdtrt_id, count(*) AS n_lines, max(fee_date) AS last_fee,
                      bool_or(med_chrgitm_type IS NULL) AS unclassed
               FROM {{lines}} WHERE inpatient GROUP BY mdtrt_id),   -- stays' lines only (the visit's own flag)
        candidates AS (
            SELECT s.*, vl.n_lines, vl.last_fee, {los_so_far("s", "vl.last_fee")} AS los_now
            FROM {LIVE_VISITS} s JOIN vl USING (mdtrt_id)
            WHERE s.inpatient AND NOT vl.unclassed
              AND NOT EXISTS (SELECT 1 FROM {{setl_list_oprn_d}} o WHERE o.mdtrt_id = s.mdtrt_id)),
        short AS (SELECT * FROM candidates WHERE los_now <= (SELECT max(max_los) FROM rp)),
        -- the classes of the short stays' lines only (every stay's classes, 1.45M pairs of stay
        -- and class at 10M lines, were half the type's time)
        cls AS (SELECT mdtrt_id, list(DISTINCT med_chrgitm_type) FILTER (WHERE med_chrgitm_type IS NOT NULL) AS classes
                FROM {{lines}} WHERE inpatient AND mdtrt_id IN (SELECT mdtrt_id FROM short) GROUP BY mdtrt_id),
        stays AS (SELECT s.*, c.classes FROM short s JOIN cls c USING (mdtrt_id)),
        flagged AS (
            SELECT rp.rule_key, s.mdtrt_id,
                   '本次住院 ' || s.mdtrt_id || ' ' || strftime(s.begin_date, '%Y-%m-%d') || ' 入院，'
                   || CASE WHEN s.los IS NULL THEN '尚未出院，截至 ' || strftime(s.last_fee, '%Y-%m-%d') || ' 住院 '
                           ELSE '住院 ' END
                   || s.los_now || ' 天（不超过 ' || rp.max_los || ' 天），无手术操作记录，费用 ' || s.n_lines
                   || ' 条全部属于' || {chrg_names("s.classes")}
                   || CASE WHEN rp.diag_prefixes IS NOT NULL THEN '，主诊断 ' || s.main_diag ELSE '' END
                   || '，无允许类别以外的费用' AS ev_head
            FROM rp JOIN stays s ON {rule_applies("rp", "s.begin_date", "s")}
            WHERE s.los_now <= rp.max_los
              AND list_has_all(rp.allowed_classes, s.classes)
              AND (rp.diag_prefixes IS NULL OR array_length(list_filter(rp.diag_prefixes,
                       lambda x: starts_with({icd("s.main_diag")}, {icd("x")}))) > 0))
        {whole_visit_hits("flagged")}
    """,
)
