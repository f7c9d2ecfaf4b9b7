"""The meaning of a claim line, written once: each shared piece gives both its SQL and its Python.

Batch screening computes in DuckDB; the pre-alert fast path computes the same facts in plain
Python over a visit held in memory. Every fact both need is defined here, once, and both
executions come from that one definition:

- **scalar pieces** (:class:`Piece`) are written in a small expression language (:class:`Expr`)
  that renders SQL text (``piece.sql("n.amt", ...)``) and compiles to a Python function
  (``piece.py(amt, ...)``) with SQL's NULL rules (NULL in, NULL out; ``greatest``/``least``
  skip NULLs; a condition that is NULL is not true; CASTs to ``DECIMAL(p, s)`` round half away
  from zero). Pieces: :data:`ownpay`, :data:`deductible`, :data:`inst_level`,
  :data:`age_years`, :data:`age_days`, :data:`fund_share_claim`, :data:`rule_in_force`
  (validity and scope), :data:`catalogue_in_force`, :data:`level_price`, :data:`catalogue_span`.
- **set pieces**, whose SQL is a window or a join and whose Python is a loop, keep their two
  bodies side by side here and share the scalar pieces: :func:`excess_allocation_sql` /
  :func:`excess_allocation`, :func:`catalogue_cap_sql` / :func:`catalogue_cap`, the
  catalogue's word on a code (:func:`catalogue_in_force_days_sql` / :func:`catalogue_holds`,
  :func:`catalogue_spans_sql` / :func:`catalogue_spans`), and the matching of rule items to lines (:data:`MATCH_ORDER`, :func:`matched_sql` /
  :class:`ItemIndex`).

``tests/test_semantics.py`` sends random inputs (birthdays, 0.005 boundaries, class C,
self-pay flags, NULLs) through DuckDB and through Python for each piece and requires equal
answers.
"""

from __future__ import annotations

import datetime as dt
import itertools
import re
from dataclasses import dataclass, field
from decimal import ROUND_DOWN, ROUND_HALF_UP, Context, Decimal
from typing import Any, Callable, Iterable

#: wide enough for any DECIMAL(38, x) operand: no rounding before the explicit ones
WIDE = Context(prec=80, rounding=ROUND_HALF_UP)
ZERO = Decimal(0)
Q8 = Decimal("0.00000001")
Q12 = Decimal("0.000000000001")


# ============================================================================ the expression language


class Expr:
    """A scalar expression over named inputs: renders SQL (:meth:`sql`) and Python source (:meth:`py`)."""

    def sql(self) -> str:
        raise NotImplementedError

    def py(self) -> str:
        raise NotImplementedError

    # arithmetic and comparison (SQL's NULL rules in Python)
    def __add__(self, o):
        return Call("+", self, o)

    def __sub__(self, o):
        return Call("-", self, o)

    def __mul__(self, o):
        return Call("*", self, o)

    def __rmul__(self, o):
        return Call("*", o, self)

    def __lt__(self, o):
        return Call("<", self, o)

    def __le__(self, o):
        return Call("<=", self, o)

    def __gt__(self, o):
        return Call(">", self, o)

    def __ge__(self, o):
        return Call(">=", self, o)

    def eq(self, o):
        return Call("=", self, o)

    def ne(self, o):
        return Call("<>", self, o)

    def __and__(self, o):
        return Call("AND", self, o)

    def __or__(self, o):
        return Call("OR", self, o)

    def __invert__(self):
        return Call("NOT", self)

    def is_null(self):
        return IsNull(self)

    def isin(self, *values):
        return In(self, tuple(values))

    def cast(self, sql_type: str):
        return Cast(self, sql_type)


_SIMPLE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)?|-?[0-9.]+|[A-Za-z_][A-Za-z0-9_]*\([^()]*\)")


def _e(x: Any) -> Expr:
    return x if isinstance(x, Expr) else Lit(x)


@dataclass(frozen=True, eq=False)
class Lit(Expr):
    value: Any

    def sql(self) -> str:
        v = self.value
        if v is None:
            return "NULL"
        if isinstance(v, bool):
            return "TRUE" if v else "FALSE"
        if isinstance(v, str):
            return "'" + v.replace("'", "''") + "'"
        if isinstance(v, (int, Decimal)):
            return str(v)
        raise TypeError(f"no SQL literal for {v!r}")

    def py(self) -> str:
        return repr(self.value)


@dataclass(frozen=True, eq=False)
class Arg(Expr):
    """An input: its SQL text is given when the piece is rendered, its Python name is the argument's."""

    name: str
    text: str = ""

    def sql(self) -> str:
        t = self.text
        return t if _SIMPLE.fullmatch(t) else f"({t})"  # an expression's text keeps its own precedence

    def py(self) -> str:
        return self.name


@dataclass(frozen=True, eq=False)
class IsNull(Expr):
    x: Expr

    def sql(self) -> str:
        return f"({self.x.sql()} IS NULL)"

    def py(self) -> str:
        return f"({self.x.py()} is None)"


