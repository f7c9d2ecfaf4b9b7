"""One in-memory evaluator per rule type that runs at ``pre_alert``: the type's SQL, line by line.

Each evaluator is a transcription of its type's query (:mod:`medaudit.types`), which stays the
reference: it reads the matched rows (a line, the rule's key and the item's resolved
parameters — what ``{m}`` holds), the visit's lines, diagnoses and the person's death date,
and returns hit rows (:class:`medaudit.prealert.alerts.Hit`: ``rule_key, finding_key, mdtrt_id,
bkkp_sn, role, claim, ev_head, ev_line``) with the same values the query gives: money in :class:`decimal.Decimal`, with the
SQL macros' rounding (:func:`xdiv` truncates to 12 places after rounding its operands to 8, as
the ``xdiv`` macro does; ``yuan`` rounds half away from zero). ``tests/test_prealert_parity.py``
runs both paths (and batch screening) over the same visits and requires equal answers.
"""

from __future__ import annotations

import datetime as dt
from decimal import ROUND_CEILING, ROUND_DOWN, ROUND_HALF_UP, Context, Decimal
from typing import Any, Callable

from ..alerts import Hit

ZERO = Decimal(0)
Q4 = Decimal("0.0001")
Q8 = Decimal("0.00000001")
Q12 = Decimal("0.000000000001")
#: wide enough for any DECIMAL(38, x) operand: no rounding before the explicit ones
_WIDE = Context(prec=80, rounding=ROUND_HALF_UP)


# ---------------------------------------------------------------------------- the SQL macros


def xdiv(a: Decimal, b: Decimal) -> Decimal | None:
    """``xdiv(a, b)``: operands rounded to 8 places, quotient truncated to 12 (None when b is 0)."""
    a8 = _WIDE.quantize(a, Q8)
    b8 = _WIDE.quantize(b, Q8)
    if b8 == 0:
        return None
    return _WIDE.divide(a8, b8).quantize(Q12, rounding=ROUND_DOWN, context=_WIDE)


def yuan(x: Decimal) -> str:
    return str(Decimal(x).quantize(Decimal("0.01"), rounding=ROUND_HALF_UP))


def qty(x: Any) -> str:
    s = str(Decimal(x).quantize(Q4, rounding=ROUND_HALF_UP))
    if "." in s:
        s = s.rstrip("0").rstrip(".")
    return s


def price_text(x: Decimal) -> str:
    return yuan(x) if x == x.quantize(Decimal("0.01"), rounding=ROUND_HALF_UP) else qty(x)


def item_ref(list_type: str | None, name: str | None, code: str) -> str:
    kind = "药品" if list_type in ("101", "102") else "耗材" if list_type == "301" else "项目"
    return f"{kind}【{name or ''}】({code})"


def ref(m: dict) -> str:
    """``ITEM_REF``: the line's name, else the item's."""
    name = m["hilist_name"] if m["hilist_name"] is not None else m.get("item_name")
    return item_ref(m["list_type"], name, m["hilist_code"])


def line_fact(m: dict) -> str:
    return f"{m['fee_date']:%Y-%m-%d} 收费 {qty(m['cnt'])} 次，金额 {yuan(m['amt'])} 元"


GENDER_CN = {"1": "男", "2": "女", "0": "未知"}
INSUTYPE_CN = {"310": "职工基本医疗保险", "390": "城乡居民基本医疗保险", "340": "离休人员医疗保障", "410": "工伤保险",
               "510": "生育保险"}
MED_TYPE_CN = {"11": "普通门诊", "12": "门诊挂号", "13": "急诊", "14": "门诊慢特病", "21": "普通住院", "22": "外伤住院",
               "24": "急诊转住院", "28": "日间手术", "41": "定点药店购药", "51": "生育门诊", "52": "生育住院"}
LEVEL_CN = {3: "三级", 2: "二级", 1: "一级"}


