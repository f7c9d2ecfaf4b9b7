"""进销存不符 inventory_mismatch: more billed than the institution ever had in stock.

**What it flags.** Per institution, code and calendar month (of the fee date), the net
quantity billed on screened lines above what the institution had: `purchase_cnt` plus
`opening_stock_cnt` of the `purchases` table for that institution, code and `period`
(several rows are added up; an empty opening stock is 0). Exactly equal is not flagged.

Edge decisions:

- Which lines count: without items, drug and consumable lines (`list_type` 101, 102, 301;
  service items are not stocked); with items, only the matched lines. Every screened line
  uses up stock, self-paid ones included (they hold excess units without a claim).
- An institution is judged only for the months it reported in `purchases` (any code) and
  only for the codes it reports at all (in any month): with no purchase data there is nothing
  to compare, and a category the institution does not track (herbal slices, say) is not
  judged. A tracked code billed in a reported month without a row for that month counts as
  0 purchased and 0 in stock (有销无进).
- A finding needs a claim: when the excess lies only on lines the fund did not pay for
  (class C, self-paid), it cost the fund nothing and is not reported.
- The excess is taken from the month's latest lines first (by `fee_ocur_time`, then
  `bkkp_sn`), priced at the month's average billed price of the code (net amount / net
  quantity): the excess units are not attributable to one purchase price. Lines holding excess
  units are violating when they claim money, related otherwise; the month's other lines are
  not listed (a drug may have thousands).
- Only screened lines count: at `post_hoc`, the settled lines of every batch loaded so far.

The finding is about the institution, code and month (no person, no single visit).

**Why it matters.** An institution cannot dispense more than it bought and held: the surplus
was billed without being given (虚记、串换药品耗材), the classic result of a 进销存 check
in on-site inspections (飞行检查).

**Deduction.** `excess_qty` at the average billed price: excess units x average price x the
line's fund share, never more than the line's deductible. Default severity `suspect`.

**Example.**

```yaml
- id: R-INV-001
  version: 1
  name: 药品耗材销售数量超过购进与库存
  type: inventory_mismatch
```

gives `机构 H001 2026-03 药品【阿莫西林胶囊】(XJ01CAA040A001010100001) 收费数量 120，购进 80 + 期初库存 20
= 100，超出 20，按本月平均收费单价 1.50 元计；2026-03-31 收费 30 次，金额 45.00 元，其中 20 超出`.
"""

#: the same documentation in Chinese (`medaudit rules explain` shows it first; keep the two in step)
DOC_ZH = """进销存不符：收费数量超过机构实际拥有的库存。

**查什么。** 按机构、编码和自然月（按收费日期），被审核明细的净收费数量超过该机构在 `purchases` 表中对应机构、编码和 `period` 的 `purchase_cnt` 加 `opening_stock_cnt`（多行相加；期初库存为空按 0）。恰好相等不报。

边界规定：
- 计入的明细：规则未列项目时为药品和耗材明细（`list_type` 101、102、301；服务项目没有库存）；列了项目则只计匹配的明细。每条被审核明细都消耗库存，自费的也算（它们承担超出数量但不主张扣款）。
- 只判断机构在 `purchases` 中报送过（任一编码）的月份，以及它报送过（任一月份）的编码：没有进货数据就无从比较，机构不管理的品类（如中药饮片）不判断。已报送的编码在已报送的月份有收费但该月没有进货行，按进货 0、库存 0 计（有销无进）。
- 必须有主张金额：超出部分全落在基金未支付的明细（丙类、自费）上，基金没有损失，不报。
- 超出数量从当月最晚的明细开始分摊（按 `fee_ocur_time`，再按 `bkkp_sn`），按该编码当月平均收费单价（净金额 / 净数量）计价：超出的数量无法对应到某一次进货价格。承担超出数量且主张金额的明细为违规项，否则为涉及项；当月其他明细不列出（一种药可能有上千条）。
- 只计被审核的明细：事后环节即已加载的所有批次中已结算的明细。

发现的问题针对机构、编码和月份（不涉及个人，也不对应单次就诊）。

**为什么。** 机构不可能发出多于其购进和库存的数量：多出的部分是没有提供却收了费（虚记、串换药品耗材），这是飞行检查中进销存核查的典型结果。

**扣款。** `excess_qty`，按平均收费单价：超出数量 × 平均单价 × 基金支付比例，不超过该明细可扣金额。默认严重程度 `suspect`。
"""

from .base import LINE_FACT, LineLookup, Reach, RuleType, excess_allocation

#: the matched lines the type counts: drugs, herbs and consumables, or any item a rule lists
_BILLED = """SELECT m.*, strftime(fee_date, '%Y-%m') AS month FROM {m} m
             WHERE list_type IN ('101', '102', '301') OR rule_key IN (SELECT rule_key FROM {p} WHERE NOT match_all)"""

#: the only lines the type can count or flag: those of the (institution, code)s the purchases
#: track (a prefilter for a screen in parts' files, see ``RuleType.line_inputs``)
TRACKED_LINES = """
    SELECT * FROM {lines} l
    WHERE EXISTS (SELECT 1 FROM {purchases} k WHERE k.fixmedins_code = l.fixmedins_code AND k.hilist_code = l.hilist_code)
"""

#: the (institution, month)s an institution reported (any code), and what it had of each code in
#: each month: the type's query and the look-up of a screen in parts (LOOKUP) both judge by these
REPORTED = "SELECT DISTINCT fixmedins_code, period FROM {purchases}"
STOCK = """SELECT fixmedins_code, hilist_code, period, sum(purchase_cnt) AS bought,
                  sum(coalesce(opening_stock_cnt, 0)) AS opening
           FROM {purchases} GROUP BY ALL"""

