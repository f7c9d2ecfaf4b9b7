"""Each shared definition (medaudit.semantics) gives the same answer in DuckDB and in Python.

Random inputs go through the piece's SQL (over a temp table, with the macros of a medaudit
connection) and through its Python function; the answers must be equal row by row. The
strategies lean on the boundaries: birthdays and 29 February, amounts at 0.005, class C
items, self-pay flags, negative and NULL values.
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import duckdb
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from medaudit import db, engine, semantics
from medaudit.library import Item, Rule
from medaudit.prealert.fast.rules import compile_rules, matched
from medaudit.types import REGISTRY

SETTINGS = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@pytest.fixture(scope="module")
def con():
    c = duckdb.connect()
    db.install_macros(c)
    return c


def insert_rows(con, table: str, rows: list[tuple]) -> None:
    """``rows`` into ``table`` in one statement, every value a parameter (DuckDB's executemany runs
    one statement per row: most of a property test's time went there)."""
    if rows:
        one = "(" + ", ".join("?" * len(rows[0])) + ")"
        con.execute(f"INSERT INTO {table} VALUES {', '.join(one for _ in rows)}", [v for r in rows for v in r])


def through_sql(con, columns: dict[str, str], rows: list[tuple], expr: str) -> list:
    """``expr`` over ``rows`` (typed ``columns``), in row order."""
    cols = ", ".join(f'"{k}" {t}' for k, t in columns.items())
    con.execute(f"CREATE OR REPLACE TEMP TABLE t (__i INTEGER, {cols})")
    insert_rows(con, "t", [(i, *r) for i, r in enumerate(rows)])
    return [r[0] for r in con.execute(f"SELECT {expr} FROM t ORDER BY __i").fetchall()]


def dec4(lo=-100, hi=1000):
    # 4 decimals as DECIMAL(18,4) holds them, with the 0.005 / 0.0050 boundaries well represented
    return st.one_of(
        st.decimals(lo, hi, places=4, allow_nan=False, allow_infinity=False),
        st.sampled_from(
            [
                Decimal("0.0050"),
                Decimal("0.0049"),
                Decimal("0.0051"),
                Decimal("0"),
                Decimal("-0.0050"),
                Decimal("100.0050"),
            ]
        ),
    )


maybe = lambda s: st.one_of(st.none(), s)  # noqa: E731


@SETTINGS
@given(
    st.lists(
        st.tuples(
            maybe(dec4()),
            maybe(dec4()),
            maybe(st.sampled_from(["01", "02", "03", "04"])),
            maybe(st.sampled_from(["0", "1", "2"])),
        ),
        max_size=30,
    )
)
def test_ownpay_and_deductible(con, rows):
    cols = {"amt": "DECIMAL(18,4)", "ownpay0": "DECIMAL(18,4)", "chrgitm_lv": "VARCHAR", "hosp_appr_flag": "VARCHAR"}
    assert through_sql(con, cols, rows, semantics.deductible.sql(*cols)) == [semantics.deductible(*r) for r in rows]
    assert through_sql(con, cols, [r for r in rows], semantics.ownpay.sql("amt", "ownpay0")) == [
        semantics.ownpay(r[0], r[1]) for r in rows
    ]


@SETTINGS
@given(
    st.lists(maybe(st.one_of(st.sampled_from([f"{n:02d}" for n in range(0, 16)]), st.text(max_size=3))), max_size=30)
)
def test_institution_level(con, rows):
    rows = [(x,) for x in rows]
    assert through_sql(con, {"hosp_lv": "VARCHAR"}, rows, engine.LEVEL_SQL) == [
        semantics.inst_level(x) for (x,) in rows
    ]


def _dates():
    base = st.dates(dt.date(1900, 1, 1), dt.date(2030, 12, 31))
    feb29 = st.sampled_from([dt.date(2000, 2, 29), dt.date(2024, 2, 29), dt.date(2023, 2, 28), dt.date(2023, 3, 1)])
    return st.one_of(base, feb29)


@SETTINGS
@given(
    st.lists(
        st.one_of(
            st.tuples(maybe(_dates()), maybe(_dates())),
            # the day before, of and after a birthday
            st.builds(
                lambda b, y, k: (b, _shift(b, y) + dt.timedelta(days=k)),
                _dates(),
                st.integers(0, 90),
                st.sampled_from([-1, 0, 1]),
            ),
        ),
        max_size=30,
    )
)
def test_age_in_completed_years_and_days(con, rows):
    cols = {"birth": "DATE", "d": "DATE"}
    assert through_sql(con, cols, rows, "age_years(birth, d)") == [semantics.age_years(*r) for r in rows]
    assert through_sql(con, cols, rows, semantics.age_days.sql("birth", "d")) == [semantics.age_days(*r) for r in rows]


def _shift(d: dt.date, years: int) -> dt.date:
    try:
        return d.replace(year=min(d.year + years, 9000))
    except ValueError:  # 29 February in a common year
        return d.replace(year=min(d.year + years, 9000), day=28)


@SETTINGS
@given(st.lists(st.tuples(maybe(dec4(-10, 500)), dec4(0, 500), dec4(-10, 500)), max_size=30))
def test_fund_share_claim(con, rows):
    cols = {"over": "DECIMAL(38,8)", "deductible": "DECIMAL(18,4)", "amt": "DECIMAL(18,4)"}
    got = through_sql(con, cols, rows, semantics.fund_share_claim.sql("over", "deductible", "amt"))
    assert got == [semantics.fund_share_claim(*r) for r in rows]


@SETTINGS
@given(
    st.lists(
        st.tuples(
            maybe(st.booleans()),
            maybe(dec4(-5, 50)),
            maybe(dec4(0, 500)),
            dec4(0, 500),
            dec4(-10, 500),
            maybe(dec4(-100, 500)),
            maybe(st.decimals(0, 1, places=4)),
        ),
        max_size=30,
    )
)
def test_claim_of_each_mode(con, rows):
    """The claim of each deduction mode (what a type's declared mode makes of its hit line):
    SQL and Python agree, NULLs, a line that does not carry money and negative inputs included."""
    cols = {
        "carries": "BOOLEAN",
        "excess_units": "DECIMAL(18,4)",
        "pric": "DECIMAL(18,4)",
        "deductible": "DECIMAL(18,4)",
        "amt": "DECIMAL(18,4)",
        "overcharge": "DECIMAL(38,8)",
        "rate": "DECIMAL(18,4)",
    }
    names = list(cols)
    for mode, piece in semantics.MODE_CLAIMS.items():
        got = through_sql(con, cols, rows, piece.sql(*piece.args))
        want = [piece(*(r[names.index(a)] for a in piece.args)) for r in rows]
        assert got == want, mode


def test_mode_claims_follow_the_spec():
    """The modes as rule-semantics.md states them, on one line (deductible 80 of 100)."""
    d, a = Decimal("80"), Decimal("100")
    assert semantics.whole_line_claim(True, d) == d and semantics.whole_line_claim(False, d) == 0
    assert semantics.whole_line_claim(None, d) == 0  # a NULL condition is not true
    assert semantics.excess_qty_claim(Decimal(2), Decimal(10), d, a) == Decimal("16")  # 2 x 10 x 0.8
    assert semantics.price_diff_claim(Decimal(30), d, a) == Decimal("24")
    assert semantics.price_diff_claim(Decimal(-1), d, a) == 0
    assert semantics.pct_claim(True, Decimal("0.5"), d) == Decimal("40")
    assert semantics.whole_visit_claim(d) == d and semantics.no_claim() == 0


#: types whose claim is not their mode's piece alone (see each module): ``sql`` takes a rule's own
#: amount when its query gives one; ``supply_days_limit`` allocates on the line scaled by its days
#: (``excess_qty`` there) and scales the claim back
OWN_CLAIM = {"sql", "supply_days_limit"}


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_each_type_claims_by_its_declared_mode(name):
    """One meaning, one place: a type's money comes from its declared mode. Every claim helper a
    type module calls (``claim``, ``claim_of``, ``line_check``) names the type's own mode, an
    excess allocation is the ``excess_qty`` mode's, and no claim column is written by hand."""
    import ast
    import importlib
    import inspect

    rt = REGISTRY[name]
    assert rt.mode in semantics.MODE_CLAIMS
    src = inspect.getsource(importlib.import_module(f"medaudit.types.{name}"))
    modes = []
    for node in ast.walk(ast.parse(src)):
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)):
            continue
        fn = node.func.id
        if fn in ("claim", "claim_of"):
            modes.append(ast.literal_eval(node.args[0]))
        elif fn == "line_check":
            modes.append(next(ast.literal_eval(k.value) for k in node.keywords if k.arg == "mode"))
        elif fn in ("excess_allocation", "py_excess_allocation"):
            modes.append("excess_qty")
        elif fn == "whole_visit_hits":
            modes.append("whole_visit")
    assert all(m == rt.mode for m in modes), (rt.mode, modes)
    by_hand = [ln.strip() for ln in src.splitlines() if " AS claim" in ln and "{claim(" not in ln]
    if name not in OWN_CLAIM:
        assert not by_hand
        assert modes, "the type's claim does not come from its mode"


