"""Line checks declared once: a line-level rule type's condition, claim and evidence written in
:mod:`medaudit.semantics`'s expression language, from which both its set-based query and its
in-memory evaluator are generated (a type module then holds one declaration, not two bodies).

A line check judges each matched row (``{m}``) on its own: the row is violating when ``where``
is true; it claims ``claim`` (default: the line's deductible, mode ``whole_line``); its evidence is
``ev_head`` (the finding's opening) and ``ev_line`` (the line's part).
"""

from __future__ import annotations

from typing import Any, Callable

from ..semantics import Expr, col, compile_row, sql_function
from .base import Hit
from .evidence import gender_cn as _gender_cn
from .evidence import item_ref as _item_ref
from .evidence import level_cn as _level_cn
from .evidence import qty as _qty
from .evidence import yuan as _yuan

#: the SQL macros (medaudit.db.install_macros) with their Python twins (medaudit.types.evidence)
gender_cn = sql_function("gender_cn", _gender_cn, strict=False)  # CASE macros: NULL gives their ELSE text
level_cn = sql_function("level_cn", _level_cn, strict=False)
item_ref = sql_function(
    "item_ref", lambda lt, name, code: None if code is None else _item_ref(lt, name, code), strict=False
)
qty = sql_function("qty", _qty)
yuan = sql_function("yuan", _yuan)
day_text = sql_function("day_text", lambda d: f"{d:%Y-%m-%d}")  # strftime(d, '%Y-%m-%d'); see below


def _coalesce_text(x, default):
    return default if x is None else x


class _DayText(Expr):
    def __init__(self, x: Expr):
        self.x = x

    def sql(self) -> str:
        return f"strftime({self.x.sql()}, '%Y-%m-%d')"

    def py(self) -> str:
        return f"_fn_day_text({self.x.py()})"


def day(x: Expr) -> Expr:
    """A date as 2026-03-02."""
    return _DayText(x)


class _ItemRef(Expr):
    """:data:`.base.ITEM_REF`: item_ref(list_type, coalesce(hilist_name, item_name), hilist_code)."""

    def sql(self) -> str:
        return "item_ref(list_type, coalesce(hilist_name, item_name), hilist_code)"

    def py(self) -> str:
        return "_fn_item_ref(m['list_type'], _coalesce(m['hilist_name'], m.get('item_name')), m['hilist_code'])"


class _Text(Expr):
    """A string literal that is never NULL, whatever the helper around it."""

    def __init__(self, s: str):
        self.s = s

    def sql(self) -> str:
        return "'" + self.s.replace("'", "''") + "'"

    def py(self) -> str:
        return repr(self.s)


ITEM = _ItemRef()
#: :data:`.base.LINE_FACT`: 2026-03-02 收费 1 次，金额 180.00 元
from ..semantics import cat  # noqa: E402

LINE = cat(day(col("fee_date")), " 收费 ", qty(col("cnt")), " 次，金额 ", yuan(col("amt")), " 元")


def line_check(where: Expr, ev_head: Expr, ev_line: Expr, claim: Expr | None = None) -> tuple[str, Callable]:
    """(the type's query, its evaluator) from one declaration."""
    claim = claim if claim is not None else col("deductible")
    query = f"""
        SELECT rule_key, mdtrt_id AS finding_key, mdtrt_id, bkkp_sn, 'violating' AS role,
               {claim.sql()} AS claim, {ev_head.sql()} AS ev_head, {ev_line.sql()} AS ev_line
        FROM {{m}}
        WHERE {where.sql()}
    """
    test, money, head, line = (
        compile_row(e, n) for e, n in ((where, "where"), (claim, "claim"), (ev_head, "ev_head"), (ev_line, "ev_line"))
    )

    def evaluate(ctx: Any, ms: list[dict]) -> list[Hit]:
        return [
            Hit(m["rule_key"], m["mdtrt_id"], m["mdtrt_id"], m["bkkp_sn"], "violating", money(m), head(m), line(m))
            for m in ms
            if test(m) is True
        ]

    return query, evaluate