@dataclass(frozen=True, eq=False)
class In(Expr):
    x: Expr
    values: tuple

    def sql(self) -> str:
        return f"({self.x.sql()} IN ({','.join(Lit(v).sql() for v in self.values)}))"

    def py(self) -> str:
        return f"_in({self.x.py()}, {self.values!r})"


@dataclass(frozen=True, eq=False)
class Cast(Expr):
    x: Expr
    sql_type: str

    def sql(self) -> str:
        return f"CAST({self.x.sql()} AS {self.sql_type})"

    def py(self) -> str:
        t = self.sql_type.upper().replace(" ", "")
        if t.startswith("DECIMAL("):
            scale = int(t[:-1].split(",")[1])
            return f"_dec({self.x.py()}, {scale})"
        if t == "DATE":
            return f"_date({self.x.py()})"
        raise TypeError(f"no Python cast to {self.sql_type}")


@dataclass(frozen=True, eq=False)
class Case(Expr):
    whens: tuple  # ((condition, value), ...)
    default: Expr

    def sql(self) -> str:
        body = " ".join(f"WHEN {c.sql()} THEN {v.sql()}" for c, v in self.whens)
        return f"CASE {body} ELSE {self.default.sql()} END"

    def py(self) -> str:
        out = self.default.py()
        for c, v in reversed(self.whens):  # lazy, as SQL's CASE: a branch not taken is not computed
            out = f"({v.py()} if {c.py()} is True else {out})"
        return out


def case(*whens: tuple, default: Any) -> Expr:
    whens = tuple((_e(c), _e(v)) for c, v in whens)
    if whens and isinstance(whens[0][0], Lit) and whens[0][0].value is True:
        return whens[0][1]  # a first branch always taken (a claim's line that always carries money)
    return Case(whens, _e(default))


#: operators and functions: SQL form, Python helper (each helper follows SQL's NULL rules)
_INFIX = {
    "+": "_add",
    "-": "_sub",
    "*": "_mul",
    "<": "_lt",
    "<=": "_le",
    ">": "_gt",
    ">=": "_ge",
    "=": "_eq",
    "<>": "_ne",
    "AND": "_and",
    "OR": "_or",
}
_FUNCS = {
    "NOT": "_not",
    "greatest": "_greatest",
    "least": "_least",
    "year": "_year",
    "month": "_month",
    "day": "_day",
    "xdiv": "xdiv",
    "list_contains": "_list_contains",
    "day_diff": "_day_diff",
    "coalesce": "_coalesce",
}


@dataclass(frozen=True, eq=False)
class Call(Expr):
    op: str
    args: tuple

    def __init__(self, op: str, *args: Any):
        object.__setattr__(self, "op", op)
        object.__setattr__(self, "args", tuple(_e(a) for a in args))

    def sql(self) -> str:
        a = [x.sql() for x in self.args]
        if self.op in _INFIX:
            return f"({a[0]} {self.op} {a[1]})"
        if self.op == "NOT":
            return f"(NOT {a[0]})"
        if self.op == "day_diff":
            return f"date_diff('day', {a[0]}, {a[1]})"
        return f"{self.op}({', '.join(a)})"

    def py(self) -> str:
        fn = _INFIX.get(self.op) or _FUNCS[self.op]
        return f"{fn}({', '.join(x.py() for x in self.args)})"


def greatest(*xs):
    return Call("greatest", *xs)


def least(*xs):
    return Call("least", *xs)


def year(x):
    return Call("year", x)


def month(x):
    return Call("month", x)


def day(x):
    return Call("day", x)


def xdiv_(a, b):
    return Call("xdiv", a, b)


def list_contains(lst, x):
    return Call("list_contains", lst, x)


def day_diff(a, b):
    return Call("day_diff", a, b)


def coalesce(*xs):
    return Call("coalesce", *xs)


# ---------------------------------------------------------------------------- Python helpers (SQL's rules)


def xdiv(a: Decimal | None, b: Decimal | None) -> Decimal | None:
    """The ``xdiv`` macro (:func:`medaudit.db.install_macros`): operands rounded to 8 places,
    quotient truncated to 12 (NULL when b is 0)."""
    if a is None or b is None:
        return None
    a8 = WIDE.quantize(Decimal(a), Q8)
    b8 = WIDE.quantize(Decimal(b), Q8)
    if b8 == 0:
        return None
    return WIDE.divide(a8, b8).quantize(Q12, rounding=ROUND_DOWN, context=WIDE)


def _add(a, b):
    return None if a is None or b is None else a + b


def _sub(a, b):
    return None if a is None or b is None else a - b


def _mul(a, b):
    return None if a is None or b is None else a * b


def _lt(a, b):
    return None if a is None or b is None else a < b


def _le(a, b):
    return None if a is None or b is None else a <= b


def _gt(a, b):
    return None if a is None or b is None else a > b


