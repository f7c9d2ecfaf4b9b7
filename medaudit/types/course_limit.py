"""限支付疗程 course_limit: a drug (or treatment) paid for longer than its course allows.

**What it flags.** Within one visit, per group, the lines dated `max_days` or more calendar
days after the group's first use, i.e. day `max_days + 1` onwards when the first use is day 1
(14 days allowed from 2026-03-01: a line of 2026-03-15 is flagged, one of 2026-03-14 is not).
A group is all matched items sharing a `group` value (per item, e.g. the 药品通用名, so every
brand and package of one generic drug counts as one course); items without a `group` are a
group of their own code. The first use is the earliest fee date of a group line the fund paid
for: lines refunded in full and self-paid lines (deductible 0) do not start the course — the
limit is on the days the fund pays (限支付). Each line is judged by its own item's `max_days`.
Lines of the first day of the group are related lines. The course is counted per visit: a new
visit starts a new course.

**Why it matters.** The national batch 6 limits drugs to a payment course (注射用骨肽 14 天,
some drugs 365 天 a year): beyond it the fund does not pay, the patient does.

**Deduction.** `whole_line` on each line beyond the course.

**Stages.** All three: the course is counted from what was billed before, so an open stay can
be judged as far as it goes.

**Example.**

```yaml
- id: R-CRS-001
  version: 1
  name: 注射用骨肽限支付14天
  type: course_limit
  items:
    rows:
      - {code: "XM05BXG056B002010100486", group: 骨肽, max_days: 14}
      - {code: "XM05BXG056B002010200486", group: 骨肽, max_days: 14}
```

gives `药品【注射用骨肽】(XM05BXG056B002010100486) 限支付 14 天（骨肽），本次就诊首次使用 2026-03-01，此日为第 15 天；2026-03-15 收费 1 次，金额 25.00 元`.
"""

#: the same documentation in Chinese (`medaudit rules explain` shows it first; keep the two in step)
DOC_ZH = """限支付疗程：药品（或治疗）支付天数超过疗程限制。

**查什么。** 同一次就诊中，按组计算：距本组首次使用 `max_days` 个或更多自然日的明细命中，即首次使用记为第 1 天时，从第 `max_days + 1` 天起（2026-03-01 起限 14 天：2026-03-15 的明细命中，2026-03-14 的不命中）。共享同一个 `group` 值（按项目给出，例如药品通用名，同一通用名的各厂家、各规格算一个疗程）的匹配项目为一组；没有 `group` 的项目以自身编码为一组。首次使用取基金支付过的本组明细中最早的收费日期：全额退费和自费（可扣金额为 0）的明细不开始计算疗程——限制的是基金支付的天数（限支付）。每条明细按其自身项目的 `max_days` 判断。本组第一天的明细为涉及项。疗程按就诊计算，新的一次就诊重新计算。

**为什么。** 国家第 6 批规则对药品限定支付疗程（注射用骨肽 14 天、部分药品每年 365 天），超出部分基金不支付，由患者负担。

**扣款。** `whole_line`：超出疗程的每条明细。

**环节。** 三个环节都适用：疗程从此前已收费的明细算起，在院期间也能按已有收费判断。
"""

from .base import ITEM_REF, LINE_FACT, Param, RuleType, claim, claim_of


# ---------------------------------------------------------------------------- in memory (pre-alert)
# The same check over the request's rows, for the pre-alert fast path: a transcription of the
# query above (tests/test_prealert_parity.py holds the two equal).
import datetime as dt
from typing import Any
from .evidence import Hit, ref, line_fact, hit


def evaluate(ctx, ms: list[dict]) -> list[Hit]:
    s = []
    for m in ms:
        if m["deductible"] > 0:
            grp = (m["group"] or "").strip() if m["group"] is not None else ""
            s.append({**m, "g": grp or m["hilist_code"]})

    def key(r):
        return (r["rule_key"], r["mdtrt_id"], r["g"])

    d0: dict[Any, dt.date] = {}
    for r in s:
        d0[key(r)] = min(d0.get(key(r), r["fee_date"]), r["fee_date"])
    any_over: dict[Any, bool] = {}
    for r in s:
        if r["max_days"] is not None and (r["fee_date"] - d0[key(r)]).days >= r["max_days"]:
            any_over[key(r)] = True
    out = []
    for r in s:
        first = d0[key(r)]
        day_no = (r["fee_date"] - first).days + 1
        if not any_over.get(key(r)):
            continue
        over = r["max_days"] is not None and day_no > r["max_days"]
        if not (over or r["fee_date"] == first):
            continue
        ev = None
        if over:
            grp = (r["group"] or "").strip() if r["group"] is not None else ""
            ev = (
                f"{ref(r)} 限支付 {r['max_days']} 天"
                + (f"（{grp}）" if grp else "")
                + f"，本次就诊首次使用 {first:%Y-%m-%d}，此日为第 {day_no} 天；{line_fact(r)}"
            )
        out.append(hit(r, "violating" if over else "related", claim_of("whole_line", r, carries=over), "", ev))
    return out


RULE_TYPE = RuleType(
    name="course_limit",
    title="限支付疗程",
    nature="超支付标准",
    mode="whole_line",
    doc=__doc__,
    doc_zh=DOC_ZH,
    evaluate=evaluate,
    params=(
        Param(
            "max_days",
            "int",
            "days of the payment course, counted from the first paid use",
            required=True,
            per_item=True,
            minimum=1,
        ),
        Param(
            "group",
            "str",
            "items with the same group form one course (e.g. the 药品通用名); empty: the code",
            per_item=True,
        ),
    ),
    query=f"""
        WITH s AS (SELECT *, coalesce(nullif(trim("group"), ''), hilist_code) AS g FROM {{m}} WHERE deductible > 0),
        x AS (
            SELECT *, min(fee_date) OVER (PARTITION BY rule_key, mdtrt_id, g) AS d0 FROM s),
        y AS (
            SELECT *, date_diff('day', d0, fee_date) + 1 AS day_no,
                   bool_or(date_diff('day', d0, fee_date) >= max_days) OVER (PARTITION BY rule_key, mdtrt_id, g) AS any_over
            FROM x)
        SELECT rule_key, mdtrt_id AS finding_key, mdtrt_id, bkkp_sn,
               CASE WHEN day_no > max_days THEN 'violating' ELSE 'related' END AS role,
               {claim("whole_line", carries="day_no > max_days")} AS claim,
               '' AS ev_head,
               CASE WHEN day_no > max_days THEN
                   {ITEM_REF} || ' 限支付 ' || max_days || ' 天'
                   || CASE WHEN nullif(trim("group"), '') IS NOT NULL THEN '（' || trim("group") || '）' ELSE '' END
                   || '，本次就诊首次使用 ' || strftime(d0, '%Y-%m-%d') || '，此日为第 ' || day_no || ' 天；' || {LINE_FACT}
               END AS ev_line
        FROM y
        WHERE any_over AND (day_no > max_days OR fee_date = d0)
    """,
)