CODES = st.sampled_from(["11", "21", "41", "X01", "X02", "H1", "H2"])


@SETTINGS
@given(
    st.lists(
        st.tuples(
            maybe(_dates()),
            maybe(_dates()),
            maybe(st.lists(st.sampled_from(["11", "21", "41"]), max_size=2)),
            maybe(st.lists(st.integers(0, 3), max_size=2)),
            maybe(st.lists(st.sampled_from(["H1", "H2"]), max_size=2)),
            _dates(),
            maybe(st.sampled_from(["11", "21", "41"])),
            st.integers(0, 3),
            maybe(st.sampled_from(["H1", "H2"])),
        ),
        max_size=30,
    )
)
def test_rule_validity_and_scope(con, rows):
    cols = {
        "vf": "DATE",
        "vt": "DATE",
        "mts": "VARCHAR[]",
        "lvs": "INTEGER[]",
        "insts": "VARCHAR[]",
        "d": "DATE",
        "med_type": "VARCHAR",
        "inst_level": "INTEGER",
        "fixmedins_code": "VARCHAR",
    }
    got = through_sql(con, cols, rows, f"coalesce({semantics.rule_in_force.sql(*cols)}, FALSE)")
    assert got == [semantics.rule_in_force(*r) is True for r in rows]


@SETTINGS
@given(
    st.lists(
        st.tuples(maybe(_dates()), maybe(_dates()), maybe(dec4(0, 50)), maybe(dec4(0, 50)), maybe(dec4(0, 50))),
        max_size=6,
    ),
    st.lists(st.tuples(_dates(), st.integers(0, 3)), min_size=1, max_size=10),
)
def test_catalogue_cap(con, catalogue, lines):
    con.execute(
        "CREATE OR REPLACE TEMP TABLE hilist (hilist_code VARCHAR, begndate DATE, enddate DATE, "
        "lv1_pric DECIMAL(18,4), lv2_pric DECIMAL(18,4), lv3_pric DECIMAL(18,4))"
    )
    if catalogue:
        insert_rows(con, "hilist", [("C", *r) for r in catalogue])
    rows = [("C", d, lv) for d, lv in lines]
    through_sql(con, {"hilist_code": "VARCHAR", "fee_date": "DATE", "inst_level": "INTEGER"}, rows, "1")
    got = [
        r[0]
        for r in con.execute(
            f"SELECT {semantics.catalogue_cap_sql('t', 'k')} FROM t {semantics.catalogue_caps_join('t', 'k', lines='t')} "
            "ORDER BY t.__i"
        ).fetchall()
    ]
    assert got == [semantics.catalogue_cap(catalogue, d, lv) for d, lv in lines]
    con.execute("DROP TABLE hilist")