def _ge(a, b):
    return None if a is None or b is None else a >= b


def _eq(a, b):
    return None if a is None or b is None else a == b


def _ne(a, b):
    return None if a is None or b is None else a != b


def _not(a):
    return None if a is None else not a


def _in(a, vals):
    return None if a is None else a in vals


def _year(d):
    return None if d is None else d.year


def _month(d):
    return None if d is None else d.month


def _day(d):
    return None if d is None else d.day


def _day_diff(a, b):
    return None if a is None or b is None else (_date(b) - _date(a)).days


def _and(a, b):
    if a is False or b is False:
        return False
    return None if a is None or b is None else True


def _or(a, b):
    if a is True or b is True:
        return True
    return None if a is None or b is None else False


def _greatest(*xs):
    if len(xs) == 2:  # the common case, without a list: what max() of the non-NULL ones returns
        a, b = xs
        if a is None:
            return b
        if b is None:
            return a
        return b if b > a else a
    known = [x for x in xs if x is not None]
    return max(known) if known else None


def _least(*xs):
    if len(xs) == 2:  # as min() of the non-NULL ones: the first of equal values
        a, b = xs
        if a is None:
            return b
        if b is None:
            return a
        return b if b < a else a
    known = [x for x in xs if x is not None]
    return min(known) if known else None


def _coalesce(*xs):
    for x in xs:
        if x is not None:
            return x
    return None


def _list_contains(lst, x):
    if lst is None or x is None:
        return None
    return x in lst


#: 10^-scale by scale (``_dec`` is called for every line the fast path builds)
_QUANTA = {s: Decimal(1).scaleb(-s) for s in range(0, 39)}


def _dec(x, scale: int):
    if x is None:
        return None
    return WIDE.quantize(x if type(x) is Decimal else Decimal(x), _QUANTA[scale])


def _date(x):
    if x is None or type(x) is dt.date:
        return x
    return x.date() if isinstance(x, dt.datetime) else x


_HELPERS = {name: obj for name, obj in globals().items() if name.startswith("_") and callable(obj)}
_HELPERS["xdiv"] = xdiv
_HELPERS["Decimal"] = Decimal


class Piece:
    """One shared definition: ``build`` makes its expression from its inputs; :meth:`sql` renders
    it over SQL texts, :attr:`py` is the same expression compiled to a Python function."""

    def __init__(self, build: Callable[..., Expr], args: tuple[str, ...]):
        self.build, self.args = build, args
        self.__doc__ = build.__doc__
        self.name = build.__name__
        expr = build(*(Arg(a) for a in args))
        self.source = f"def {self.name}({', '.join(args)}):\n    return {expr.py()}\n"
        scope = dict(_HELPERS)
        exec(compile(self.source, f"<semantics.{self.name}>", "exec"), scope)
        #: the piece as a Python function of its inputs (positional, in ``args`` order)
        self.py: Callable[..., Any] = scope[self.name]

    def sql(self, *texts: str) -> str:
        """The piece's SQL over the given SQL texts of its inputs (in ``args`` order)."""
        if len(texts) != len(self.args):
            raise TypeError(f"{self.name} takes {len(self.args)} SQL inputs ({', '.join(self.args)})")
        return self.build(*(Arg(a, t) for a, t in zip(self.args, texts))).sql()

    def __call__(self, *args: Any) -> Any:
        return self.py(*args)


def piece(*args: str) -> Callable[[Callable[..., Expr]], Piece]:
    def wrap(build: Callable[..., Expr]) -> Piece:
        return Piece(build, args)

    return wrap


# ============================================================================ money of a line


@piece("amt", "ownpay0")
def ownpay(amt, ownpay0):
    """The line's fully self-paid part: its stated own-pay (refunds netted), within 0 and the amount."""
    return least(greatest(ownpay0, 0), greatest(amt, 0)).cast("DECIMAL(18,4)")


@piece("amt", "ownpay0", "chrgitm_lv", "hosp_appr_flag")
def deductible(amt, ownpay0, chrgitm_lv, hosp_appr_flag):
    """What the fund paid for the line and a finding may take back: amount less own-pay; 0 for a
    class C item (``chrgitm_lv`` 03) or a line switched to self-pay (``hosp_appr_flag`` 2)."""
    return case(
        (chrgitm_lv.eq("03") | hosp_appr_flag.eq("2"), 0),
        default=greatest(amt - least(greatest(ownpay0, 0), greatest(amt, 0)), 0),
    ).cast("DECIMAL(18,4)")


