"""重复收费 duplicate_charge: a secondary item billed alongside the main item that includes it.

**What it flags.** For each pair (main code, secondary code, window) — given as rows of the
item table with columns `code` (the secondary item), `main_code` and `window` — a secondary
line of a visit when a main-code line of the same visit lies in the window:

| window | the main line is |
|---|---|
| `same_day` | on the same calendar date |
| `same_visit` | anywhere in the visit |
| `hours:N` | less than N hours away (either side) |
| `same_hour` | on the same date and in the same clock hour |

The secondary line is violating; every main line in its window is a related line. The
evidence names the main item by the line's `hilist_name`, else by the table's `main_name`
(主项名称 of the national batch). A pair may
name one code as both main and secondary (a registration billed twice a day): then the first
line (by time, then `bkkp_sn`) stands and every later copy in the window is the duplicate. The
main line counts even when it is self-paid: the service was charged once already. A secondary
line the fund did not pay for (class C, switched to self-pay) is not flagged. This also
covers unbundled packages and panels (分解收费): the package is the main item, its parts are
the secondary ones.

**Why it matters.** 急诊监护费 already includes 监护、床位、诊查、护理: billing the bed or the
consultation on the same day charges the fund twice for one service. National batch 7 lists
900 such pairs.

**Deduction.** `whole_line` on the secondary line.

**Example.**

```yaml
- id: R-DUP-001
  version: 1
  name: 急诊监护费含诊查费
  type: duplicate_charge
  items:
    rows:
      - {code: "001102000030000", main_code: "001103000010000", window: same_day}
```

gives `项目【急诊诊查费】(001102000030000) 已包含在 项目【急诊监护费】(001103000010000) 中（同日），主项 2026-03-02 08:00 已收费；2026-03-02 收费 1 次，金额 12.00 元`.
"""

#: the same documentation in Chinese (`medaudit rules explain` shows it first; keep the two in step)
DOC_ZH = """重复收费：已被主项目包含的从项目与主项目一起收费。

**查什么。** 对每一对（主项编码、从项编码、时间窗）——项目表中的一行，列 `code`（从项）、`main_code`（主项）和 `window`——当同一次就诊中有主项明细落在时间窗内时，从项明细命中：

| window | 主项明细 |
|---|---|
| `same_day` | 同一自然日 |
| `same_visit` | 同次就诊任何时间 |
| `hours:N` | 前后相差不到 N 小时 |
| `same_hour` | 同一天的同一个钟点 |

从项明细为违规项，时间窗内的每条主项明细为涉及项。证据中主项名称取明细的 `hilist_name`，没有时取项目表的 `main_name`（国家规则库的"主项名称"）。主项和从项可以是同一个编码（一天挂号两次）：此时第一条明细（按时间、再按 `bkkp_sn`）保留，时间窗内此后的每一条都是重复。主项即使自费也算（服务已经收过一次）。基金未支付的从项明细（丙类、转自费）不报。打包项目被拆开收费（分解收费）也用本类型：套餐为主项，其组成部分为从项。

**为什么。** 急诊监护费已包含监护、床位、诊查、护理：同日再收床位费或诊查费，基金为同一服务付了两次。国家第 7 批规则列了 900 对这样的项目。

**扣款。** `whole_line`：从项明细。
"""

import re

from .base import ITEM_REF, LINE_FACT, Param, RuleType, claim, claim_of

_WINDOW = re.compile(r"^(same_day|same_visit|same_hour|hours:[1-9]\d*)$")


def _check_window(v: str) -> str | None:
    return None if _WINDOW.match(v) else f"must be same_day, same_visit, same_hour or hours:N, got {v!r}"


# ---------------------------------------------------------------------------- in memory (pre-alert)
# The same check over the request's rows, for the pre-alert fast path: a transcription of the
# query above (tests/test_prealert_parity.py holds the two equal).
import datetime as dt
from .evidence import ZERO, Hit, item_ref, ref, line_fact


def _seconds(t: dt.datetime) -> int:
    return (
        int(t.replace(microsecond=0).timestamp())
        if t.tzinfo
        else int((t.replace(microsecond=0) - dt.datetime(1970, 1, 1)).total_seconds())
    )


WINDOW_CN = {"same_day": "同日", "same_visit": "同次就诊", "same_hour": "同一小时"}