def gender_cn(g):
    return GENDER_CN.get(g, "未说明")


def insutype_cn(t):
    return INSUTYPE_CN.get(t, "其他")


def med_type_cn(t):
    return MED_TYPE_CN.get(t) or ("住院" if str(t).startswith("2") else "门诊")


def level_cn(n):
    return LEVEL_CN.get(n, "未定级")


def excess_allocation(rows: list[dict], key: Callable[[dict], Any]) -> None:
    """:func:`medaudit.types.base.excess_allocation`: sets ``excess_units`` and ``claim`` on each
    row (rows carry ``excess``, the group's excess units), latest lines first."""
    groups: dict[Any, list[dict]] = {}
    for r in rows:
        groups.setdefault(key(r), []).append(r)
    for grp in groups.values():
        grp.sort(key=lambda r: (r["fee_ocur_time"], r["bkkp_sn"]), reverse=True)
        cum = ZERO
        for r in grp:
            cum += r["cnt"]
            units = max(min(r["cnt"], r["excess"] - (cum - r["cnt"])), ZERO)
            r["excess_units"] = units
            if units <= 0:
                r["claim"] = ZERO
            elif r["deductible"] == r["amt"]:
                r["claim"] = min(units * r["pric"], r["deductible"])
            else:
                r["claim"] = min(xdiv(units * r["pric"] * r["deductible"], r["amt"]), r["deductible"])


def _hit(m: dict, role: str, claim, ev_head: str | None, ev_line: str | None, finding_key: str | None = None):
    return Hit(m["rule_key"], finding_key or m["mdtrt_id"], m["mdtrt_id"], m["bkkp_sn"], role, claim, ev_head, ev_line)


# ---------------------------------------------------------------------------- scope restrictions


def restrict_gender(ctx, ms: list[dict]) -> list[Hit]:
    out = []
    for m in ms:
        if m["gend"] in ("1", "2") and m["gender"] is not None and m["gend"] != m["gender"] and m["deductible"] > 0:
            out.append(_hit(m, "violating", m["deductible"], "患者性别为" + gender_cn(m["gend"]),
                            f"{ref(m)} 限{gender_cn(m['gender'])}性使用，{line_fact(m)}"))
    return out


def restrict_age(ctx, ms: list[dict]) -> list[Hit]:
    out = []
    for m in ms:
        g, ay, ad = m["group"], m["age_years"], m["age_days"]
        lo, hi = m["min_age"], m["max_age"]
        if ay is None:
            continue
        if g == "新生儿":
            outside = m["neonate_days"] is not None and ad >= m["neonate_days"]
            allowed = f"新生儿（出生{m['neonate_days']}天内）"
        elif g == "婴幼儿":
            outside = m["infant_years"] is not None and ay >= m["infant_years"]
            allowed = f"婴幼儿（{m['infant_years']}岁以下）"
        elif g == "儿童":
            outside = m["child_years"] is not None and ay >= m["child_years"]
            allowed = f"儿童（{m['child_years']}岁以下）"
        else:
            outside = (lo is not None and ay < lo) or (hi is not None and ay > hi)
            allowed = (f"{lo}至{hi}岁" if lo is not None and hi is not None else f"{lo}岁及以上" if lo is not None
                       else f"{hi}岁及以下")
        if outside and m["deductible"] > 0:
            age = f"{ad} 天" if ay < 1 else f"{ay} 岁"
            out.append(_hit(m, "violating", m["deductible"], f"患者出生日期 {m['brdy']:%Y-%m-%d}",
                            f"{ref(m)} 限{allowed}使用，收费时患者 {age}；{line_fact(m)}"))
    return out