@piece("overcharge", "deductible", "amt")
def fund_share_claim(overcharge, deductible, amt):
    """The claim on a line for an overcharge in yuan: the overcharge times the line's fund share
    (deductible / amt), never more than the deductible, 0 when there is no overcharge. Exact:
    ``xdiv`` divides in integers; every branch DECIMAL(38,12) (a CASE of (38,8) and (38,12)
    would round to 8 decimals). The product is 128-bit: the deductible (4 places) is widened to
    DECIMAL(38,4) first, else DuckDB multiplied two 18-digit decimals in 64 bits and stopped the
    screen with an overflow once overcharge x deductible passed about 9.2 million (a 3,034 yuan
    excess on a 330 yuan line: found by the property test). One definition for every type that
    claims part of a line."""
    return case(
        (overcharge <= 0, Lit(0).cast("DECIMAL(38,12)")),
        (deductible.eq(amt), least(overcharge, deductible).cast("DECIMAL(38,12)")),
        default=least(xdiv_(overcharge * deductible.cast("DECIMAL(38,4)"), amt), deductible).cast("DECIMAL(38,12)"),
    )


# ============================================================================ the claim of a deduction mode
# A rule type declares its deduction mode (``RuleType.mode``, one of ``medaudit.types.base.MODES``);
# the mode's piece below turns what the type found on a hit line into the line's claim. The type
# supplies only what varies (does the line carry money, its excess units, its overcharge, the
# rate); the line's own money (deductible, amount, unit price) is read by the piece. Related
# lines (context, role ``related``) claim 0 whatever the mode.


@piece("carries", "deductible")
def whole_line_claim(carries, deductible):
    """Mode ``whole_line``: a line that carries money claims its deductible; else 0."""
    return case((carries, deductible), default=ZERO)


@piece("excess_units", "pric", "deductible", "amt")
def excess_qty_claim(excess_units, pric, deductible, amt):
    """Mode ``excess_qty``: the line's excess units at its unit price, times its fund share, never
    more than its deductible (:data:`fund_share_claim`); 0 for a line with no excess units."""
    return fund_share_claim.build(excess_units * pric, deductible, amt)


@piece("overcharge", "deductible", "amt")
def price_diff_claim(overcharge, deductible, amt):
    """Mode ``price_diff``: the line's overcharge in yuan (e.g. (price - cap) x quantity) times its
    fund share, never more than its deductible (:data:`fund_share_claim`); 0 when there is none."""
    return fund_share_claim.build(overcharge, deductible, amt)


@piece("carries", "rate", "deductible")
def pct_claim(carries, rate, deductible):
    """Mode ``pct``: a line that carries money claims ``rate`` of its deductible; else 0."""
    return case((carries, rate * deductible), default=ZERO)


@piece("deductible")
def whole_visit_claim(deductible):
    """Mode ``whole_visit``: every line of the flagged visit claims its deductible (the amount at
    risk; the finding's claim is their sum)."""
    return deductible


@piece()
def no_claim():
    """Mode ``none``: a warning that claims nothing (profiling)."""
    return Lit(ZERO)


#: deduction mode -> the piece that makes a hit line's claim (one per ``medaudit.types.base.MODES``)
MODE_CLAIMS: dict[str, Piece] = {
    "whole_line": whole_line_claim,
    "excess_qty": excess_qty_claim,
    "price_diff": price_diff_claim,
    "pct": pct_claim,
    "whole_visit": whole_visit_claim,
    "none": no_claim,
}


# ============================================================================ the person and the institution

#: institution level from ``hosp_lv`` (3 三级, 2 二级, 1 一级; anything else 0 未定级)
LEVELS = ((3, ("01", "02", "03", "04", "12")), (2, ("05", "06", "07", "13")), (1, ("08", "09", "10", "14")))


@piece("hosp_lv")
def inst_level(hosp_lv):
    """The institution's level 0..3 from its ``hosp_lv`` code (:data:`LEVELS`)."""
    return case(*((hosp_lv.isin(*codes), n) for n, codes in LEVELS), default=0)


@piece("birth", "d")
def age_years(birth, d):
    """Completed years on date ``d`` (born 2020-03-02: 5 on 2026-03-01, 6 on 2026-03-02)."""
    return year(d) - year(birth) - case((month(d) * 100 + day(d) < month(birth) * 100 + day(birth), 1), default=0)


@piece("birth", "d")
def age_days(birth, d):
    """Days since birth on date ``d``."""
    return day_diff(birth, d)


# ============================================================================ which rule applies


@piece(
    "valid_from",
    "valid_to",
    "scope_med_types",
    "scope_levels",
    "scope_institutions",
    "day",
    "med_type",
    "inst_level",
    "fixmedins_code",
)
def rule_in_force(
    valid_from, valid_to, scope_med_types, scope_levels, scope_institutions, day, med_type, inst_level, fixmedins_code
):
    """A rule is in force on ``day`` (validity dates inclusive, either may be open) and its scope
    (visit types, institution levels, institutions; each NULL: any) admits the visit."""
    return (
        (valid_from.is_null() | (day >= valid_from))
        & (valid_to.is_null() | (day <= valid_to))
        & (scope_med_types.is_null() | list_contains(scope_med_types, med_type))
        & (scope_levels.is_null() | list_contains(scope_levels, inst_level))
        & (scope_institutions.is_null() | list_contains(scope_institutions, fixmedins_code))
    )


