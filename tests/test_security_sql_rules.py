"""Attacks on the sql rule type: the check refuses them, and the sandbox leaks nothing anyway.

Each attack is tried three ways: through the rule library (``medaudit rules check`` and every
load), through a screening with a library built around the loader (the engine runs the same
check), and through a screening with that check switched off, where only the sandbox stands
between the query and the secrets planted in a table, a variable, the environment and a file.
"""

import dataclasses

import duckdb
import pytest

from kit import Batch, loaded_db, write_rules
from medaudit.engine import screen
from medaudit.library import Library, RuleLibraryError, load_library
from medaudit.types import sql as sql_type

SECRET = "S3CR3T-7f1e"
ALLOWED = "(allowed: lines, visits, diag, deaths, mdtrt_d"
NOT_TABLE = "is not one a sql rule may read"

# (query, what the refusal says); {csv} is a file holding the secret
ATTACKS = {
    # CTE names resolved by scope: the CTE inside EXISTS does not cover the outer FROM
    "cte_shadow_in_subquery": (
        "SELECT k.key_sha256 AS bkkp_sn, k.key_sha256 AS evidence FROM prealert_api_keys k "
        "WHERE EXISTS (WITH prealert_api_keys AS (SELECT 1) SELECT 1 FROM prealert_api_keys)",
        f"table prealert_api_keys {NOT_TABLE} {ALLOWED}",
    ),
    "cte_defined_later": (
        "WITH a AS (SELECT * FROM prealert_api_keys), prealert_api_keys AS (SELECT 1 AS x) "
        "SELECT l.bkkp_sn, a.key_sha256 AS evidence FROM lines l, a",
        f"table prealert_api_keys {NOT_TABLE}",
    ),
    "cte_reads_its_own_name": (
        "WITH prealert_api_keys AS (SELECT * FROM prealert_api_keys) "
        "SELECT l.bkkp_sn, key_sha256 AS evidence FROM lines l, prealert_api_keys",
        f"table prealert_api_keys {NOT_TABLE}",
    ),
    "subquery_in_select_list": (
        "SELECT bkkp_sn, (SELECT max(key_sha256) FROM prealert_api_keys) AS evidence FROM lines",
        f"table prealert_api_keys {NOT_TABLE}",
    ),
    "lateral_join": (
        "SELECT l.bkkp_sn, k.key_sha256 AS evidence FROM lines l, LATERAL (SELECT key_sha256 FROM prealert_api_keys) k",
        f"table prealert_api_keys {NOT_TABLE}",
    ),
    "recursive_cte": (
        "WITH RECURSIVE r(n, s) AS (SELECT 1, '' UNION ALL SELECT n + 1, key_sha256 FROM r, prealert_api_keys WHERE n < 2) "
        "SELECT l.bkkp_sn, r.s AS evidence FROM lines l, r",
        f"table prealert_api_keys {NOT_TABLE}",
    ),
    "quoted_odd_case": (
        'SELECT bkkp_sn, NULL AS evidence FROM "LINES" UNION ALL SELECT \'L1\', key_sha256 FROM "PREALERT_API_KEYS"',
        f"table PREALERT_API_KEYS {NOT_TABLE}",
    ),
    "unicode_look_alike": (  # Cyrillic і: another name, then a file or a Python variable
        'SELECT bkkp_sn FROM "l\u0456nes"',
        f"table l\u0456nes {NOT_TABLE}",
    ),
    "comments": (
        "SELECT bkkp_sn, NULL AS evidence FROM lines /* lines only */ UNION ALL SELECT 'L1', key_sha256 -- x\n"
        "FROM prealert_api_keys",
        f"table prealert_api_keys {NOT_TABLE}",
    ),
    "schema_qualified": (
        "SELECT l.bkkp_sn, k.key_sha256 AS evidence FROM lines l, main.prealert_api_keys k",
        "table main.prealert_api_keys is not one a sql rule may read: name it without a schema or database",
    ),
    "canonical_name_qualified": (  # main.fee_list_d is every batch's, not the stage's (pre-alert: every person's)
        "SELECT bkkp_sn FROM main.fee_list_d",
        "table main.fee_list_d is not one a sql rule may read: name it",
    ),
    "information_schema": (
        "SELECT l.bkkp_sn, t.table_name AS evidence FROM lines l, information_schema.tables t",
        "table information_schema.tables is not one",
    ),
    "catalog_table_function": (
        "SELECT l.bkkp_sn, t.sql AS evidence FROM lines l, duckdb_tables() t",
        "table function duckdb_tables() is not one a sql rule may call (allowed: unnest, range, generate_series)",
    ),
    "settings_table_function": (
        "SELECT l.bkkp_sn, s.value AS evidence FROM lines l, duckdb_settings() s",
        "table function duckdb_settings() is not one",
    ),
    "current_setting": (
        "SELECT bkkp_sn, current_setting('temp_directory') AS evidence FROM lines",
        "function current_setting() is not one a sql rule may call",
    ),
    "getvariable": (
        "SELECT bkkp_sn, getvariable('secret') AS evidence FROM lines",
        "function getvariable() is not one",
    ),
    "getenv": ("SELECT bkkp_sn, getenv('MEDAUDIT_TEST_SECRET') AS evidence FROM lines", "function getenv() is not one"),
    "pg_catalog_macro": (
        "SELECT bkkp_sn, pg_get_viewdef(1) AS evidence FROM lines",
        "function pg_get_viewdef() is not one",
    ),
    "scalar_file_read": (
        "SELECT bkkp_sn, read_text('{csv}') AS evidence FROM lines",
        "function read_text() is not one",
    ),
    "string_literal_table": ("SELECT * FROM '{csv}'", "secret.csv " + NOT_TABLE),
    "file_beside_lines": ("SELECT l.bkkp_sn, f.evidence FROM lines l, '{csv}' f", "secret.csv " + NOT_TABLE),
    "union_read_csv": (
        "SELECT bkkp_sn, NULL AS evidence FROM lines UNION ALL FROM read_csv('{csv}')",
        "table function read_csv() is not one",
    ),
    "query_table": (
        "SELECT l.bkkp_sn, k.key_sha256 AS evidence FROM lines l, query_table('prealert_api_keys') k",
        "table function query_table() is not one",
    ),
    "query_function": (
        "SELECT l.bkkp_sn, k.key_sha256 AS evidence FROM lines l, query('SELECT * FROM prealert_api_keys') k",
        "table function query() is not one",
    ),
    "sql_auto_complete": (
        "SELECT l.bkkp_sn, a.suggestion AS evidence FROM lines l, sql_auto_complete('SELECT * FROM pre') a",
        "table function sql_auto_complete() is not one",
    ),
    "pivot": (
        "SELECT * FROM (PIVOT prealert_api_keys ON fixmedins_code USING first(key_sha256))",
        "must be a read-only SELECT; MULTI statements are refused",
    ),  # a PIVOT expands to several statements
    "summarize": ("SUMMARIZE prealert_api_keys", "show ref is not something a sql rule may read from"),
    "write_in_cte": (
        "WITH gone AS (DELETE FROM prealert_api_keys RETURNING *) SELECT key_sha256 AS bkkp_sn FROM gone",
        "holds a writing DELETE",
    ),
    "sequence": ("SELECT bkkp_sn, nextval('s') AS evidence FROM lines", "function nextval() is not one"),
    "two_statements": (
        "SELECT bkkp_sn FROM lines; SELECT key_sha256 FROM prealert_api_keys",
        "must be a single SELECT, got 2 statements",
    ),
}
STATEMENTS = [
    "ATTACH '{csv}' AS x",
    "COPY prealert_api_keys TO '{csv}'",
    "PRAGMA database_list",
    "SET enable_external_access = true",
    "INSTALL httpfs",
    "LOAD httpfs",
    "EXPORT DATABASE '{csv}'",
    "CALL duckdb_tables()",
    "SET VARIABLE secret = 1",
    "CREATE MACRO m() AS TABLE SELECT 1",
    "EXPLAIN SELECT * FROM prealert_api_keys",
]


