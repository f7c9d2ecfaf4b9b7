"""Line checks declared once: a line-level rule type's condition, claim and evidence written in
:mod:`medaudit.semantics`'s expression language, from which both its set-based query and its
in-memory evaluator are generated (a type module then holds one declaration, not two bodies).

A line check judges each matched row (``{m}``) on its own: the row is violating when ``where``
is true; it claims what its deduction ``mode`` makes of the line (:data:`medaudit.semantics.MODE_CLAIMS`:
``whole_line`` the deductible; a ``price_diff`` check gives its ``overcharge``); its evidence is
``ev_head`` (the finding's opening) and ``ev_line`` (the line's part). A check that reads a value
of another table by a key of the row (a person's death date) declares it as a :class:`Lookup`.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

from ..semantics import (
    Expr,
    Lit,
    catalogue_caps_sql,
    catalogue_holds,
    catalogue_in_force_days_sql,
    catalogue_spans,
    catalogue_spans_sql,
    col,
    compile_row,
    sql_function,
)
from .base import Hit, hilist_cap, mode_claim
from .base import price_text as _price_text_sql
from .evidence import gender_cn as _gender_cn
from .evidence import insutype_cn as _insutype_cn
from .evidence import item_ref as _item_ref
from .evidence import level_cn as _level_cn
from .evidence import med_type_cn as _med_type_cn
from .evidence import price_text as _price_text
from .evidence import qty as _qty
from .evidence import yuan as _yuan

#: the SQL macros (medaudit.db.install_macros) with their Python twins (medaudit.types.evidence)
gender_cn = sql_function("gender_cn", _gender_cn, strict=False)  # CASE macros: NULL gives their ELSE text
level_cn = sql_function("level_cn", _level_cn, strict=False)
insutype_cn = sql_function("insutype_cn", _insutype_cn, strict=False)
med_type_cn = sql_function("med_type_cn", _med_type_cn, strict=False)
item_ref = sql_function(
    "item_ref", lambda lt, name, code: None if code is None else _item_ref(lt, name, code), strict=False
)
qty = sql_function("qty", _qty)
yuan = sql_function("yuan", _yuan)
day_text = sql_function("day_text", lambda d: f"{d:%Y-%m-%d}")  # strftime(d, '%Y-%m-%d'); see below


price_text_ = sql_function("price_text", _price_text)  # registers the Python twin; SQL: base.price_text


class _PriceText(Expr):
    def __init__(self, x: Expr):
        self.x = x

    def sql(self) -> str:
        return _price_text_sql(self.x.sql())

    def py(self) -> str:
        return f"_fn_price_text({self.x.py()})"


def price_text(x: Expr) -> Expr:
    """A unit price as a clerk reads it: 180.00, 0.045 (:func:`.base.price_text`)."""
    return _PriceText(x)


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


class Lookup(Expr):
    """A column of another input table, looked up by a key column of the matched row; the table
    holds at most one row per key. SQL: a LEFT JOIN of ``{table}`` on the key; Python: the same
    table in the request's context as a mapping key -> value (``py(ctx)``), read with ``get``.
    NULL when the table has no row for the key (or the key is NULL)."""

    def __init__(self, table: str, key: str, value: str, py: Callable[[Any], Mapping]):
        self.table, self.key, self.value, self.mapping = table, key, value, py
        self.alias = f"__{table}_{value}"
        self.slot = -1  # its place among the check's lookups (set by line_check)

    def join_sql(self) -> str:
        # the table's key and value under names of their own: no clash with the matched row's columns
        return (
            f"LEFT JOIN (SELECT {self.key} AS {self.alias}_k, {self.value} AS {self.alias} FROM {{{self.table}}}) "
            f"ON {self.alias}_k = m.{self.key}"
        )

    def sql(self) -> str:
        return self.alias

    def py(self) -> str:
        return f"_lk[{self.slot}].get({col(self.key).py()})"


class CatalogueCap(Expr):
    """The catalogue (``{hilist}``) price cap of the line's code for its institution's level on its
    fee date (:func:`medaudit.semantics.catalogue_cap_sql`; NULL when the catalogue has none), as a
    lookup of a line check: SQL LEFT JOINs the caps of ``{lines}``' codes and days, Python asks the
    request's context (``ctx.cap``, :func:`medaudit.semantics.catalogue_cap`)."""

    slot = -1

    def join_sql(self) -> str:
        # the caps' key columns renamed: the line's own hilist_code and fee_date stay unambiguous
        caps = catalogue_caps_sql(lines="{lines}", hilist="{hilist}")
        return (
            f"LEFT JOIN (SELECT hilist_code AS __caps_code, fee_date AS __caps_day, cap_lv1, cap_lv2, cap_lv3 "
            f"FROM ({caps})) __caps ON __caps.__caps_code = m.hilist_code AND __caps.__caps_day = m.fee_date"
        )

    def sql(self) -> str:
        return hilist_cap("m", "__caps")

    def py(self) -> str:
        return f"_lk[{self.slot}](m)"

    @staticmethod
    def mapping(ctx: Any) -> Callable[[dict], Any]:
        return ctx.cap


