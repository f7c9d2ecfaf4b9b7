"""主次手术未折价 secondary_procedure: a second operation of one group billed at full price.

**What it flags.** On one calendar day of one visit, when lines of two or more different codes
of one surgery group (`group`, per item, e.g. 胃肠手术组) are billed: every line of the group
that day except the highest-priced one (by unit price; ties: the earliest line, then the lowest
`bkkp_sn`) whose unit price is above `rate` times its full price. The full price is the line's
`pric_uplmt_amt`, else the `hilist` catalogue cap for the institution's level on the fee date;
a line with neither is not judged (without a full price a properly discounted line cannot be
told from an undiscounted one). A second line of the main operation's own code counts as a
secondary operation too (e.g. a bilateral procedure). A code may belong to several groups
(national batch 2 does this): it is judged in each, and its line is deducted once. Lines the
fund did not pay (deductible 0) are not flagged but still count as operations of the day. The
highest-priced line is a related line.

**Why it matters.** Several operations through one incision are priced as one main operation
at full price plus the others at a fraction (usually 50%). Billing every operation at full price
charges the fund for work done once.

**Deduction.** `pct` of `1 - rate`: (1 - rate) x the line's deductible (50% with the default).

**Stages.** All three: a line billed above the discounted price stays so whatever is billed
later that day.

**Example.**

```yaml
- id: R-SEC-001
  version: 1
  name: 胃肠同切口多项手术次要手术按50%收费
  type: secondary_procedure
  items:
    rows:
      - {code: "003310000010000", group: 胃肠手术组}
      - {code: "003310000020000", group: 胃肠手术组}
  params: {rate: 0.5}
```

gives `项目【胃肠吻合术】(003310000020000) 与主手术 项目【胃大部切除术】(003310000010000)（单价 3000.00 元）同日同组（胃肠手术组），次要手术应不高于全价 2000.00 元的 50%（1000.00 元），实际单价 2000.00 元，按 50% 扣除；2026-03-02 收费 1 次，金额 2000.00 元`.
"""

#: the same documentation in Chinese (`medaudit rules explain` shows it first; keep the two in step)
DOC_ZH = """主次手术未折价：同组的第二台手术按全价收费。

**查什么。** 同一次就诊的同一自然日中，同一手术组（`group`，按项目给出，例如胃肠手术组）有两个或以上不同编码收费时：当天该组除单价最高的那条（按单价；并列时取最早的明细，再取 `bkkp_sn` 最小的）以外，单价高于 `rate` 乘以全价的每条明细命中。全价取明细的 `pric_uplmt_amt`，没有时取 `hilist` 目录中收费日期有效、与机构等级对应的限价；两者都没有的明细不判断（没有全价就无法区分已折价和未折价）。主手术编码的第二条明细也算次要手术（例如双侧手术）。一个编码可以属于多个组（国家第 2 批如此）：在每组中分别判断，其明细只扣一次。基金未支付的明细（可扣金额为 0）不报，但仍算当天的手术。单价最高的明细为涉及项。

**为什么。** 同一切口的多台手术按一台主手术全价、其余按一定比例（通常 50%）收费；每台都按全价收费，就是对只做了一次的工作多收钱。

**扣款。** `pct`，比例 `1 - rate`：（1 − rate）× 该明细可扣金额（默认为 50%）。

**环节。** 三个环节都适用：高于折后价收费的明细，无论当天之后再收什么都仍然如此。
"""

from decimal import Decimal

from .base import ITEM_REF, LINE_FACT, Param, RuleType, claim, claim_of, hilist_cap, hilist_caps_join, price_text


def _rate(v: Decimal) -> str | None:
    return None if 0 <= v < 1 else f"must be at least 0 and below 1, got {v}"


# ---------------------------------------------------------------------------- in memory (pre-alert)
# The same check over the request's rows, for the pre-alert fast path: a transcription of the
# query above (tests/test_prealert_parity.py holds the two equal).
from typing import Any
from .evidence import Hit, qty, price_text as py_price_text, ref, line_fact, hit