#: catalogue codes for the status tests: "N" is never in the catalogue
_CAT_CODES = ["C1", "C2", "N"]


def _catalogue_tables(con, catalogue):
    con.execute("CREATE OR REPLACE TEMP TABLE hilist (hilist_code VARCHAR, begndate DATE, enddate DATE)")
    insert_rows(con, "hilist", catalogue)


def _rows_of(catalogue, code):
    return [(b, e) for c, b, e in catalogue if c == code]


@SETTINGS
@given(
    st.lists(st.tuples(st.sampled_from(_CAT_CODES[:2]), maybe(_dates()), maybe(_dates())), max_size=6),
    st.lists(st.tuples(st.sampled_from(_CAT_CODES), _dates()), min_size=1, max_size=10),
)
def test_catalogue_in_force_and_spans(con, catalogue, lines):
    """The catalogue's word on a code: in force on the day (a semi join of the lines' distinct
    code-day pairs against catalogue_holds) and its spans for evidence (string_agg against
    catalogue_spans), open ends and repeated rows included."""
    _catalogue_tables(con, catalogue)
    through_sql(con, {"hilist_code": "VARCHAR", "fee_date": "DATE"}, lines, "1")
    days = semantics.catalogue_in_force_days_sql("t", "hilist")
    spans = semantics.catalogue_spans_sql("t", "hilist")
    got = con.execute(
        f"""SELECT d.hilist_code IS NOT NULL, s.spans FROM t
            LEFT JOIN ({days}) d ON d.hilist_code = t.hilist_code AND d.fee_date = t.fee_date
            LEFT JOIN ({spans}) s ON s.hilist_code = t.hilist_code ORDER BY t.__i"""
    ).fetchall()
    want = [
        (semantics.catalogue_holds(_rows_of(catalogue, c), d), semantics.catalogue_spans(_rows_of(catalogue, c)))
        for c, d in lines
    ]
    assert got == want
    con.execute("DROP TABLE hilist")