def restrict_insutype(ctx, ms: list[dict]) -> list[Hit]:
    out = []
    for m in ms:
        allowed, t = m["allowed"], m["insutype"]
        if allowed is None or t is None or t in allowed or not m["deductible"] > 0:
            continue
        names = "、".join(f"{x}（{insutype_cn(x)}）" for x in allowed)
        out.append(_hit(m, "violating", m["deductible"], f"患者险种为 {t}（{insutype_cn(t)}）",
                        f"{ref(m)} 限 {names} 支付，{line_fact(m)}"))
    return out


def restrict_visit_type(ctx, ms: list[dict]) -> list[Hit]:
    out = []
    for m in ms:
        if m["allowed"] is None or m["med_type"] is None or not m["deductible"] > 0:
            continue
        extra = m["med_types"]
        if m["inpatient"] == (m["allowed"] == "inpatient") or (extra is not None and m["med_type"] in extra):
            continue
        also = f"（另可用于 {'、'.join(extra)}）" if extra is not None else ""
        where = "住院" if m["allowed"] == "inpatient" else "门诊"
        out.append(_hit(m, "violating", m["deductible"], f"就诊类型为 {m['med_type']}（{med_type_cn(m['med_type'])}）",
                        f"{ref(m)} 限{where}使用{also}，{line_fact(m)}"))
    return out


def restrict_hosp_level(ctx, ms: list[dict]) -> list[Hit]:
    out = []
    for m in ms:
        if m["min_level"] is None or not m["inst_level"] < m["min_level"] or not m["deductible"] > 0:
            continue
        out.append(_hit(m, "violating", m["deductible"], f"机构等级为{level_cn(m['inst_level'])}（hosp_lv {m['hosp_lv'] or ''}）",
                        f"{ref(m)} 限{level_cn(m['min_level'])}及以上医疗机构使用，{line_fact(m)}"))
    return out


def restrict_indication(ctx, ms: list[dict]) -> list[Hit]:
    out = []
    codes = [c for c in ctx.diags if c is not None]
    shown = "、".join(sorted(set(codes))) or "无"
    upper = [c.upper() for c in codes]
    for m in ms:
        if not m["deductible"] > 0 or m["diag_prefixes"] is None:
            continue
        if any(c.startswith(p.upper()) for p in m["diag_prefixes"] for c in upper):
            continue
        out.append(_hit(m, "violating", m["deductible"], "本次就诊诊断：" + shown,
                        f"{ref(m)} 限诊断 {'、'.join(m['diag_prefixes'])} 开头的患者使用，{line_fact(m)}"))
    return out


# ---------------------------------------------------------------------------- the visit so far


def after_death(ctx, ms: list[dict]) -> list[Hit]:
    out = []
    for m in ms:
        d = ctx.deaths.get(m["psn_no"])
        if d is not None and m["fee_date"] > d and m["deductible"] > 0:
            out.append(_hit(m, "violating", m["deductible"], f"参保人 {d:%Y-%m-%d} 死亡", f"{ref(m)} {line_fact(m)}"))
    return out


def frequency_limit(ctx, ms: list[dict]) -> list[Hit]:
    def g(m):
        return (m["rule_key"], m["mdtrt_id"], m["hilist_code"], m["fee_date"])

    day: dict[Any, Decimal] = {}
    for m in ms:
        day[g(m)] = day.get(g(m), ZERO) + m["cnt"]
    over = []
    for m in ms:
        if m["max_per_day"] is not None and day[g(m)] > m["max_per_day"]:
            over.append({**m, "day_qty": day[g(m)], "excess": day[g(m)] - m["max_per_day"]})
    excess_allocation(over, g)
    best: dict[Any, Decimal] = {}
    for r in over:
        best[g(r)] = max(best.get(g(r), r["claim"]), r["claim"])
    claimed = [r for r in over if best[g(r)] > 0]
    first: dict[Any, dict] = {}
    for r in sorted(claimed, key=lambda r: (r["fee_ocur_time"], r["bkkp_sn"])):
        first.setdefault(g(r), r)
    out = []
    for r in claimed:
        parts = []
        if first[g(r)] is r:
            parts.append(f"{ref(r)} 每日限 {qty(r['max_per_day'])}，{r['fee_date']:%Y-%m-%d} 共收费 {qty(r['day_qty'])}"
                         f"，超出 {qty(r['excess'])}，按单价 {yuan(r['pric'])} 元计")
        if r["claim"] > 0:
            parts.append(f"{r['fee_ocur_time']:%Y-%m-%d %H:%M} 收费 {qty(r['cnt'])} 次，金额 {yuan(r['amt'])} 元，其中 "
                         f"{qty(r['excess_units'])} 超出")
        out.append(_hit(r, "violating" if r["claim"] > 0 else "related", r["claim"], "", "；".join(parts) or None))
    return out


