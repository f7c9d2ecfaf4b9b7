"""目录外 not_in_catalog: a code the insurance catalogue does not hold on the fee date.

**What it flags.** A matched line (every line when the rule names no items; name codes or
prefixes to limit it, e.g. `prefixes: [X, Z]` for drugs) whose `hilist_code` has no row in the
`hilist` knowledge table in force on the fee date: no row with that code at all, or only rows
whose `begndate`..`enddate` (both inclusive, either may be empty) do not cover the fee date.
**Only when a catalogue is loaded:** with an empty `hilist` table the type flags nothing (it
cannot tell a missing code from a missing catalogue); load the catalogue as a knowledge table
of the batch. Lines the fund did not pay (deductible 0, e.g. switched to self-pay) are not
flagged.

**Why it matters.** The fund pays only for drugs, services and consumables of the catalogue.
A code outside it (an expired code, a hospital's own code reported as a national one, a drug
delisted at the start of the year) should have been paid by the patient.

**Deduction.** `whole_line`: the line's deductible amount.

**Stages.** All three: one line and the catalogue are all it needs.

**Example.**

```yaml
- id: R-CAT-001
  version: 1
  name: 医保目录外药品
  type: not_in_catalog
  items: {prefixes: [X, Z]}
```

gives `药品【某注射液】(XA01BAA001A001010100001) 不在医保目录内；2026-03-02 收费 1 次，金额 35.00 元`,
or, for a code whose catalogue row has expired,
`... 医保目录有效期 2020-01-01 至 2025-12-31，收费日期不在有效期内；...`.
"""

#: the same documentation in Chinese (`medaudit rules explain` shows it first; keep the two in step)
DOC_ZH = """目录外：收费日期当天医保目录中没有的编码。

**查什么。** 匹配的明细（规则未列项目时为所有明细；可用编码或前缀限定，例如药品用 `prefixes: [X, Z]`），其 `hilist_code` 在 `hilist` 知识表中没有收费日期当天有效的行：根本没有该编码，或只有 `begndate`..`enddate`（首尾都含，任一可为空）不覆盖收费日期的行。**仅在加载了目录时生效：** `hilist` 表为空时本类型不报任何问题（无法区分编码缺失和目录缺失），请把目录作为批次的知识表加载。基金未支付的明细（可扣金额为 0，例如转自费）不报。

**为什么。** 基金只支付目录内的药品、服务和耗材。目录外的编码（已失效的编码、医院自编码冒充国家编码、年初被调出目录的药品）应由患者自付。

**扣款。** `whole_line`：该明细的可扣金额。

**环节。** 三个环节都适用：一条明细加上目录就能判断。
"""

from .base import ITEM_REF, LINE_FACT, RuleType, claim, claim_of, hilist_in_force


# ---------------------------------------------------------------------------- in memory (pre-alert)
# The same check over the request's rows, for the pre-alert fast path: a transcription of the
# query above (tests/test_prealert_parity.py holds the two equal).
from .evidence import Hit, ref, line_fact, hit


def evaluate(ctx, ms: list[dict]) -> list[Hit]:
    if not ms or not ctx.has_catalog():
        return []
    out = []
    for m in ms:
        if not m["deductible"] > 0:
            continue
        rows = ctx.catalog_rows(m["hilist_code"])
        d = m["fee_date"]
        if any((b is None or b <= d) and (e is None or e >= d) for b, e, *_ in rows):
            continue
        spans = sorted({(f"{b:%Y-%m-%d}" if b else "") + " 至 " + (f"{e:%Y-%m-%d}" if e else "") for b, e, *_ in rows})
        why = " 不在医保目录内；" if not spans else f" 医保目录有效期 {'、'.join(spans)}，收费日期不在有效期内；"
        out.append(hit(m, "violating", claim_of("whole_line", m), "", f"{ref(m)}{why}{line_fact(m)}"))
    return out


RULE_TYPE = RuleType(
    name="not_in_catalog",
    title="目录外",
    nature="超支付范围",
    mode="whole_line",
    doc=__doc__,
    doc_zh=DOC_ZH,
    evaluate=evaluate,
    items="optional",
    query=f"""
        WITH out AS (
            -- an anti join on the code with the dates as its condition (NOT EXISTS here was
            -- decorrelated into a copy of every matched line and a grouping of their days)
            SELECT m.* FROM {{m}} m ANTI JOIN {{hilist}} h ON {hilist_in_force("h", "m")}
            WHERE m.deductible > 0 AND EXISTS (SELECT 1 FROM {{hilist}})),
        known AS (      -- the code's catalogue rows in force on other dates, for the evidence
            SELECT hilist_code, string_agg(DISTINCT span, '、' ORDER BY span) AS spans   -- in date order, every run
            FROM (SELECT hilist_code, coalesce(strftime(begndate, '%Y-%m-%d'), '') || ' 至 '
                                      || coalesce(strftime(enddate, '%Y-%m-%d'), '') AS span
                  FROM {{hilist}} WHERE hilist_code IN (SELECT hilist_code FROM out))
            GROUP BY hilist_code)
        SELECT o.rule_key, o.mdtrt_id AS finding_key, o.mdtrt_id, o.bkkp_sn, 'violating' AS role,
               {claim("whole_line", deductible="o.deductible")} AS claim, '' AS ev_head,
               {ITEM_REF}
                   || CASE WHEN k.spans IS NULL THEN ' 不在医保目录内；'
                           ELSE ' 医保目录有效期 ' || k.spans || '，收费日期不在有效期内；' END
                   || {LINE_FACT} AS ev_line
        FROM out o LEFT JOIN known k USING (hilist_code)
    """,
)