def rule_in_force_sql(r: str, day: str, v: str) -> str:
    """:data:`rule_in_force` for rule row ``r`` (``r_all`` columns) on ``day``, visit columns of ``v``."""
    return rule_in_force.sql(
        f"{r}.valid_from",
        f"{r}.valid_to",
        f"{r}.scope_med_types",
        f"{r}.scope_levels",
        f"{r}.scope_institutions",
        day,
        f"{v}.med_type",
        f"{v}.inst_level",
        f"{v}.fixmedins_code",
    )


def rule_applies_py(rule: Any, day: dt.date, line: dict) -> bool:
    """:data:`rule_in_force` for a :class:`medaudit.library.Rule` and a line (a dict of ``lines`` columns)."""
    sc = rule.scope
    return (
        rule_in_force.py(
            rule.valid_from,
            rule.valid_to,
            sc.get("med_types"),
            sc.get("hosp_levels"),
            sc.get("institutions"),
            day,
            line["med_type"],
            line["inst_level"],
            line["fixmedins_code"],
        )
        is True
    )


# ============================================================================ the catalogue


@piece("inst_level", "lv1_pric", "lv2_pric", "lv3_pric")
def level_price(inst_level, lv1_pric, lv2_pric, lv3_pric):
    """The price of a level's column: level 3 and 2 their own, 1 and 0 (未定级) the level-1 one."""
    return case((inst_level.eq(3), lv3_pric), (inst_level.eq(2), lv2_pric), default=lv1_pric)


@piece("begndate", "enddate", "day")
def catalogue_in_force(begndate, enddate, day):
    """A catalogue row is in force on ``day`` (both ends inclusive, either may be open)."""
    return (begndate.is_null() | (begndate <= day)) & (enddate.is_null() | (enddate >= day))


def catalogue_in_force_sql(h: str, line: str) -> str:
    """SQL condition: catalogue row ``h`` (of ``hilist``) is the line's code, in force on its fee date."""
    return f"{h}.hilist_code = {line}.hilist_code AND " + catalogue_in_force.sql(
        f"{h}.begndate", f"{h}.enddate", f"{line}.fee_date"
    )


def catalogue_caps_sql(lines: str = "lines", hilist: str = "hilist") -> str:
    """SELECT: for each (code, fee date) of ``lines`` with catalogue (``hilist``) rows in force
    that day, the highest cap of each level column (``cap_lv1``, ``cap_lv2``, ``cap_lv3``). A type
    LEFT JOINs it on ``hilist_code`` and ``fee_date`` and reads a line's cap with
    :func:`catalogue_cap_sql`. A join, not a correlated subquery per line: DuckDB decorrelated
    those into copies of every matched line (price_cap 0.5 -> 1.3 CPU s at 1M lines with three of
    them), and Spark refuses an aggregate over outer and inner columns (:mod:`medaudit.spark`)."""
    return f"""SELECT d.hilist_code, d.fee_date, max(h.lv1_pric) AS cap_lv1, max(h.lv2_pric) AS cap_lv2,
                      max(h.lv3_pric) AS cap_lv3
               FROM (SELECT DISTINCT l.hilist_code, l.fee_date FROM {lines} l
                     SEMI JOIN {hilist} k ON k.hilist_code = l.hilist_code) d
               JOIN {hilist} h ON {catalogue_in_force_sql("h", "d")}
               GROUP BY d.hilist_code, d.fee_date"""


def catalogue_caps_join(line: str, caps: str = "k", lines: str = "lines", hilist: str = "hilist") -> str:
    """``LEFT JOIN`` of :func:`catalogue_caps_sql` as ``caps`` to the line row ``line`` (on its
    code and fee date): what a type writes after its FROM to read :func:`catalogue_cap_sql`."""
    return (
        f"LEFT JOIN ({catalogue_caps_sql(lines, hilist)}) {caps} "
        f"ON {caps}.hilist_code = {line}.hilist_code AND {caps}.fee_date = {line}.fee_date"
    )


def catalogue_cap_sql(line: str, caps: str) -> str:
    """SQL scalar: the catalogue (``hilist``) price cap of a line's code for its institution's
    level, in force on its fee date, from the line's row ``caps`` of :func:`catalogue_caps_sql`;
    NULL when the catalogue has none. Several rows in force: the highest cap (the hospital's
    benefit of the doubt). The level is the line's, so the highest of the level's column is the
    highest of the level's prices."""
    return f"({level_price.sql(f'{line}.inst_level', f'{caps}.cap_lv1', f'{caps}.cap_lv2', f'{caps}.cap_lv3')})"


def catalogue_cap(rows: Iterable[tuple], day: dt.date, level: int) -> Decimal | None:
    """:func:`catalogue_cap_sql` over a code's catalogue rows ``(begndate, enddate, lv1, lv2, lv3)``."""
    best = None
    for b, e, l1, l2, l3 in rows:
        if catalogue_in_force.py(b, e, day) is True:
            v = level_price.py(level, l1, l2, l3)
            if v is not None and (best is None or v > best):
                best = v
    return best