def _seconds(t: dt.datetime) -> int:
    return int(t.replace(microsecond=0).timestamp()) if t.tzinfo else int(
        (t.replace(microsecond=0) - dt.datetime(1970, 1, 1)).total_seconds())


WINDOW_CN = {"same_day": "同日", "same_visit": "同次就诊", "same_hour": "同一小时"}


def duplicate_charge(ctx, ms: list[dict]) -> list[Hit]:
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
            if s["main_code"] == s["hilist_code"] and not (mn["fee_ocur_time"], mn["bkkp_sn"]) < (s["fee_ocur_time"], s["bkkp_sn"]):
                continue
            gap = abs(_seconds(mn["fee_ocur_time"]) - _seconds(s["fee_ocur_time"]))
            if w == "same_day":
                ok = mn["fee_date"] == s["fee_date"]
            elif w == "same_visit":
                ok = True
            elif w == "same_hour":
                ok = mn["fee_ocur_time"].replace(minute=0, second=0, microsecond=0) == \
                    s["fee_ocur_time"].replace(minute=0, second=0, microsecond=0)
            else:
                ok = gap < int(w.split(":")[1]) * 3600
            if not ok:
                continue
            span = WINDOW_CN.get(w) or (w.split(":")[1] + "小时内")
            ev = (f"{ref(s)} 已包含在 {item_ref(mn['list_type'], mn['hilist_name'], mn['hilist_code'])} 中（{span}），"
                  f"主项 {mn['fee_ocur_time']:%Y-%m-%d %H:%M} 已收费；{line_fact(s)}")
            k = (s["rule_key"], s["mdtrt_id"], s["bkkp_sn"])
            cand = (gap, mn["bkkp_sn"], ev)
            if k not in sec or cand[:2] < sec[k][1][:2]:
                sec[k] = (s, cand)
            related.add((s["rule_key"], s["mdtrt_id"], mn["bkkp_sn"]))
    out = [Hit(k[0], k[1], k[1], k[2], "violating", s["deductible"], "", c[2]) for k, (s, c) in sec.items()]
    out += [Hit(rk, md, md, sn, "related", ZERO, "", None) for rk, md, sn in related]
    return out


