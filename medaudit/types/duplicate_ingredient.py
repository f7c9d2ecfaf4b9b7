"""重复用药 duplicate_ingredient: two drugs of one ingredient group on the same day.

**What it flags.** Two or more different codes of one group on the same calendar day of one
visit: the lines of every code but the dearest one. The group key is the first `key_len`
characters of the code (default 10: for western drugs, `X` + the ATC-based generic part of the
23-character national code, so different makers, forms and packages of one generic drug fall
together). Without items the rule looks at western drugs only (`list_type` 101 and codes
starting with `X`); with items, at the matched codes. "Dearest" is the code with the largest
net amount on that day (ties: the lowest code is kept); its lines are related lines. Amounts
are net of refunds, and a code refunded in full that day does not count. Lines the fund did not
pay (deductible 0) are not flagged, though their code still counts as used.

**Why it matters.** Two brands of one drug on one day double the dose (or bill it twice); the
fund pays for one. Combination products and dose changes can explain some cases, so they go to
manual review.

**Deduction.** `whole_line` on the cheaper code's lines. **Default severity: suspect** (the
amount at risk is shown; nothing is deducted until a reviewer confirms).

**Stages.** All three: a day already holding two codes of a group stays a duplicate whatever is
billed later.

**Example.**

```yaml
- id: R-ING-001
  version: 1
  name: 同通用名药品同日重复使用
  type: duplicate_ingredient
  params: {key_len: 10}
```

gives `药品【阿莫西林胶囊(乙厂)】(XJ01CAA040E001010100001) 与 药品【阿莫西林胶囊(甲厂)】(XJ01CAA040E001010200002) 属同一成分组（XJ01CAA040），2026-03-02 同日使用，保留当日金额较高者（30.00 元）；2026-03-02 收费 1 次，金额 12.00 元`.
"""

#: the same documentation in Chinese (`medaudit rules explain` shows it first; keep the two in step)
DOC_ZH = """重复用药：同一天使用同一成分组的两种药品。

**查什么。** 同一次就诊的同一自然日中，同一组有两个或以上不同编码时，除最贵的编码外，其余编码的明细命中。组由编码前 `key_len` 位决定（默认 10：西药为 `X` 加国家 23 位编码中基于 ATC 的通用名部分，不同厂家、剂型、包装的同一通用名药品归为一组）。规则未列项目时只查西药（`list_type` 101 且编码以 `X` 开头）；列了项目则查匹配的编码。"最贵"指当天净金额最大的编码（并列时保留编码最小的），其明细为涉及项。金额为退费冲减后的净额，当天全额退费的编码不算。基金未支付的明细（可扣金额为 0）不报，但其编码仍算已使用。

**为什么。** 同一药品的两个品牌同一天使用，剂量翻倍（或重复收费），基金只应支付一份。复方制剂和调整剂量可以解释部分情况，所以交人工复核。

**扣款。** `whole_line`：较便宜编码的明细。**默认严重程度 `suspect`**（显示涉及金额，复核确认前不扣款）。

**环节。** 三个环节都适用：某天已有同组两个编码，之后再收什么都仍是重复。
"""

from .base import ITEM_REF, LINE_FACT, Param, RuleType, claim, claim_of


# ---------------------------------------------------------------------------- in memory (pre-alert)
# The same check over the request's rows, for the pre-alert fast path: a transcription of the
# query above (tests/test_prealert_parity.py holds the two equal).
from .evidence import ZERO, Hit, yuan, ref, line_fact, hit


def evaluate(ctx, ms: list[dict]) -> list[Hit]:
    s = []
    for m in ms:
        if m["_match_all"] and not (m["list_type"] == "101" and m["hilist_code"].startswith("X")):
            continue
        kl = m["key_len"]
        s.append({**m, "gkey": m["hilist_code"][:kl] if kl is not None else None})
    codes: dict[tuple, dict] = {}
    for r in s:
        k = (r["rule_key"], r["mdtrt_id"], r["fee_date"], r["gkey"], r["hilist_code"])
        c = codes.setdefault(k, {"amt": ZERO, "ref": None, "sn": None})
        c["amt"] += r["amt"]
        if c["sn"] is None or r["bkkp_sn"] < c["sn"]:
            c["sn"], c["ref"] = r["bkkp_sn"], ref(r)
    parts: dict[tuple, list] = {}
    for k, c in codes.items():
        parts.setdefault(k[:4], []).append((k[4], c))
    rank: dict[tuple, tuple] = {}
    for pk, lst in parts.items():
        if len(lst) < 2:
            continue
        lst.sort(key=lambda x: (-x[1]["amt"], x[0]))
        kept = lst[0][1]
        for n, (code, _c) in enumerate(lst, start=1):
            rank[(*pk, code)] = (n, kept["ref"], kept["amt"])
    x = [
        (r, rank[(r["rule_key"], r["mdtrt_id"], r["fee_date"], r["gkey"], r["hilist_code"])])
        for r in s
        if (r["rule_key"], r["mdtrt_id"], r["fee_date"], r["gkey"], r["hilist_code"]) in rank
    ]
    any_v: set = set()
    for r, (rk, _ref, _amt) in x:
        if rk > 1 and r["deductible"] > 0:
            any_v.add((r["rule_key"], r["mdtrt_id"], r["fee_date"], r["gkey"]))
    out = []
    for r, (rk, kept_ref, kept_amt) in x:
        if (r["rule_key"], r["mdtrt_id"], r["fee_date"], r["gkey"]) not in any_v:
            continue
        v = rk > 1 and r["deductible"] > 0
        ev = (
            (
                f"{ref(r)} 与 {kept_ref} 属同一成分组（{r['gkey']}），{r['fee_date']:%Y-%m-%d} 同日使用，"
                f"保留当日金额较高者（{yuan(kept_amt)} 元）；{line_fact(r)}"
            )
            if v
            else None
        )
        out.append(hit(r, "violating" if v else "related", claim_of("whole_line", r, carries=v), "", ev))
    return out