# ============================================================================ excess units, latest first


def excess_allocation_sql(src: str, group_cols: str) -> str:
    """Give each line of ``src`` its share of a group's excess, latest lines first.

    ``src`` has, per line: the group columns, ``bkkp_sn``, ``fee_ocur_time``, ``cnt``,
    ``pric``, ``amt``, ``deductible`` and ``excess`` (the group's excess units, same on every
    line of the group). Adds ``excess_units`` (units of this line that are excess) and
    ``claim`` (the mode's claim, :data:`excess_qty_claim`, of those units at ``pric``).
    """
    return f"""
        SELECT *,
               {excess_qty_claim.sql("excess_units", "pric", "deductible", "amt")} AS claim
        FROM (
            SELECT *, greatest(least(cnt, excess - (sum(cnt) OVER w - cnt)), 0) AS excess_units
            FROM {src}
            WINDOW w AS (PARTITION BY {group_cols} ORDER BY fee_ocur_time DESC, bkkp_sn DESC
                         ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW)
        )"""


def excess_allocation(rows: list[dict], key: Callable[[dict], Any]) -> None:
    """:func:`excess_allocation_sql` over dicts: sets ``excess_units`` and ``claim`` on each row
    (rows carry ``excess``, the group's excess units; ``key`` gives the group), latest lines first."""
    groups: dict[Any, list[dict]] = {}
    for r in rows:
        groups.setdefault(key(r), []).append(r)
    claim = excess_qty_claim.py
    for grp in groups.values():
        grp.sort(key=lambda r: (r["fee_ocur_time"], r["bkkp_sn"]), reverse=True)
        cum = ZERO
        for r in grp:
            cum += r["cnt"]
            units = _greatest(_least(r["cnt"], _sub(r["excess"], cum - r["cnt"])), ZERO)
            r["excess_units"] = units
            r["claim"] = claim(units, r["pric"], r["deductible"], r["amt"])


# ============================================================================ matching items to lines

#: how a rule item names the lines it is about, in the order a type that takes a line once per
#: rule prefers them: the exact code, then a prefix of it, then every line (a rule without items)
MATCH_ORDER = ("code", "prefix", "all")


def matched_sql(p: str, lines: str, has_code: bool, has_prefix: bool, has_all: bool, dedupe: bool) -> str:
    """Lines x items of the parameter table ``p`` (``rule_key, code, prefix, match_all, ...``),
    rules in force and in scope (:data:`rule_in_force`, ``r_all``), a line once per rule in
    :data:`MATCH_ORDER` when ``dedupe``."""
    pri = {k: n for n, k in enumerate(MATCH_ORDER, start=1)}
    # each item row carries its rule's validity and scope (r_all is joined to the small item
    # table, not to the lines): the check is then a filter on the matched rows, evaluated where
    # the type's own joins have already cut them down (joined to the lines, it ran on every line
    # before them: 0.65 s -> 0.08 s for after_death at 1M lines)
    pb = (
        f"(SELECT p.*, r.valid_from AS __vf, r.valid_to AS __vt, r.scope_med_types AS __smt, "
        f"r.scope_levels AS __sl, r.scope_institutions AS __si FROM {p} p JOIN r_all r ON r.rule_key = p.rule_key)"
    )
    branches = []
    if has_code:
        branches.append(
            f"SELECT l.*, p.* EXCLUDE (code, prefix, match_all), {pri['code']} AS __pri "
            f"FROM {lines} l JOIN {pb} p ON l.hilist_code = p.code"
        )
    if has_prefix:
        branches.append(
            f"""SELECT l.*, p.* EXCLUDE (code, prefix, match_all), {pri["prefix"]} AS __pri
                FROM (SELECT l.*, k.n AS __n, left(l.hilist_code, k.n) AS __head FROM {lines} l,
                      (SELECT DISTINCT length(prefix) AS n FROM {p} WHERE prefix IS NOT NULL) k) l
                -- a code shorter than a prefix length gives itself as its head: the length must agree too
                JOIN {pb} p ON p.prefix = l.__head AND length(p.prefix) = l.__n"""
        )
    if has_all:
        branches.append(
            f"SELECT l.*, p.* EXCLUDE (code, prefix, match_all), {pri['all']} AS __pri "
            f"FROM {lines} l JOIN {pb} p ON p.match_all"
        )
    if not branches:
        branches.append(
            f"SELECT l.*, p.* EXCLUDE (code, prefix, match_all), 0 AS __pri FROM {lines} l JOIN {pb} p ON FALSE"
        )
    union = "\nUNION ALL BY NAME\n".join(branches)
    once = "QUALIFY row_number() OVER (PARTITION BY x.rule_key, x.bkkp_sn ORDER BY x.__pri) = 1" if dedupe else ""
    in_force = rule_in_force.sql(
        "x.__vf",
        "x.__vt",
        "x.__smt",
        "x.__sl",
        "x.__si",
        "x.fee_date",
        "x.med_type",
        "x.inst_level",
        "x.fixmedins_code",
    )
    return f"""
        SELECT x.* EXCLUDE (__pri, __vf, __vt, __smt, __sl, __si{", __n, __head" if has_prefix else ""}) FROM ({union}) x
        WHERE {in_force}
        {once}
        """