def period_limit(ctx, ms: list[dict]) -> list[Hit]:
    """Per rule, person and code, units in time order; a unit is excess when ``max_count`` paid
    units lie fewer than ``period_days`` days before it (the query's walk, one unit at a time:
    its clusters only skip units that no paid unit can block)."""
    src = [m for m in ms if m["deductible"] > 0]
    units: dict[tuple, list[tuple]] = {}
    for m in src:
        for k in range(int(m["cnt"].to_integral_value(rounding=ROUND_CEILING))):
            units.setdefault((m["rule_key"], m["psn_no"], m["hilist_code"]), []).append(
                (m["fee_ocur_time"], m["bkkp_sn"], k, m))
    excess: dict[tuple, Decimal] = {}  # (rule_key, bkkp_sn) -> excess units of the line
    blockers: dict[tuple, set] = {}  # (rule_key, bkkp_sn) -> bkkp_sn of the paid units that block it
    for us in units.values():
        us.sort(key=lambda u: u[:3])
        paid: list[tuple[dt.date, str]] = []
        for _t, sn, k, m in us:
            if len(paid) >= m["max_count"] and (m["fee_date"] - paid[0][0]).days < m["period_days"]:
                key = (m["rule_key"], sn)
                excess[key] = excess.get(key, ZERO) + min(m["cnt"] - k, 1)
                blockers.setdefault(key, set()).update(b for _d, b in paid)
            else:
                paid = (paid + [(m["fee_date"], sn)])[-m["max_count"]:]
    rows = [{**m, "excess": excess[(m["rule_key"], m["bkkp_sn"])]} for m in src
            if (m["rule_key"], m["bkkp_sn"]) in excess]
    excess_allocation(rows, lambda r: (r["rule_key"], r["bkkp_sn"]))
    by_sn = {(m["rule_key"], m["bkkp_sn"]): m for m in src}
    out = []
    for a in rows:
        blk = sorted((by_sn[(a["rule_key"], b)] for b in blockers[(a["rule_key"], a["bkkp_sn"])] if b != a["bkkp_sn"]),
                     key=lambda b: (b["fee_ocur_time"], b["bkkp_sn"]))
        before = a["cnt"] - a["excess_units"]
        mine = "本条前 " + qty(before) + " 次"
        if blk:
            paid_text = "、".join(f"{b['fee_date']:%Y-%m-%d} {b['fixmedins_code']} 就诊 {b['mdtrt_id']}" for b in blk)
            paid_text += "，及" + mine if before > 0 else ""
        else:
            paid_text = mine
        ev = (f"{ref(a)} 每 {a['period_days']} 天限 {a['max_count']} 次；{line_fact(a)}，超出 {qty(a['excess_units'])}"
              f"；此前 {a['period_days']} 天内已支付：{paid_text}")
        out.append(_hit(a, "violating" if a["claim"] > 0 else "related", a["claim"], "", ev))
        out += [Hit(a["rule_key"], a["mdtrt_id"], a["mdtrt_id"], b["bkkp_sn"], "related", ZERO, "", None) for b in blk]
    return list(dict.fromkeys(out))


def course_limit(ctx, ms: list[dict]) -> list[Hit]:
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
            ev = (f"{ref(r)} 限支付 {r['max_days']} 天" + (f"（{grp}）" if grp else "")
                  + f"，本次就诊首次使用 {first:%Y-%m-%d}，此日为第 {day_no} 天；{line_fact(r)}")
        out.append(_hit(r, "violating" if over else "related", r["deductible"] if over else ZERO, "", ev))
    return out


def supply_days_limit(ctx, ms: list[dict]) -> list[Hit]:
    src = []
    for m in ms:
        pd, mx = m["prd_days"], m["max_days"]
        if pd is None or mx is None or not pd > mx or not m["deductible"] > 0:
            continue
        if m["outpatient_only"] and m["inpatient"]:
            continue
        if m["discharge_only"] and m["dscg_tkdrug_flag"] != "1":
            continue
        src.append({**m, "cnt0": m["cnt"], "amt0": m["amt"], "ded0": m["deductible"], "cnt": m["cnt"] * pd,
                    "amt": m["amt"] * pd, "deductible": m["deductible"] * pd, "excess": m["cnt"] * (pd - mx)})
    excess_allocation(src, lambda r: (r["rule_key"], r["bkkp_sn"]))
    out = []
    for r in src:
        q = xdiv(r["claim"], r["prd_days"])
        claim = min(q, r["ded0"]) if q is not None else None
        if claim is None or not claim > 0:
            continue
        b = {**r, "cnt": r["cnt0"], "amt": r["amt0"]}
        pd, mx = r["prd_days"], r["max_days"]
        how = "，出院带药 " if r["dscg_tkdrug_flag"] == "1" else "，开药 "
        ev = (f"{ref(b)} 限 {qty(mx)} 天用量{how}{qty(pd)} 天，超出 {qty(pd - mx)} 天（按 {qty(pd - mx)}/{qty(pd)} 计）；"
              f"{line_fact(b)}")
        out.append(_hit(b, "violating", claim, "", ev))
    return out