RULE_TYPE = RuleType(
    name="duplicate_ingredient",
    title="重复用药",
    nature="不合理诊疗",
    mode="whole_line",
    doc=__doc__,
    doc_zh=DOC_ZH,
    evaluate=evaluate,
    items="optional",
    default_severity="suspect",
    params=(Param("key_len", "int", "code characters that make the group key", default=10, minimum=1),),
    query=f"""
        WITH s AS (
            SELECT *, left(hilist_code, key_len) AS gkey FROM {{m}}
            WHERE rule_key NOT IN (SELECT rule_key FROM {{p}} WHERE match_all)
               OR (list_type = '101' AND starts_with(hilist_code, 'X'))),
        -- groups (rule, visit, day, ingredient) with two codes or more, found by grouping the
        -- lines: the codes' totals, names and ranks are made for their lines only. One pass
        -- (min and max differ: two codes, where count(DISTINCT) grouped twice), grouped by the
        -- hash of (visit, day, ingredient), one number instead of three texts; groups sharing a
        -- hash give a candidate too many, which ``ncodes`` below drops.
        -- an ingredient group can hold two codes on a day only if its lines hold two codes at
        -- all: only those groups' lines are grouped (3% of the western-drug lines here, where
        -- 16 codes make one such group; in a real catalogue, the generic names with several
        -- makers or forms)
        multi AS (
            SELECT rule_key, gkey FROM (SELECT DISTINCT rule_key, gkey, hilist_code FROM s)
            GROUP BY rule_key, gkey HAVING count(*) > 1),
        cand AS (
            SELECT s.rule_key, hash(s.mdtrt_id, s.fee_date, s.gkey) AS g FROM s JOIN multi USING (rule_key, gkey)
            GROUP BY s.rule_key, g HAVING min(s.hilist_code) <> max(s.hilist_code)),
        codes AS (
            SELECT s.rule_key, s.mdtrt_id, s.fee_date, s.gkey, s.hilist_code, sum(s.amt) AS day_amt,
                   arg_min({ITEM_REF}, s.bkkp_sn) AS ref
            FROM s JOIN cand c
              ON c.rule_key = s.rule_key AND c.g = hash(s.mdtrt_id, s.fee_date, s.gkey)
            GROUP BY ALL),
        ranked AS (
            SELECT k.*, row_number() OVER w AS rk, count(*) OVER w AS ncodes,
                   first_value(k.ref) OVER w AS kept_ref, first_value(k.day_amt) OVER w AS kept_amt
            FROM codes k
            WINDOW w AS (PARTITION BY k.rule_key, k.mdtrt_id, k.fee_date, k.gkey ORDER BY k.day_amt DESC, k.hilist_code
                         ROWS BETWEEN UNBOUNDED PRECEDING AND UNBOUNDED FOLLOWING)),
        x AS (
            SELECT s.*, r.rk, r.kept_ref, r.kept_amt,
                   bool_or(r.rk > 1 AND s.deductible > 0) OVER (PARTITION BY s.rule_key, s.mdtrt_id, s.fee_date, s.gkey) AS any_v
            FROM s JOIN ranked r USING (rule_key, mdtrt_id, fee_date, gkey, hilist_code)
            WHERE r.ncodes > 1)
        SELECT rule_key, mdtrt_id AS finding_key, mdtrt_id, bkkp_sn,
               CASE WHEN rk > 1 AND deductible > 0 THEN 'violating' ELSE 'related' END AS role,
               {claim("whole_line", carries="rk > 1 AND deductible > 0")} AS claim,
               '' AS ev_head,
               CASE WHEN rk > 1 AND deductible > 0 THEN
                   {ITEM_REF} || ' 与 ' || kept_ref || ' 属同一成分组（' || gkey || '），' || strftime(fee_date, '%Y-%m-%d')
                   || ' 同日使用，保留当日金额较高者（' || yuan(kept_amt) || ' 元）；' || {LINE_FACT} END AS ev_line
        FROM x
        WHERE any_v
    """,
)