@dataclass
class ItemEntry:
    """One item of one rule, as :func:`matched_sql` reads a row of the parameter table."""

    rule_key: int
    rule: Any  # medaudit.library.Rule
    #: what a matched row adds to its line: the item's resolved parameters, rule key, item name
    row: dict[str, Any]
    #: the rule has a validity period or a scope (else it is in force for every line)
    bounded: bool = True


@dataclass
class ItemIndex:
    """:func:`matched_sql` in memory: a type's rule items indexed by code and prefix."""

    dedupe: bool
    by_code: dict[str, list[ItemEntry]] = field(default_factory=dict)
    by_prefix: dict[str, list[ItemEntry]] = field(default_factory=dict)
    match_all: list[ItemEntry] = field(default_factory=list)
    prefix_lengths: list[int] = field(default_factory=list)
    _candidates: dict[str, tuple[ItemEntry, ...]] = field(default_factory=dict)

    def add(self, how: str, key: str | None, entry: ItemEntry) -> None:
        if how == "code":
            assert key is not None  # a code or prefix entry has its key; only "all" has none
            self.by_code.setdefault(key, []).append(entry)
        elif how == "prefix":
            assert key is not None
            self.by_prefix.setdefault(key, []).append(entry)
            self.prefix_lengths = sorted({*self.prefix_lengths, len(key)})
        else:
            self.match_all.append(entry)
        self._candidates.clear()

    def candidates(self, code: str) -> tuple[ItemEntry, ...]:
        """The entries that can match ``code``, in :data:`MATCH_ORDER` (found once per code)."""
        found = self._candidates.get(code)
        if found is None:
            lst = list(self.by_code.get(code, ()))
            for n in self.prefix_lengths:
                lst.extend(self.by_prefix.get(code[:n], ()))
            lst.extend(self.match_all)
            found = self._candidates[code] = tuple(lst)
        return found

    def matched(self, lines: list[dict]) -> list[dict]:
        """Line x item rows in force and in scope (a line once per rule when the type dedupes)."""
        out = []
        known = self._candidates
        dedupe = self.dedupe
        for ln in lines:
            cands = known.get(ln["hilist_code"])
            if cands is None:
                cands = self.candidates(ln["hilist_code"])
            if not cands:
                continue
            seen: set[int] = set()
            for e in cands:
                if dedupe and e.rule_key in seen:
                    continue
                if e.bounded and not rule_applies_py(e.rule, ln["fee_date"], ln):
                    continue
                seen.add(e.rule_key)
                out.append({**ln, **e.row})
        return out


# ============================================================================ line checks, declared once


@dataclass(frozen=True, eq=False)
class Col(Expr):
    """A column of a matched row: ``name`` in SQL, ``m["name"]`` in Python."""

    name: str

    def sql(self) -> str:
        return '"' + self.name.replace('"', '""') + '"'  # quoted: a parameter may be named like a keyword ("group")

    def py(self) -> str:
        return f"m[{self.name!r}]"


def col(name: str) -> Col:
    return Col(name)


@dataclass(frozen=True, eq=False)
class Var(Expr):
    """A lambda's parameter (:func:`join_list`): the same name in SQL and in Python."""

    name: str

    def sql(self) -> str:
        return self.name

    def py(self) -> str:
        return self.name


@dataclass(frozen=True, eq=False)
class JoinList(Expr):
    """SQL ``array_to_string(list_transform(lst, lambda x: fn(x)), sep)``: NULL elements are
    skipped, a list whose every element is NULL gives NULL, an empty list gives ''."""

    lst: Expr
    sep: str
    var: Var
    body: Expr | None

    def sql(self) -> str:
        lst = self.lst.sql()
        if self.body is not None:
            lst = f"list_transform({lst}, lambda {self.var.name}: {self.body.sql()})"
        return f"array_to_string({lst}, {Lit(self.sep).sql()})"

    def py(self) -> str:
        if self.body is None:
            return f"_join_list({self.lst.py()}, {self.sep!r})"
        return f"_join_list({self.lst.py()}, {self.sep!r}, lambda {self.var.name}: {self.body.py()})"


_LAMBDA_VARS = (f"_x{n}" for n in itertools.count())  # a fresh name per lambda


def join_list(lst: Any, sep: str, fn: Callable[[Expr], Any] | None = None) -> Expr:
    """The elements of list ``lst``, each through ``fn`` (an expression of it) when given, joined by ``sep``."""
    var = Var(next(_LAMBDA_VARS))
    return JoinList(_e(lst), sep, var, None if fn is None else _e(fn(var)))