#: a screen in parts: per part, the tracked lines' net units by institution, code and month; then
#: the groups billed over what the institution had (every line of the group counted: a rule
#: counts some of them, never more, and every screened line has positive net units), whose lines
#: alone the type reads (52.4M lines: 41% of them tracked, 27,224 or 0.05% in such groups)
LOOKUP = LineLookup(
    sums=f"""
        SELECT fixmedins_code, hilist_code, strftime(fee_date, '%Y-%m') AS month, sum(cnt) AS cnt
        FROM ({TRACKED_LINES}) l GROUP BY ALL
    """,
    keys=f"""
        SELECT s.fixmedins_code, s.hilist_code, s.month
        FROM (SELECT fixmedins_code, hilist_code, month, sum(cnt) AS cnt FROM {{sums}} GROUP BY ALL) s
        JOIN ({REPORTED}) rp ON rp.fixmedins_code = s.fixmedins_code AND rp.period = s.month
        LEFT JOIN ({STOCK}) k
          ON k.fixmedins_code = s.fixmedins_code AND k.hilist_code = s.hilist_code AND k.period = s.month
        WHERE s.cnt > coalesce(k.bought, 0) + coalesce(k.opening, 0)
    """,
    match={
        "fixmedins_code": "fixmedins_code",
        "hilist_code": "hilist_code",
        "month": "strftime(fee_ocur_time, '%Y-%m')",
    },
)

RULE_TYPE = RuleType(
    name="inventory_mismatch",
    title="进销存不符",
    nature="虚构服务",
    mode="excess_qty",
    doc=__doc__,
    doc_zh=DOC_ZH,
    items="optional",
    default_severity="suspect",
    stages=("post_hoc",),
    # every line of the institution's month against its purchases
    reach=lambda rule: Reach(scope="month"),
    line_inputs={"lines": TRACKED_LINES},
    line_lookup=LOOKUP,
    query=f"""
        WITH reported AS ({REPORTED}),
        tracked AS (SELECT DISTINCT fixmedins_code, hilist_code FROM {{purchases}}),
        stock AS ({STOCK}),
        -- the (rule, institution, code, month) groups billed over stock, found by grouping: the
        -- windows below run over their lines only (the stock figures are the group's own). The
        -- matched lines are read twice rather than kept (a copy of them all cost more).
        cand AS (
            SELECT b.rule_key, b.fixmedins_code, b.hilist_code, b.month FROM ({_BILLED}) b
            JOIN reported rp ON rp.fixmedins_code = b.fixmedins_code AND rp.period = b.month
            JOIN tracked tk ON tk.fixmedins_code = b.fixmedins_code AND tk.hilist_code = b.hilist_code
            LEFT JOIN stock s ON s.fixmedins_code = b.fixmedins_code AND s.hilist_code = b.hilist_code
                             AND s.period = b.month
            GROUP BY b.rule_key, b.fixmedins_code, b.hilist_code, b.month
            HAVING sum(b.cnt) > min(coalesce(s.bought, 0) + coalesce(s.opening, 0))),
        g AS (
            SELECT b.*, coalesce(s.bought, 0) AS bought, coalesce(s.opening, 0) AS opening,
                   s.hilist_code IS NOT NULL AS has_row,
                   sum(b.cnt) OVER w AS billed, sum(b.amt) OVER w AS billed_amt,
                   min(b.hilist_name) OVER w AS grp_name
            FROM ({_BILLED}) b
            JOIN cand c ON c.rule_key = b.rule_key AND c.fixmedins_code = b.fixmedins_code
                       AND c.hilist_code = b.hilist_code AND c.month = b.month
            LEFT JOIN stock s ON s.fixmedins_code = b.fixmedins_code AND s.hilist_code = b.hilist_code
                             AND s.period = b.month
            WINDOW w AS (PARTITION BY b.rule_key, b.fixmedins_code, b.hilist_code, b.month)),
        over AS (
            SELECT * REPLACE (xdiv(billed_amt, billed) AS pric), billed - (bought + opening) AS excess
            FROM g WHERE billed > bought + opening),
        alloc AS (
            SELECT *, max(claim) OVER (PARTITION BY rule_key, fixmedins_code, hilist_code, month) AS top_claim
            FROM ({excess_allocation("over", "rule_key, fixmedins_code, hilist_code, month")}))
        SELECT rule_key, fixmedins_code || '|' || hilist_code || '|' || month AS finding_key,
               NULL AS mdtrt_id, bkkp_sn,
               CASE WHEN claim > 0 THEN 'violating' ELSE 'related' END AS role, claim,
               '机构 ' || fixmedins_code || ' ' || month || ' '
                   || item_ref(list_type, coalesce(grp_name, item_name), hilist_code)
                   || ' 收费数量 ' || qty(billed) || '，'
                   || CASE WHEN has_row THEN '购进 ' || qty(bought) || ' + 期初库存 ' || qty(opening) || ' = ' || qty(bought + opening)
                           ELSE '进销存数据中本月无该品种购进及库存记录（按 0 计）' END
                   || '，超出 ' || qty(excess) || '，按本月平均收费单价 ' || yuan(pric) || ' 元计' AS ev_head,
               {LINE_FACT} || '，其中 ' || qty(excess_units) || ' 超出' AS ev_line,
               fixmedins_code, month AS period, excess_units
        FROM alloc WHERE excess_units > 0 AND top_claim > 0
    """,
)