def evaluate(ctx, ms: list[dict]) -> list[Hit]:
    by_code: dict[tuple, list[dict]] = {}
    for ln in ctx.lines:
        by_code.setdefault((ln["mdtrt_id"], ln["hilist_code"]), []).append(ln)
    sec: dict[tuple, tuple] = {}  # (rule_key, mdtrt, sn) -> (m, best (gap, main_sn, ev))
    related: set[tuple] = set()
    for s in ms:
        if not s["deductible"] > 0 or s["main_code"] is None or s["window"] is None:
            continue
        w = s["window"]
        for mn in by_code.get((s["mdtrt_id"], s["main_code"]), ()):
            if mn["bkkp_sn"] == s["bkkp_sn"]:
                continue
            if s["main_code"] == s["hilist_code"] and not (mn["fee_ocur_time"], mn["bkkp_sn"]) < (
                s["fee_ocur_time"],
                s["bkkp_sn"],
            ):
                continue
            gap = abs(_seconds(mn["fee_ocur_time"]) - _seconds(s["fee_ocur_time"]))
            if w == "same_day":
                ok = mn["fee_date"] == s["fee_date"]
            elif w == "same_visit":
                ok = True
            elif w == "same_hour":
                ok = mn["fee_ocur_time"].replace(minute=0, second=0, microsecond=0) == s["fee_ocur_time"].replace(
                    minute=0, second=0, microsecond=0
                )
            else:
                ok = gap < int(w.split(":")[1]) * 3600
            if not ok:
                continue
            span = WINDOW_CN.get(w) or (w.split(":")[1] + "小时内")
            ev = (
                f"{ref(s)} 已包含在 {item_ref(mn['list_type'], mn['hilist_name'] if mn['hilist_name'] is not None else s.get('main_name'), mn['hilist_code'])} 中（{span}），"
                f"主项 {mn['fee_ocur_time']:%Y-%m-%d %H:%M} 已收费；{line_fact(s)}"
            )
            k = (s["rule_key"], s["mdtrt_id"], s["bkkp_sn"])
            cand = (gap, mn["bkkp_sn"], ev)
            if k not in sec or cand[:2] < sec[k][1][:2]:
                sec[k] = (s, cand)
            related.add((s["rule_key"], s["mdtrt_id"], mn["bkkp_sn"]))
    out = [Hit(k[0], k[1], k[1], k[2], "violating", claim_of("whole_line", s), "", c[2]) for k, (s, c) in sec.items()]
    out += [Hit(rk, md, md, sn, "related", ZERO, "", None) for rk, md, sn in related]
    return out


RULE_TYPE = RuleType(
    name="duplicate_charge",
    title="重复收费",
    nature="重复收费",
    mode="whole_line",
    doc=__doc__,
    doc_zh=DOC_ZH,
    evaluate=evaluate,
    params=(
        Param("main_code", "str", "the code of the main item that includes this one", required=True, per_item=True),
        Param(
            "window",
            "str",
            "same_day, same_visit, same_hour or hours:N",
            default="same_day",
            per_item=True,
            check=_check_window,
        ),
        Param(
            "main_name",
            "str",
            "the main item's name (主项名称), shown in the evidence when the main line has no hilist_name",
            per_item=True,
        ),
    ),
    dedupe_lines=False,  # a secondary item may belong to several main items
    hash_as_written=True,  # the main lines, few, are the side hashed (3.2 -> 1.3 CPU s at 10M lines)
    query=f"""
        -- the lines of a main item: few (the included items, such as a bed day or nursing, are
        -- most lines: two thirds of them here), so the included lines are first kept to the
        -- visits and codes of a main line (a semi join hashing the few: hash_as_written), then
        -- paired with them
        WITH mains AS (
            SELECT mdtrt_id, hilist_code, bkkp_sn, fee_ocur_time, fee_date, list_type, hilist_name FROM {{lines}}
            WHERE hilist_code IN (SELECT main_code FROM {{p}})),
        s AS (SELECT * FROM {{m}} m WHERE deductible > 0
              AND EXISTS (SELECT 1 FROM mains mn WHERE mn.mdtrt_id = m.mdtrt_id AND mn.hilist_code = m.main_code)),
        pairs AS (
            SELECT s.*, mn.bkkp_sn AS main_sn, mn.fee_ocur_time AS main_time,
                   item_ref(mn.list_type, coalesce(mn.hilist_name, s.main_name), mn.hilist_code) AS main_ref,
                   abs(date_diff('second', mn.fee_ocur_time, s.fee_ocur_time)) AS gap_s
            FROM s JOIN mains mn
              ON mn.mdtrt_id = s.mdtrt_id AND mn.hilist_code = s.main_code AND mn.bkkp_sn <> s.bkkp_sn
             -- a pair of one code with itself: the first line stands, the later copies are duplicates
             AND (s.main_code <> s.hilist_code OR (mn.fee_ocur_time, mn.bkkp_sn) < (s.fee_ocur_time, s.bkkp_sn))
            WHERE CASE
                WHEN s.window = 'same_day' THEN mn.fee_date = s.fee_date
                WHEN s.window = 'same_visit' THEN TRUE
                WHEN s.window = 'same_hour' THEN date_trunc('hour', mn.fee_ocur_time) = date_trunc('hour', s.fee_ocur_time)
                ELSE abs(date_diff('second', mn.fee_ocur_time, s.fee_ocur_time))
                     < CAST(split_part(s.window, ':', 2) AS BIGINT) * 3600 END),
        sec AS (
            SELECT rule_key, mdtrt_id, bkkp_sn, {claim("whole_line", deductible="any_value(deductible)")} AS claim,
                   arg_min({ITEM_REF} || ' 已包含在 ' || main_ref || ' 中（'
                           || CASE WHEN "window" = 'same_day' THEN '同日'
                                   WHEN "window" = 'same_visit' THEN '同次就诊'
                                   WHEN "window" = 'same_hour' THEN '同一小时'
                                   ELSE split_part("window", ':', 2) || '小时内' END
                           || '），主项 ' || strftime(main_time, '%Y-%m-%d %H:%M') || ' 已收费；' || {LINE_FACT},
                           (gap_s, main_sn)) AS ev_line
            FROM pairs GROUP BY rule_key, mdtrt_id, bkkp_sn)
        SELECT rule_key, mdtrt_id AS finding_key, mdtrt_id, bkkp_sn, 'violating' AS role, claim,
               '' AS ev_head, ev_line
        FROM sec
        UNION ALL
        SELECT DISTINCT rule_key, mdtrt_id, mdtrt_id, main_sn, 'related', 0, '', NULL
        FROM pairs
    """,
)