def evaluate(ctx, ms: list[dict]) -> list[Hit]:
    seen: set = set()
    s = []
    for m in ms:
        grp = m["group"].strip() if m["group"] is not None else ""
        if not grp:
            continue
        k = (m["rule_key"], m["bkkp_sn"], grp)
        if k in seen:
            continue
        seen.add(k)
        full = m["pric_uplmt_amt"] if m["pric_uplmt_amt"] is not None else ctx.cap(m)
        s.append({**m, "full_pric": full})

    def key(r):
        return (r["rule_key"], r["mdtrt_id"], r["fee_date"], r["group"])

    groups: dict[Any, list[dict]] = {}
    for r in s:
        groups.setdefault(key(r), []).append(r)
    out = []
    for grp in groups.values():
        if len({r["hilist_code"] for r in grp}) <= 1:
            continue
        grp.sort(key=lambda r: (-r["pric"], r["fee_ocur_time"], r["bkkp_sn"]))
        main = grp[0]
        flags = []
        for n, r in enumerate(grp):
            flags.append(
                n > 0 and r["deductible"] > 0 and r["full_pric"] is not None and r["pric"] > r["rate"] * r["full_pric"]
            )
        if not any(flags):
            continue
        for n, (r, v) in enumerate(zip(grp, flags)):
            if not (v or n == 0):
                continue
            ev = None
            if v:
                rate, full = r["rate"], r["full_pric"]
                ev = (
                    f"{ref(r)} 与主手术 {ref(main)}（单价 {py_price_text(main['pric'])} 元）同日同组（{r['group'].strip()}），"
                    f"次要手术应不高于全价 {py_price_text(full)} 元的 {qty(rate * 100)}%（{py_price_text(rate * full)} 元），"
                    f"实际单价 {py_price_text(r['pric'])} 元，按 {qty((1 - rate) * 100)}% 扣除；{line_fact(r)}"
                )
            # the pct mode: 1 - rate of the line's deductible (the part above the secondary's price)
            out.append(
                hit(r, "violating" if v else "related", claim_of("pct", r, carries=v, rate=1 - r["rate"]), "", ev)
            )
    return out


RULE_TYPE = RuleType(
    name="secondary_procedure",
    title="主次手术未折价",
    nature="超支付标准",
    mode="pct",
    doc=__doc__,
    doc_zh=DOC_ZH,
    evaluate=evaluate,
    params=(
        Param("group", "str", "surgery group: items with the same value form one group", required=True, per_item=True),
        Param(
            "rate",
            "number",
            "share of the full price a secondary operation may be billed at",
            default=Decimal("0.5"),
            check=_rate,
        ),
    ),
    dedupe_lines=False,  # one code may belong to several groups (national batch 2): judged in each
    query=f"""
        WITH s AS (
            SELECT m.*, coalesce(m.pric_uplmt_amt, {hilist_cap("m", "k")}) AS full_pric FROM {{m}} m
            {hilist_caps_join("m")}
            WHERE nullif(trim(m."group"), '') IS NOT NULL
            -- a line once per group (an item listed twice in one group must not be its own secondary)
            QUALIFY row_number() OVER (PARTITION BY m.rule_key, m.bkkp_sn, trim(m."group")) = 1),
        g AS (
            SELECT *, row_number() OVER w AS rn,
                   count(DISTINCT hilist_code) OVER (PARTITION BY rule_key, mdtrt_id, fee_date, "group") AS ncodes,
                   first_value({ITEM_REF}) OVER w AS main_ref, first_value(pric) OVER w AS main_pric
            FROM s
            WINDOW w AS (PARTITION BY rule_key, mdtrt_id, fee_date, "group" ORDER BY pric DESC, fee_ocur_time, bkkp_sn
                         ROWS BETWEEN UNBOUNDED PRECEDING AND UNBOUNDED FOLLOWING)),
        f AS (
            SELECT *, rn > 1 AND deductible > 0 AND full_pric IS NOT NULL AND pric > rate * full_pric AS v
            FROM g WHERE ncodes > 1),
        h AS (SELECT *, bool_or(v) OVER (PARTITION BY rule_key, mdtrt_id, fee_date, "group") AS any_v FROM f)
        SELECT rule_key, mdtrt_id AS finding_key, mdtrt_id, bkkp_sn,
               CASE WHEN v THEN 'violating' ELSE 'related' END AS role,
               {claim("pct", carries="v", rate="1 - rate")} AS claim,
               '' AS ev_head,
               CASE WHEN v THEN
                   {ITEM_REF} || ' 与主手术 ' || main_ref || '（单价 ' || {price_text("main_pric")} || ' 元）同日同组（'
                   || trim("group") || '），次要手术应不高于全价 ' || {price_text("full_pric")} || ' 元的 ' || qty(rate * 100)
                   || '%（' || {price_text("rate * full_pric")} || ' 元），实际单价 ' || {price_text("pric")} || ' 元，按 '
                   || qty((1 - rate) * 100) || '% 扣除；' || {LINE_FACT} END AS ev_line
        FROM h
        WHERE v OR (rn = 1 AND any_v)
    """,
)