def _join_list(lst, sep, fn=None):
    if lst is None:
        return None
    parts = [x for x in (lst if fn is None else map(fn, lst)) if x is not None]
    if lst and not parts:
        return None
    return sep.join(parts)


@dataclass(frozen=True, eq=False)
class Concat(Expr):
    """SQL ``a || b || ...``: NULL when any part is NULL."""

    parts: tuple

    def sql(self) -> str:
        return "(" + " || ".join(p.sql() for p in self.parts) + ")"

    def py(self) -> str:
        return f"_cat({', '.join(p.py() for p in self.parts)})"


def cat(*parts: Any) -> Expr:
    return Concat(tuple(_e(p) for p in parts))


def _cat(*xs):
    return None if any(x is None for x in xs) else "".join(str(x) for x in xs)


_HELPERS["_cat"] = _cat
_HELPERS["_join_list"] = _join_list


def sql_function(name: str, py: Callable[..., Any], strict: bool = True) -> Callable[..., Expr]:
    """A SQL function or macro (``name``) and its Python twin ``py`` as one expression builder.
    ``strict``: NULL in any argument gives NULL (else ``py`` is given the None, as a CASE macro is)."""
    helper = f"_fn_{name}"

    def call(*args):
        return None if strict and any(a is None for a in args) else py(*args)

    _HELPERS[helper] = call
    _FUNCS[name] = helper
    return lambda *args: Call(name, *args)


def compile_row(expr: Expr, name: str = "f", args: tuple[str, ...] = ()) -> Callable[..., Any]:
    """``expr`` over a matched row's columns (:class:`Col`) as a Python function of the row
    (and of ``args``, names the expression's Python text reads besides ``m``)."""
    scope = dict(_HELPERS)
    params = ", ".join(("m", *args))
    exec(compile(f"def {name}({params}):\n    return {expr.py()}\n", f"<semantics.{name}>", "exec"), scope)
    return scope[name]


# ============================================================================ the catalogue's word on a code


def date_text(x: Any) -> Expr:
    """A date as 2026-03-02 (SQL ``strftime(x, '%Y-%m-%d')``; NULL gives NULL)."""
    return Call("strftime", x, "%Y-%m-%d")


def _strftime(d, fmt):
    return None if d is None or fmt is None else d.strftime(fmt)


_FUNCS["strftime"] = "_strftime"
_HELPERS["_strftime"] = _strftime


@piece("begndate", "enddate")
def catalogue_span(begndate, enddate):
    """A catalogue row's validity as evidence prints it: ``2020-01-01 至 2025-12-31``, an open end
    left empty (``2026-01-01 至 ``)."""
    return cat(coalesce(date_text(begndate), ""), " 至 ", coalesce(date_text(enddate), ""))


#: what joins a code's spans (:func:`catalogue_spans`), in date order
SPAN_SEP = "、"


def catalogue_in_force_days_sql(lines: str = "lines", hilist: str = "hilist") -> str:
    """SELECT: the (``hilist_code``, ``fee_date``) pairs of ``lines`` that have a catalogue
    (``hilist``) row in force that day (:data:`catalogue_in_force`); a pair not listed has none.
    A semi join of the distinct pairs: no copy of the lines per catalogue row, nothing correlated."""
    return f"""SELECT d.hilist_code, d.fee_date
               FROM (SELECT DISTINCT l.hilist_code, l.fee_date FROM {lines} l) d
               SEMI JOIN {hilist} h ON {catalogue_in_force_sql("h", "d")}"""


def catalogue_spans_sql(lines: str = "lines", hilist: str = "hilist") -> str:
    """SELECT: for each code of ``lines`` the catalogue (``hilist``) holds, ``spans``: the distinct
    :data:`catalogue_span` of its rows, sorted, joined by :data:`SPAN_SEP` (every run of the code)."""
    span = catalogue_span.sql("begndate", "enddate")
    return f"""SELECT hilist_code, string_agg(DISTINCT span, {Lit(SPAN_SEP).sql()} ORDER BY span) AS spans
               FROM (SELECT hilist_code, {span} AS span FROM {hilist}
                     WHERE hilist_code IN (SELECT hilist_code FROM {lines}))
               GROUP BY hilist_code"""


def catalogue_holds(rows: Iterable[tuple], day: dt.date) -> bool:
    """:func:`catalogue_in_force_days_sql` over a code's catalogue rows ``(begndate, enddate, ...)``:
    some row is in force on ``day``."""
    return any(catalogue_in_force.py(b, e, day) is True for b, e, *_ in rows)


def catalogue_spans(rows: Iterable[tuple]) -> str | None:
    """:func:`catalogue_spans_sql` over a code's catalogue rows ``(begndate, enddate, ...)``
    (None when it has none)."""
    return SPAN_SEP.join(sorted({catalogue_span.py(b, e) for b, e, *_ in rows})) or None