def secondary_procedure(ctx, ms: list[dict]) -> list[Hit]:
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
            flags.append(n > 0 and r["deductible"] > 0 and r["full_pric"] is not None and r["pric"] > r["rate"] * r["full_pric"])
        if not any(flags):
            continue
        for n, (r, v) in enumerate(zip(grp, flags)):
            if not (v or n == 0):
                continue
            ev = None
            if v:
                rate, full = r["rate"], r["full_pric"]
                ev = (f"{ref(r)} 与主手术 {ref(main)}（单价 {price_text(main['pric'])} 元）同日同组（{r['group'].strip()}），"
                      f"次要手术应不高于全价 {price_text(full)} 元的 {qty(rate * 100)}%（{price_text(rate * full)} 元），"
                      f"实际单价 {price_text(r['pric'])} 元，按 {qty((1 - rate) * 100)}% 扣除；{line_fact(r)}")
            out.append(_hit(r, "violating" if v else "related", (1 - r["rate"]) * r["deductible"] if v else ZERO, "", ev))
    return out


# ---------------------------------------------------------------------------- line checks


def _slot(t: dt.datetime, window: str) -> dt.datetime:
    if window == "same_day":
        return t.replace(hour=0, minute=0, second=0, microsecond=0)
    if window == "same_hour":
        return t.replace(minute=0, second=0, microsecond=0)
    if window == "same_minute":
        return t.replace(second=0, microsecond=0)
    return t


def duplicate_line(ctx, ms: list[dict]) -> list[Hit]:
    groups: dict[tuple, list[dict]] = {}
    for m in ms:
        w = m["window"] or "same_time"
        slot = _slot(m["fee_ocur_time"], w)
        groups.setdefault((m["rule_key"], m["mdtrt_id"], m["hilist_code"], slot, m["cnt"], m["pric"]), []).append(
            {**m, "_w": w, "slot": slot})
    out = []
    for grp in groups.values():
        if len(grp) < 2:
            continue
        grp.sort(key=lambda r: r["bkkp_sn"])
        dup = [n > 0 and r["deductible"] > 0 for n, r in enumerate(grp)]
        if not any(dup):
            continue
        first = grp[0]["bkkp_sn"]
        for r, v in zip(grp, dup):
            ev = None
            if v:
                w, slot = r["_w"], r["slot"]
                when = (f"{slot:%Y-%m-%d} 同日" if w == "same_day" else f"{slot:%Y-%m-%d %H} 时内" if w == "same_hour"
                        else f"{slot:%Y-%m-%d %H:%M}" if w == "same_minute" else f"{slot:%Y-%m-%d %H:%M:%S}")
                ev = (f"{ref(r)} {when} 以相同数量 {qty(r['cnt'])}、单价 {price_text(r['pric'])} 元计费 {len(grp)} 条，"
                      f"首条 {first}，此条 {r['bkkp_sn']} 为重复；{line_fact(r)}")
            out.append(_hit(r, "violating" if v else "related", r["deductible"] if v else ZERO, "", ev))
    return out