class CatalogueStatus:
    """The catalogue's (``{hilist}``) word on the line's code on its fee date, as a lookup of a line
    check; its facts are expressions: ``loaded`` (the catalogue has any row), ``in_force`` (a row of
    the code is in force that day, :func:`medaudit.semantics.catalogue_holds`; never NULL) and
    ``spans`` (the code's validity spans for evidence, :func:`medaudit.semantics.catalogue_spans`;
    NULL when the catalogue has no row of the code). SQL LEFT JOINs the in-force (code, day) pairs
    and the spans of ``{lines}``' codes; Python reads the request's context (``ctx.has_catalog``,
    ``ctx.catalog_rows``)."""

    slot = -1

    def __init__(self) -> None:
        self.loaded: Expr = _StatusFact(self, "loaded")
        self.in_force: Expr = _StatusFact(self, "in_force")
        self.spans: Expr = _StatusFact(self, "spans")

    def join_sql(self) -> str:
        days = catalogue_in_force_days_sql(lines="{lines}", hilist="{hilist}")
        spans = catalogue_spans_sql(lines="{lines}", hilist="{hilist}")
        # the key columns renamed: the line's own hilist_code and fee_date stay unambiguous
        return (
            f"LEFT JOIN (SELECT hilist_code AS __cat_code, fee_date AS __cat_day, TRUE AS __cat_in_force "
            f"FROM ({days})) __cat ON __cat.__cat_code = m.hilist_code AND __cat.__cat_day = m.fee_date\n"
            f"        LEFT JOIN (SELECT hilist_code AS __cat_spans_code, spans AS __cat_spans FROM ({spans})) "
            f"__cat_sp ON __cat_sp.__cat_spans_code = m.hilist_code"
        )

    SQL = {
        "loaded": "EXISTS (SELECT 1 FROM {hilist})",
        "in_force": "coalesce(__cat.__cat_in_force, FALSE)",
        "spans": "__cat_sp.__cat_spans",
    }

    @staticmethod
    def mapping(ctx: Any) -> "_CatalogueView":
        return _CatalogueView(ctx)


class _StatusFact(Expr):
    def __init__(self, owner: CatalogueStatus, name: str):
        self.owner, self.name = owner, name

    def sql(self) -> str:
        return f"({CatalogueStatus.SQL[self.name]})"

    def py(self) -> str:
        lk = f"_lk[{self.owner.slot}]"
        return f"{lk}.loaded" if self.name == "loaded" else f"{lk}.{self.name}(m)"


class _CatalogueView:
    """:class:`CatalogueStatus` over a request's context (asks whether a catalogue is loaded once)."""

    def __init__(self, ctx: Any):
        self._ctx = ctx
        self._loaded: bool | None = None

    @property
    def loaded(self) -> bool:
        if self._loaded is None:
            self._loaded = bool(self._ctx.has_catalog())
        return self._loaded

    def in_force(self, m: dict) -> bool:
        # no catalogue: no row is in force (and no code is asked of the database)
        return self.loaded and catalogue_holds(self._ctx.catalog_rows(m["hilist_code"]), m["fee_date"])

    def spans(self, m: dict) -> str | None:
        return catalogue_spans(self._ctx.catalog_rows(m["hilist_code"]))


def line_check(
    where: Expr,
    ev_head: Expr,
    ev_line: Expr,
    mode: str,
    claim_inputs: Mapping[str, Expr] | None = None,
    lookups: tuple[Lookup | CatalogueCap | CatalogueStatus, ...] = (),
) -> tuple[str, Callable]:
    """(the type's query, its evaluator) from one declaration. ``mode``: the type's deduction
    mode (its ``RuleType.mode``), whose piece makes the claim; ``claim_inputs``: what the check
    gives that piece besides the line's own money (``overcharge`` for ``price_diff``), as
    :func:`.base.claim` takes them. ``lookups``: the values of other tables the expressions read
    (:class:`Lookup`, :class:`CatalogueCap`, :class:`CatalogueStatus`)."""
    given = dict(claim_inputs or {})
    piece = mode_claim(mode, given)
    claim = piece.build(*(given[a] if a in given else Lit(True) if a == "carries" else col(a) for a in piece.args))
    for n, lk in enumerate(lookups):
        lk.slot = n
    joins = "".join(f"\n        {lk.join_sql()}" for lk in lookups)
    query = f"""
        SELECT m.rule_key, m.mdtrt_id AS finding_key, m.mdtrt_id, m.bkkp_sn, 'violating' AS role,
               {claim.sql()} AS claim, {ev_head.sql()} AS ev_head, {ev_line.sql()} AS ev_line
        FROM {{m}} m{joins}
        WHERE {where.sql()}
    """
    test, money, head, line = (
        compile_row(e, n, ("_lk",))
        for e, n in ((where, "where"), (claim, "claim"), (ev_head, "ev_head"), (ev_line, "ev_line"))
    )

    def evaluate(ctx: Any, ms: list[dict]) -> list[Hit]:
        lk = tuple(x.mapping(ctx) for x in lookups)
        return [
            Hit(
                m["rule_key"],
                m["mdtrt_id"],
                m["mdtrt_id"],
                m["bkkp_sn"],
                "violating",
                money(m, lk),
                head(m, lk),
                line(m, lk),
            )
            for m in ms
            if test(m, lk) is True
        ]

    return query, evaluate