class _CatalogueContext:
    """What not_in_catalog's evaluator reads of a request's context: the catalogue."""

    def __init__(self, catalogue):
        self.catalogue = catalogue

    def has_catalog(self):
        return bool(self.catalogue)

    def catalog_rows(self, code):
        return _rows_of(self.catalogue, code)


@SETTINGS
@given(
    st.lists(st.tuples(st.sampled_from(_CAT_CODES[:2]), maybe(_dates()), maybe(_dates())), max_size=5),
    st.lists(
        st.tuples(st.sampled_from(_CAT_CODES), _dates(), st.sampled_from([Decimal(0), Decimal("10.5")])),
        max_size=10,
    ),
)
def test_not_in_catalog_query_and_evaluator_agree(con, catalogue, rows):
    """not_in_catalog declared once: its generated query over DuckDB and its generated evaluator
    over the same rows and catalogue give the same hits and evidence (an empty catalogue flags
    nothing, deductible 0 is not flagged)."""
    from medaudit.types.not_in_catalog import RULE_TYPE

    ms = [
        {
            "rule_key": 0,
            "mdtrt_id": f"V{i}",
            "bkkp_sn": f"L{i}",
            "hilist_code": c,
            "fee_date": d,
            "deductible": ded,
            "cnt": Decimal(1),
            "amt": Decimal("10.5"),
            "list_type": "101",
            "hilist_name": None,
            "item_name": "x",
        }
        for i, (c, d, ded) in enumerate(rows)
    ]
    _catalogue_tables(con, catalogue)
    con.execute(
        "CREATE OR REPLACE TEMP TABLE mt (rule_key INTEGER, mdtrt_id VARCHAR, bkkp_sn VARCHAR, hilist_code VARCHAR, "
        "fee_date DATE, deductible DECIMAL(18,4), cnt DECIMAL(18,4), amt DECIMAL(18,4), list_type VARCHAR, "
        "hilist_name VARCHAR, item_name VARCHAR)"
    )
    insert_rows(con, "mt", [tuple(m.values()) for m in ms])
    query = RULE_TYPE.sql({"m": "mt", "lines": "mt", "hilist": "hilist"})
    got = sorted(con.execute(query).fetchall())
    want = sorted(tuple(h)[:8] for h in RULE_TYPE.evaluate(_CatalogueContext(catalogue), ms))
    assert got == want
    assert not catalogue or not got or all(h[5] > 0 for h in got)
    con.execute("DROP TABLE hilist")


