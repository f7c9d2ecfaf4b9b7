"""Evidence and hit rows in Python: the twins of the SQL macros (:func:`medaudit.db.install_macros`)
and of :data:`.base.LINE_FACT` / :data:`.base.ITEM_REF`, for the rule types' in-memory evaluators.

An evaluator (``RuleType.evaluate``) reads the matched rows (a line, the rule's key and the item's
resolved parameters: what ``{m}`` holds) and the request's context (the visit's lines,
diagnoses, death dates, catalogue: :class:`medaudit.prealert.fast.context.Lines`), and returns
:class:`.base.Hit` rows with the values its type's query gives: money in :class:`decimal.Decimal`
with the macros' rounding (``yuan`` rounds half away from zero; ``xdiv``,
:func:`medaudit.semantics.xdiv`, truncates to 12 places after rounding its operands to 8).
"""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from ..semantics import ZERO, excess_allocation, xdiv
from .base import Hit

Q4 = Decimal("0.0001")

__all__ = [
    "ZERO",
    "Q4",
    "Hit",
    "xdiv",
    "excess_allocation",
    "yuan",
    "qty",
    "price_text",
    "item_ref",
    "ref",
    "line_fact",
    "gender_cn",
    "insutype_cn",
    "med_type_cn",
    "level_cn",
    "hit",
]


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
INSUTYPE_CN = {
    "310": "职工基本医疗保险",
    "390": "城乡居民基本医疗保险",
    "340": "离休人员医疗保障",
    "410": "工伤保险",
    "510": "生育保险",
}
MED_TYPE_CN = {
    "11": "普通门诊",
    "12": "门诊挂号",
    "13": "急诊",
    "14": "门诊慢特病",
    "21": "普通住院",
    "22": "外伤住院",
    "24": "急诊转住院",
    "28": "日间手术",
    "41": "定点药店购药",
    "51": "生育门诊",
    "52": "生育住院",
}
LEVEL_CN = {3: "三级", 2: "二级", 1: "一级"}


def gender_cn(g):
    return GENDER_CN.get(g, "未说明")


def insutype_cn(t):
    return INSUTYPE_CN.get(t, "其他")


def med_type_cn(t):
    return MED_TYPE_CN.get(t) or ("住院" if str(t).startswith("2") else "门诊")


def level_cn(n):
    return LEVEL_CN.get(n, "未定级")


def hit(m: dict, role: str, claim, ev_head: str | None, ev_line: str | None, finding_key: str | None = None) -> Hit:
    """A hit row of matched row ``m`` (its finding is its visit unless ``finding_key`` says otherwise)."""
    return Hit(m["rule_key"], finding_key or m["mdtrt_id"], m["mdtrt_id"], m["bkkp_sn"], role, claim, ev_head, ev_line)
