"""高频购药 high_frequency_purchase: one person buying the same drug on too many days a month.

**What it flags.** Per person, drug group and calendar month (of the fee date), the distinct
days on which the person was billed the group, across all visits and institutions (hospital
clinics and pharmacies alike), when they are more than `max_days_per_month`. The drug group is
the first `key_len` characters of `hilist_code` (default 10: for western drugs, the generic
name and dosage form, so different makers and pack sizes of one drug are one group).

Which lines count: lines of outpatient visits and pharmacy purchases (any `med_type` not
starting with 2: drugs given during a hospital stay are not purchases); without items, every
western and patent drug line (`list_type` 101), with items (codes, prefixes or a table), only
the matched lines. Only days with a line the fund paid for (deductible above 0) count: fully
self-paid purchases cost the fund nothing. A month
is a calendar month: 03-31 and 04-01 are different months. Only screened lines count, which at
`post_hoc` are the settled lines of every batch loaded so far: a month split across batches is
judged whole once both are loaded (the finding then covers all of it).

The first `max_days_per_month` days of the month are allowed; the lines of the later days are
the violating lines, the allowed days' lines are related. The finding is about the person's
month (one finding per person, group and month; its visit is the one of the first excess day).

**Why it matters.** Buying the same drug every few days, from several pharmacies, is how
insured drugs are stockpiled and resold (倒卖医保药品), or how a lent card is used by others.

**Deduction.** `whole_line` on the lines of the excess days (each line's deductible), default
severity `suspect`: the amount at risk goes to manual review.

**Example.**

```yaml
- id: R-HFP-001
  version: 1
  name: 同一药品每月购药不超过4天
  type: high_frequency_purchase
  params: {max_days_per_month: 4, key_len: 10}
```

gives `参保人 P1 2026-03 购买同组药品 XA10BAD010（编码前 10 位）共 5 天（03-01、03-05、03-09、
03-13、03-20），每月限 4 天，超出 1 天；药品【二甲双胍片】(XA10BAD010A001010104486) 2026-03-20 收费 2 次，
金额 36.00 元（就诊 V5，机构 Y003）`.
"""

#: the same documentation in Chinese (`medaudit rules explain` shows it first; keep the two in step)
DOC_ZH = """高频购药：同一人同一药品一个月内购药天数过多。

**查什么。** 按人、药品组和自然月（按收费日期），统计此人被收取该组药品的不同天数（跨所有就诊和机构，医院门诊和药店都算），超过 `max_days_per_month` 即命中。药品组为 `hilist_code` 的前 `key_len` 位（默认 10：西药为通用名和剂型，不同厂家、包装的同一药品为一组）。

计入的明细：门诊就诊和药店购药（`med_type` 不以 2 开头；住院期间用药不算购药）；规则未列项目时为所有西药和中成药明细（`list_type` 101），列了项目（编码、前缀或项目表）则只计匹配的明细。只计有基金支付明细（可扣金额大于 0）的日子：全自费的购药不花基金的钱。自然月指日历月：03-31 和 04-01 属于不同月份。只计被审核的明细，事后环节即已加载的所有批次中已结算的明细：跨批次的月份在两批都加载后整体判断（发现的问题覆盖整个月）。

当月前 `max_days_per_month` 天允许；此后各天的明细为违规项，允许天数内的明细为涉及项。发现的问题针对此人这个月（每人、每组、每月一个问题；其就诊为第一个超出日的就诊）。

**为什么。** 每隔几天在多家药店购买同一药品，是囤积并倒卖医保药品（倒卖医保药品）或借出的医保卡被他人使用的常见方式。

**扣款。** `whole_line`：超出各天的明细（各自的可扣金额），默认严重程度 `suspect`：涉及金额交人工复核。
"""

from .base import ITEM_REF, LINE_FACT, Param, Reach, RuleType, claim

RULE_TYPE = RuleType(
    name="high_frequency_purchase",
    title="高频购药",
    nature="不合理诊疗",
    mode="whole_line",
    doc=__doc__,
    doc_zh=DOC_ZH,
    items="optional",
    default_severity="suspect",
    stages=("post_hoc",),
    # the person's purchase days in the calendar month
    reach=lambda rule: Reach(whole_months=True),
    params=(
        Param(
            "max_days_per_month", "int", "distinct purchase days allowed per calendar month", required=True, minimum=1
        ),
        Param("key_len", "int", "drug group = the first key_len characters of the code", default=10, minimum=1),
    ),
    query=f"""
        WITH b AS (
            SELECT m.*, left(hilist_code, key_len) AS grp, strftime(fee_date, '%Y-%m') AS month
            FROM {{m}} m
            WHERE deductible > 0 AND NOT inpatient
              AND (list_type = '101' OR rule_key IN (SELECT rule_key FROM {{p}} WHERE NOT match_all))),
        -- the (rule, person, group, month) groups bought on more days than a limit, found by
        -- grouping: the windows below run over their lines only
        cand AS (
            SELECT rule_key, psn_no, grp, month FROM b GROUP BY rule_key, psn_no, grp, month
            HAVING count(DISTINCT fee_date) + max(CASE WHEN fee_date IS NULL THEN 1 ELSE 0 END) > min(max_days_per_month)),
        d AS (
            SELECT b.*, dense_rank() OVER (PARTITION BY b.rule_key, b.psn_no, b.grp, b.month ORDER BY b.fee_date) AS day_no
            FROM b JOIN cand c ON c.rule_key = b.rule_key AND c.psn_no IS NOT DISTINCT FROM b.psn_no
                              AND c.grp IS NOT DISTINCT FROM b.grp AND c.month IS NOT DISTINCT FROM b.month),
        g AS (
            SELECT rule_key, psn_no, grp, month, max(day_no) AS n_days,
                   array_to_string(list_sort(list(DISTINCT strftime(fee_date, '%m-%d'))), '、') AS day_list
            FROM d GROUP BY ALL),
        over AS (
            SELECT d.*, g.n_days, g.day_list, day_no > max_days_per_month AS excess,
                   first_value(mdtrt_id) OVER (PARTITION BY d.rule_key, d.psn_no, d.grp, d.month
                       ORDER BY day_no > max_days_per_month DESC, fee_ocur_time, bkkp_sn) AS first_excess_visit
            FROM d JOIN g USING (rule_key, psn_no, grp, month)
            WHERE g.n_days > max_days_per_month)
        SELECT rule_key, psn_no || '|' || grp || '|' || month AS finding_key, first_excess_visit AS mdtrt_id,
               bkkp_sn, CASE WHEN excess THEN 'violating' ELSE 'related' END AS role,
               {claim("whole_line", carries="excess")} AS claim,
               '参保人 ' || psn_no || ' ' || month || ' 购买同组药品 ' || grp || '（编码前 ' || key_len || ' 位）共 '
                   || n_days || ' 天（' || day_list || '），每月限 ' || max_days_per_month || ' 天，超出 '
                   || (n_days - max_days_per_month) || ' 天' AS ev_head,
               CASE WHEN excess THEN {ITEM_REF} || ' ' || {LINE_FACT} || '（就诊 ' || mdtrt_id || '，机构 '
                   || fixmedins_code || '）' END AS ev_line,
               psn_no, month AS period
        FROM over
    """,
)