@SETTINGS
@given(
    st.lists(
        st.tuples(
            st.integers(0, 2), st.integers(0, 5), dec4(Decimal("0.0001"), 5), dec4(0, 50), dec4(0, 100), dec4(0, 100)
        ),
        min_size=1,
        max_size=25,
    ),
    st.lists(maybe(dec4(-2, 12)), min_size=3, max_size=3),
)
def test_excess_allocation_latest_lines_first(con, rows, excess):
    t0 = dt.datetime(2026, 3, 2, 8)
    data = []
    for i, (g, minute, cnt, pric, amt, ded) in enumerate(rows):
        data.append(
            {
                "g": g,
                "bkkp_sn": f"L{i:03d}",
                "fee_ocur_time": t0 + dt.timedelta(minutes=minute),
                "cnt": cnt,
                "pric": pric,
                "amt": amt,
                "deductible": ded,
                "excess": excess[g],
            }
        )
    cols = {
        "g": "INTEGER",
        "bkkp_sn": "VARCHAR",
        "fee_ocur_time": "TIMESTAMP",
        "cnt": "DECIMAL(18,4)",
        "pric": "DECIMAL(18,4)",
        "amt": "DECIMAL(18,4)",
        "deductible": "DECIMAL(18,4)",
        "excess": "DECIMAL(18,4)",
    }
    through_sql(con, cols, [tuple(r.values()) for r in data], "1")
    got = {
        sn: (u, c)
        for sn, u, c in con.execute(
            f"SELECT bkkp_sn, excess_units, claim FROM ({semantics.excess_allocation_sql('t', 'g')})"
        ).fetchall()
    }
    semantics.excess_allocation(data, lambda r: r["g"])
    assert got == {r["bkkp_sn"]: (r["excess_units"], r["claim"]) for r in data}


ITEMS = st.one_of(
    st.builds(lambda c: Item(c, None, None), st.sampled_from(["X01", "X02", "Z1", "A"])),
    st.builds(lambda p: Item(None, p, None), st.sampled_from(["X", "X0", "Z", "A"])),
)


@SETTINGS
@given(
    st.lists(
        st.tuples(st.lists(ITEMS, max_size=3), maybe(_dates()), maybe(st.lists(st.integers(0, 3), max_size=2))),
        min_size=1,
        max_size=4,
    ),
    st.lists(
        st.tuples(st.sampled_from(["X01", "X02", "X1", "Z1", "A", "B"]), _dates(), st.integers(0, 3)),
        min_size=1,
        max_size=12,
    ),
    st.sampled_from(["restrict_gender", "duplicate_line"]),
)  # a line once per rule / once per item
def test_matching_items_to_lines(con, rules, lines, tname):
    rs = []
    for n, (items, vf, levels) in enumerate(rules):
        scope = {"hosp_levels": levels} if levels is not None else {}
        params = {"gender": "1"} if tname == "restrict_gender" else {}
        rs.append(
            Rule(
                f"R{n}", "1", "r", tname, "violation", "", ["pre_alert"], "", params, items, valid_from=vf, scope=scope
            )
        )
    con.execute(
        "CREATE OR REPLACE TEMP TABLE lines (bkkp_sn VARCHAR, hilist_code VARCHAR, fee_date DATE, "
        "inst_level INTEGER, med_type VARCHAR, fixmedins_code VARCHAR)"
    )
    rows = [
        {
            "bkkp_sn": f"L{i}",
            "hilist_code": c,
            "fee_date": d,
            "inst_level": lv,
            "med_type": "11",
            "fixmedins_code": "H1",
        }
        for i, (c, d, lv) in enumerate(lines)
    ]
    insert_rows(con, "lines", [tuple(r.values()) for r in rows])
    engine.register_rules(con, rs)
    engine.build_matched(con, REGISTRY[tname])
    got = sorted(con.execute(f"SELECT rule_key, bkkp_sn FROM m_{tname}").fetchall())
    want = sorted((m["rule_key"], m["bkkp_sn"]) for m in matched(compile_rules(rs)[tname], rows))
    assert got == want


# ---------------------------------------------------------------------------- line checks' evidence pieces


def through_row(con, columns: dict[str, str], rows: list[tuple], expr) -> tuple[list, list]:
    """A line check's expression over ``rows`` through DuckDB and through its compiled Python."""
    f = semantics.compile_row(expr)
    return through_sql(con, columns, rows, expr.sql()), [f(dict(zip(columns, r))) for r in rows]


_CODES = ["310", "390", "340", "410", "510", "11", "21", "24", "28", "29", "91", ""]


@SETTINGS
@given(st.lists(st.tuples(maybe(st.lists(maybe(st.sampled_from(_CODES)), max_size=4))), max_size=20))
def test_join_list(con, rows):
    """A list joined, each element through a lambda: NULL elements skipped, all-NULL gives NULL, [] gives ''."""
    from medaudit.types.line_check import insutype_cn

    cols = {"lst": "VARCHAR[]"}
    named = semantics.join_list(semantics.col("lst"), "、", lambda x: semantics.cat(x, "（", insutype_cn(x), "）"))
    sql, py = through_row(con, cols, rows, named)
    assert sql == py
    sql, py = through_row(con, cols, rows, semantics.join_list(semantics.col("lst"), "、"))
    assert sql == py