def rule_yaml(query: str, rid: str = "R-ATK") -> str:
    body = "\n".join("      " + line for line in query.strip().splitlines())
    return f"""
- id: {rid}
  version: 1
  name: 攻击 {rid}
  type: sql
  params:
    query: |
{body}
"""


@pytest.fixture
def planted(tmp_path, monkeypatch):
    """A database with one screened line and the secret in a table, a variable, the environment
    and a file; returns (connection, path of the file)."""
    b = Batch()
    b.line(b.visit(mdtrt_id="V1", psn_no="P1"), "001102000010000", bkkp_sn="L1")
    con = loaded_db(b, tmp_path / "t.duckdb")  # loaded once, copied for the next test
    con.execute("INSERT INTO prealert_api_keys VALUES (?, 'H1', now()::TIMESTAMP)", [SECRET])
    con.execute("SET VARIABLE secret = ?", [SECRET])
    monkeypatch.setenv("MEDAUDIT_TEST_SECRET", SECRET)
    csv = tmp_path / "secret.csv"
    csv.write_text(f"bkkp_sn,evidence\nL1,{SECRET}\n", encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    yield con, csv
    con.close()


def library_around_the_loader(tmp_path, attack: str) -> Library:
    """A library holding the attack as an sql rule, beside a harmless one that reads every table
    (so the sandbox is not empty), made without the loader's check."""
    folder = tmp_path / "lib"
    ok = "SELECT bkkp_sn, 'ok' AS evidence FROM lines WHERE mdtrt_id IN (SELECT mdtrt_id FROM visits)"
    lib = load_library(write_rules(folder, rule_yaml(ok, "R-OK") + rule_yaml("SELECT bkkp_sn FROM lines")))
    atk = next(r for r in lib.rules if r.id == "R-ATK")
    lib.rules[lib.rules.index(atk)] = dataclasses.replace(atk, params={"query": attack})
    return lib


def nothing_leaked(con) -> None:
    rows = con.execute("SELECT * FROM findings").fetchall() + con.execute("SELECT * FROM finding_lines").fetchall()
    assert SECRET not in repr(rows)


def screen_without_the_check(con, lib, monkeypatch) -> str:
    """Screen with the static check switched off; what happened (never the secret)."""
    monkeypatch.setattr(sql_type, "check_query", lambda q: None)
    try:
        screen(con, lib)
        outcome = "screened"
    except Exception as e:  # the sandbox refused: its message, not the secret
        outcome = str(e)
    assert SECRET not in outcome
    nothing_leaked(con)
    return outcome


@pytest.mark.parametrize("name", sorted(ATTACKS))
def test_attack_is_refused_by_the_library_and_the_screen_and_leaks_nothing_without_the_check(
    name, planted, tmp_path, monkeypatch
):
    con, csv = planted
    query, message = ATTACKS[name]
    query = query.replace("{csv}", str(csv))
    # 1. the rule library (medaudit rules check, every load): the rule id and the offending name
    with pytest.raises(RuleLibraryError) as e:
        load_library(write_rules(tmp_path / "rules", rule_yaml(query)))
    assert "rule R-ATK: params.query" in str(e.value) and message in str(e.value)
    # 2. the screening runs the same check: the same message, nothing run
    lib = library_around_the_loader(tmp_path, query)
    with pytest.raises(RuntimeError) as s:
        screen(con, lib)
    assert str(s.value) == "rule R-ATK: " + sql_type.check_query(query)
    assert message in str(s.value)
    nothing_leaked(con)
    # 3. with the check switched off, the sandbox alone: no secret in any finding or message
    screen_without_the_check(con, lib, monkeypatch)


@pytest.mark.parametrize("statement", STATEMENTS)
def test_statements_other_than_select_are_refused(statement, planted, tmp_path, monkeypatch):
    con, csv = planted
    query = statement.replace("{csv}", str(tmp_path / "out.csv"))
    msg = sql_type.check_query(query)
    assert msg is not None and msg.startswith("params.query: must be a read-only SELECT;")
    with pytest.raises(RuleLibraryError, match="rule R-ATK: params.query: must be a read-only SELECT"):
        load_library(write_rules(tmp_path / "rules", rule_yaml(query)))
    outcome = screen_without_the_check(con, library_around_the_loader(tmp_path, query), monkeypatch)
    assert outcome != "screened"
    assert not (tmp_path / "out.csv").exists()


def test_the_sandbox_refuses_a_file_read_the_check_would_refuse(planted):
    """The runner called directly, the check bypassed: DuckDB itself says no."""
    con, csv = planted
    query = f"SELECT bkkp_sn, (SELECT max(evidence) FROM read_csv('{csv}')) AS evidence FROM lines"
    assert "read_csv()" in sql_type.check_query(query)
    from medaudit.engine import prepare_lines

    prepare_lines(con)
    rules = [(0, "R-OK", "SELECT bkkp_sn FROM lines"), (1, "R-ATK", query)]
    with pytest.raises(
        RuntimeError, match=r"rule R-ATK: its query failed: Permission Error: .*file system operations are disabled"
    ):
        sql_type.run_rules(con, rules)
    # a query as a string literal, a Python variable's name, the database's own tables: none there
    for q, says in (
        (f"SELECT * FROM '{csv}'", "Permission Error"),
        ("SELECT * FROM prealert_api_keys", "Table with name prealert_api_keys does not exist"),
        ("SELECT * FROM rules", "Table with name rules does not exist"),
        ("SELECT value AS bkkp_sn FROM duckdb_settings() WHERE name = 'enable_external_access'", None),
    ):
        if says is None:  # the sandbox's own settings: external access off, locked
            sql_type.run_rules(con, [(0, "R-X", q)])
            assert con.execute("SELECT bkkp_sn FROM sql_rule_rows").fetchall() == [("false",)]
            continue
        with pytest.raises(RuntimeError, match=says):
            sql_type.run_rules(con, [(0, "R-X", q)])
    with pytest.raises(RuntimeError, match="the configuration has been locked"):
        sql_type.run_rules(con, [(0, "R-X", "SET enable_external_access = true")])


def test_the_sandbox_holds_only_the_columns_the_rules_mention(planted):
    con, _csv = planted
    from medaudit.engine import prepare_lines

    prepare_lines(con)
    q = "SELECT string_agg(column_name, ',' ORDER BY column_name) AS bkkp_sn FROM duckdb_columns() WHERE table_name = 'lines'"
    sql_type.run_rules(con, [(0, "R-A", "SELECT bkkp_sn, med_type FROM lines WHERE NOT inpatient"), (1, "R-B", q)])
    assert con.execute("SELECT bkkp_sn FROM sql_rule_rows WHERE rule_key = 1").fetchall() == [
        ("bkkp_sn,inpatient,med_type",)
    ]
    # a * (or a NATURAL join, a renamed column list, a whole-row reference) takes every column
    sql_type.run_rules(con, [(0, "R-A", "SELECT * FROM lines"), (1, "R-B", q)])
    n = len(con.execute("SELECT * FROM lines LIMIT 0").description)
    assert len(con.execute("SELECT bkkp_sn FROM sql_rule_rows WHERE rule_key = 1").fetchall()[0][0].split(",")) == n


@pytest.mark.parametrize(
    "query",
    [
        "WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r WHERE n < 3) SELECT l.bkkp_sn FROM lines l, r",
        "WITH lines AS (SELECT * FROM lines WHERE NOT inpatient) SELECT bkkp_sn FROM lines",
        "WITH a AS (SELECT bkkp_sn FROM lines), b AS (SELECT * FROM a) SELECT bkkp_sn FROM b "
        "WHERE EXISTS (SELECT 1 FROM a WHERE a.bkkp_sn = b.bkkp_sn)",
        'SELECT "BKKP_SN" FROM "Lines" l, LATERAL (SELECT count(*) AS n FROM diag d WHERE d.mdtrt_id = l.mdtrt_id) x',
        "SELECT bkkp_sn, med_type_cn(med_type) || yuan(amt) AS evidence FROM lines QUALIFY row_number() OVER (PARTITION BY mdtrt_id ORDER BY amt DESC) = 1",
        "SELECT l.bkkp_sn FROM lines l, unnest([1, 2]) u(x), range(2) r, generate_series(1, 2) g",
        "FROM lines SELECT bkkp_sn WHERE hilist_code LIKE '0011%' AND regexp_matches(hilist_name, '诊查') -- comment",
    ],
)
def test_ordinary_queries_pass(query):
    assert sql_type.check_query(query) is None


def test_the_sandbox_has_the_memory_cap_of_every_connection_and_it_is_locked():
    from medaudit import resources
    from medaudit.types.sql import open_sandbox

    sb = open_sandbox()
    ref = duckdb.connect(":memory:")
    ref.execute("SET memory_limit = ?", [resources.current().duckdb_memory_limit])
    setting = "SELECT current_setting('memory_limit')"
    assert sb.execute(setting).fetchall() == ref.execute(setting).fetchall()
    assert (
        ref.execute(setting).fetchall() != duckdb.connect(":memory:").execute(setting).fetchall()
    )  # not DuckDB's default
    with pytest.raises(duckdb.Error):
        sb.execute("SET memory_limit = '100GB'")
