"""关联缺失 companion_required: an item billed without any of the items it requires.

**What it flags.** The matched lines of a visit when none of the item's `companions` (a list
of exact codes, per item: `companions` column of the item table, codes separated by `|`) is
billed anywhere in the same visit. A companion counts when it has a line in the visit with a
positive net quantity, whoever paid it (a self-paid companion was still given); a companion
refunded in full does not count. Lines of the item the fund did not pay (deductible 0) are not
flagged. Companion names in the evidence come from the `hilist` catalogue when one is loaded.

**Why it matters.** Some charges only make sense with another: an anaesthesia monitoring fee
without an anaesthesia, a drug's infusion fee without the infusion, a contrast agent without
the contrast-enhanced scan. Without its companion the charge is either unbundled from
somewhere else or for a service not given. It is a strong sign, not a proof (the companion may
have been billed to another visit), hence manual review by default.

**Deduction.** `whole_line` on the item's lines. **Default severity: suspect** (nothing is
deducted until a reviewer confirms; the amount at risk is shown).

**Stages.** `post_hoc` only: a companion may still be billed later in an open stay, so the
absence can only be judged on a settled visit.

**Example.**

```yaml
- id: R-CMP-001
  version: 1
  name: 麻醉中监测须有麻醉项目
  type: companion_required
  items:
    rows:
      - {code: "001402000010000", companions: "001401000010000|001401000020000"}
```

gives `项目【麻醉中监测】(001402000010000) 须与 【局部浸润麻醉】(001401000010000)、(001401000020000) 之一同次就诊收费，本次就诊均未收费；2026-03-02 收费 2 次，金额 60.00 元`.
"""

#: the same documentation in Chinese (`medaudit rules explain` shows it first; keep the two in step)
DOC_ZH = """关联缺失：收了某项目，却没有收它必须伴随的任何一个项目。

**查什么。** 同一次就诊中，项目的 `companions`（按项目给出的编码列表：项目表的 `companions` 列，多个编码用 `|` 分隔）一个都没有收费时，该项目的匹配明细命中。伴随项目只要在同次就诊中有净数量为正的明细就算（自费的也算，服务确实做了）；全额退费的不算。基金未支付的明细（可扣金额为 0）不报。证据中的伴随项目名称在加载了 `hilist` 目录时取自目录。

**为什么。** 有些收费必须与另一项一起才成立：没有麻醉却收麻醉监测费、没有输液却收输液费、没有增强扫描却收造影剂。缺少伴随项目说明这笔收费是从别处拆出来的，或服务根本没有提供。这是强烈信号而非证据（伴随项目可能收在另一次就诊），所以默认人工复核。

**扣款。** `whole_line`：该项目的明细。**默认严重程度 `suspect`**（复核确认前不扣款，只显示涉及金额）。

**环节。** 仅事后（`post_hoc`）：在院期间伴随项目可能稍后才收费，只有结算后的就诊才能判断缺失。
"""

from .base import ITEM_REF, LINE_FACT, Param, RuleType, claim

RULE_TYPE = RuleType(
    name="companion_required",
    title="关联缺失",
    nature="不合理诊疗",
    mode="whole_line",
    doc=__doc__,
    doc_zh=DOC_ZH,
    default_severity="suspect",
    stages=("post_hoc",),
    params=(
        Param(
            "companions",
            "str_list",
            "codes of which at least one must be billed in the same visit",
            required=True,
            per_item=True,
        ),
    ),
    query=f"""
        WITH s AS (SELECT * FROM {{m}} WHERE deductible > 0 AND array_length(companions) > 0),
        pairs AS (SELECT DISTINCT rule_key, bkkp_sn, mdtrt_id, unnest(companions) AS c FROM s),
        present AS (
            SELECT DISTINCT p.rule_key, p.bkkp_sn FROM pairs p
            JOIN {{lines}} l ON l.mdtrt_id = p.mdtrt_id AND l.hilist_code = p.c),
        miss AS (SELECT s.* FROM s ANTI JOIN present USING (rule_key, bkkp_sn)),
        names AS (SELECT hilist_code, any_value(hilist_name) AS hname FROM {{hilist}} GROUP BY hilist_code),
        txt AS (
            SELECT rule_key, item_code, string_agg(coalesce('【' || hname || '】', '') || '(' || c || ')', '、' ORDER BY c) AS ctext
            FROM (SELECT DISTINCT rule_key, hilist_code AS item_code, unnest(companions) AS c FROM miss) x
            LEFT JOIN names n ON n.hilist_code = x.c
            GROUP BY rule_key, item_code)
        SELECT miss.rule_key, mdtrt_id AS finding_key, mdtrt_id, bkkp_sn, 'violating' AS role, {claim("whole_line")} AS claim,
               '' AS ev_head,
               {ITEM_REF} || ' 须与 ' || ctext || ' 之一同次就诊收费，本次就诊均未收费；' || {LINE_FACT} AS ev_line
        FROM miss JOIN txt ON txt.rule_key = miss.rule_key AND txt.item_code = miss.hilist_code
    """,
)