@SETTINGS
@given(
    st.lists(
        st.tuples(maybe(st.sampled_from(_CODES)), maybe(st.integers(-(2**40), 2**40)), maybe(_dates())),
        max_size=20,
    )
)
def test_text_of_codes_numbers_and_dates(con, rows):
    """Concatenation renders an integer as SQL does; med_type_cn and insutype_cn as their macros
    (a NULL code too); a column named like a keyword ("group") reads."""
    from medaudit.types.line_check import day, insutype_cn, med_type_cn

    c = semantics.col
    cols = {"code": "VARCHAR", "group": "BIGINT", "d": "DATE"}
    expr = semantics.coalesce(
        semantics.cat(c("group"), " 天，", day(c("d"))), semantics.cat(med_type_cn(c("code"))), "-"
    )
    sql, py = through_row(con, cols, rows, expr)
    assert sql == py
    for fn in (med_type_cn, insutype_cn):
        sql, py = through_row(con, cols, rows, fn(c("code")))
        assert sql == py


@SETTINGS
@given(
    st.lists(st.tuples(maybe(st.sampled_from(["P1", "P2", "P3"])), maybe(_dates()), dec4(-5, 50)), max_size=15),
    st.dictionaries(st.sampled_from(["P1", "P2", "P4"]), maybe(_dates()), max_size=3),
)
def test_line_check_with_a_lookup(con, rows, table):
    """A line check reading another table by a key (Lookup): the generated query over DuckDB and
    the generated evaluator over the same rows and a mapping give the same hits (keys missing
    from the table, NULL keys and NULL values included)."""
    from medaudit.types.line_check import ITEM, Lookup, day, line_check

    c = semantics.col
    when = Lookup("deaths", key="psn_no", value="die_date", py=lambda ctx: ctx)
    query, evaluate = line_check(
        mode="whole_line",
        where=(c("fee_date") > when) & (c("deductible") > 0),
        ev_head=semantics.cat("on ", day(when)),
        ev_line=semantics.cat(ITEM, " ", semantics.coalesce(day(c("fee_date")), "-")),
        lookups=(when,),
    )
    ms = [
        {
            "rule_key": 0,
            "mdtrt_id": f"V{i}",
            "bkkp_sn": f"L{i}",
            "psn_no": p,
            "fee_date": d,
            "deductible": ded,
            "list_type": "101",
            "hilist_name": None,
            "item_name": "x",
            "hilist_code": "C1",
        }
        for i, (p, d, ded) in enumerate(rows)
    ]
    con.execute(
        "CREATE OR REPLACE TEMP TABLE mt (rule_key INTEGER, mdtrt_id VARCHAR, bkkp_sn VARCHAR, psn_no VARCHAR, "
        "fee_date DATE, deductible DECIMAL(18,4), list_type VARCHAR, hilist_name VARCHAR, item_name VARCHAR, "
        "hilist_code VARCHAR)"
    )
    con.execute("CREATE OR REPLACE TEMP TABLE dt (psn_no VARCHAR, die_date DATE)")
    insert_rows(con, "mt", [tuple(m.values()) for m in ms])
    insert_rows(con, "dt", list(table.items()))
    got = sorted(con.execute(query.format(m="mt", deaths="dt")).fetchall())
    want = sorted(tuple(h)[:8] for h in evaluate(table, ms))
    assert got == want


@SETTINGS
@given(
    st.lists(
        st.tuples(
            maybe(
                st.one_of(
                    dec4(0, 2000),
                    st.sampled_from([Decimal(x) for x in ("1.2000", "180.0000", "0.0450", "12.3400", "0.0000")]),
                )
            )
        ),
        max_size=20,
    )
)
def test_price_text(con, rows):
    """A unit price as a clerk reads it (2 decimals, more only when it has them): SQL and Python agree."""
    from medaudit.types.line_check import price_text

    sql, py = through_row(con, {"x": "DECIMAL(18,4)"}, rows, price_text(semantics.col("x")))
    assert sql == py