def fee_outside_visit(ctx, ms: list[dict]) -> list[Hit]:
    out = []
    for m in ms:
        if not m["deductible"] > 0 or m["begntime"] is None:
            continue
        d0 = m["begntime"].date() if isinstance(m["begntime"], dt.datetime) else m["begntime"]
        d1 = m["endtime"].date() if isinstance(m["endtime"], dt.datetime) else m["endtime"]
        early = (d0 - m["fee_date"]).days
        late = (m["fee_date"] - d1).days if d1 is not None else None
        tol = m["tolerance_days"]
        t0 = tol if tol is not None else 0
        if not (early > t0 or (late is not None and late > t0)):
            continue
        head = (f"就诊期 {d0:%Y-%m-%d} 至 " + (f"{d1:%Y-%m-%d}" if d1 is not None else "（未结束）")
                + (f"（允许前后 {tol} 天）" if tol is not None and tol > 0 else ""))
        if tol is not None and early > tol:
            ev = f"{ref(m)} 早于就诊开始 {early} 天，{line_fact(m)}"
        elif late is not None:
            ev = f"{ref(m)} 晚于就诊结束 {late} 天，{line_fact(m)}"
        else:
            ev = None
        out.append(_hit(m, "violating", m["deductible"], head, ev))
    return out


def not_in_catalog(ctx, ms: list[dict]) -> list[Hit]:
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
        out.append(_hit(m, "violating", m["deductible"], "", f"{ref(m)}{why}{line_fact(m)}"))
    return out


def price_cap(ctx, ms: list[dict]) -> list[Hit]:
    out = []
    for m in ms:
        if not m["deductible"] > 0:
            continue
        lv = m["inst_level"]
        own = m["lv3_pric"] if lv == 3 else m["lv2_pric"] if lv == 2 else m["lv1_pric"]
        rule_cap = own if own is not None else m["cap"]
        cap = rule_cap if rule_cap is not None else ctx.cap(m)
        if cap is None or not m["pric"] > cap:
            continue
        over = (m["pric"] - cap) * m["cnt"]
        if m["deductible"] == m["amt"]:
            claim = min(over, m["deductible"])
        else:
            claim = min(xdiv(over * m["deductible"], m["amt"]), m["deductible"])
        where = "未定级机构（按一级）" if lv == 0 else level_cn(lv) + "机构"
        src = "规则限价" if rule_cap is not None else "医保目录限价"
        ev = (f"{ref(m)} {where}限价 {price_text(cap)} 元（{src}），实际单价 {price_text(m['pric'])} 元；{line_fact(m)}"
              f"，超标准 {yuan(over)} 元")
        out.append(_hit(m, "violating", claim, "", ev))
    return out


def duplicate_ingredient(ctx, ms: list[dict]) -> list[Hit]:
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
    x = [(r, rank[(r["rule_key"], r["mdtrt_id"], r["fee_date"], r["gkey"], r["hilist_code"])]) for r in s
         if (r["rule_key"], r["mdtrt_id"], r["fee_date"], r["gkey"], r["hilist_code"]) in rank]
    any_v: set = set()
    for r, (rk, _ref, _amt) in x:
        if rk > 1 and r["deductible"] > 0:
            any_v.add((r["rule_key"], r["mdtrt_id"], r["fee_date"], r["gkey"]))
    out = []
    for r, (rk, kept_ref, kept_amt) in x:
        if (r["rule_key"], r["mdtrt_id"], r["fee_date"], r["gkey"]) not in any_v:
            continue
        v = rk > 1 and r["deductible"] > 0
        ev = (f"{ref(r)} 与 {kept_ref} 属同一成分组（{r['gkey']}），{r['fee_date']:%Y-%m-%d} 同日使用，"
              f"保留当日金额较高者（{yuan(kept_amt)} 元）；{line_fact(r)}") if v else None
        out.append(_hit(r, "violating" if v else "related", r["deductible"] if v else ZERO, "", ev))
    return out


#: rule type -> evaluator. A type missing here runs on the SQL path only.
EVALUATORS: dict[str, Callable[[Any, list[dict]], list[Hit]]] = {
    f.__name__: f for f in (
        restrict_gender, restrict_age, restrict_insutype, restrict_visit_type, restrict_hosp_level,
        restrict_indication, after_death, frequency_limit, duplicate_charge, period_limit, course_limit,
        supply_days_limit,
        secondary_procedure, duplicate_line, fee_outside_visit, not_in_catalog, price_cap, duplicate_ingredient,
    )
}
