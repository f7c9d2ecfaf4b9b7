"""The sql escape hatch: one read-only SELECT per rule, all rules of the type in one statement."""

from decimal import Decimal
from pathlib import Path

import pytest

from kit import Batch, write_rules
from medaudit.library import RuleLibraryError, load_library
from medaudit.types.sql import check_query

ROOT = Path(__file__).resolve().parents[1]


def rule(query: str, rid: str = "R-SQL", extra: str = "") -> str:
    body = "\n".join("      " + line for line in query.strip().splitlines())
    return f"""
- id: {rid}
  version: 1
  name: 自定义规则 {rid}
  type: sql{extra}
  params:
    query: |
{body}
"""


def test_sql_flags_returned_lines_with_amount_and_evidence(tmp_path):
    b = Batch()
    v = b.visit(mdtrt_id="V1", med_type="11")
    b.line(v, "001102000010000", pric="20", bkkp_sn="L-DIAG", hilist_name="住院诊查费")
    b.line(v, "001102000010000", pric="20", bkkp_sn="L-HALF", fulamt_ownpay_amt="5")
    b.line(v, "001102000010000", pric="20", bkkp_sn="L-SELF", chrgitm_lv="03")  # deductible 0: never flagged
    b.line(v, "001102000010000", pric="20", bkkp_sn="L-REF")
    b.refund("L-REF")  # fully refunded: not screened
    w = b.visit(mdtrt_id="V2", med_type="21")
    b.line(w, "001102000010000", pric="20", bkkp_sn="L-IP")  # inpatient: not returned
    rules = rule("""
SELECT bkkp_sn, '门诊就诊不应收取住院诊查费' AS evidence
FROM lines WHERE NOT inpatient AND hilist_code = '001102000010000';  -- trailing comment
""") + rule(
        """
SELECT bkkp_sn, 7.125 AS amount FROM fee_list_d WHERE bkkp_sn IN ('L-DIAG', 'L-HALF')
UNION ALL SELECT 'L-HALF', 100
""",
        "R-SQL-AMT",
        "\n  severity: violation",
    )
    found = {f["rule_id"]: f for f in b.screen(tmp_path, rules)}
    assert set(found) == {"R-SQL", "R-SQL-AMT"}
    f = found["R-SQL"]
    assert f["mdtrt_id"] == "V1" and f["severity"] == "suspect" and f["status"] == "pending_review"
    assert f["violating"] == {"L-DIAG": Decimal("20"), "L-HALF": Decimal("15")}
    assert f["evidence"].startswith(
        "项目【住院诊查费】(001102000010000) 2026-03-02 收费 1 次，金额 20.00 元，门诊就诊不应收取住院诊查费；"
    )
    g = found["R-SQL-AMT"]
    # the amount is the query's, never above the line's deductible (L-HALF: max(7.125, 100) capped at 15)
    assert g["violating"] == {"L-DIAG": Decimal("7.125"), "L-HALF": Decimal("15")}
    assert g["claimed_amt"] == Decimal("22.13") and g["status"] == "pending_appeal"
    assert "收费 1 次，金额 20.00 元，按规则计 7.13 元" in g["evidence"]
    # never twice: L-HALF's 15.00 is carried once, by the largest claim (tie: lowest rule id)
    assert g["deduction_amt"] == Decimal("22.13") and f["deduction_amt"] == Decimal("0")


def test_sql_rule_validity_applies_per_line(tmp_path):
    b = Batch()
    v = b.visit(begntime="2026-03-01 08:00:00", endtime="2026-03-05 08:00:00")
    b.line(v, "001102000010000", time="2026-03-01 09:00:00", bkkp_sn="EARLY")
    b.line(v, "001102000010000", time="2026-03-04 09:00:00", bkkp_sn="LATE")
    found = b.screen(tmp_path, rule("SELECT bkkp_sn FROM lines", extra="\n  valid_from: 2026-03-03"))
    assert [list(f["violating"]) for f in found] == [["LATE"]]


@pytest.mark.parametrize(
    "query, message",
    [
        ("SELECT bkkp_sn FROM lines; SELECT bkkp_sn FROM lines", "must be a single SELECT, got 2 statements"),
        ("DELETE FROM fee_list_d", "must be a read-only SELECT; DELETE statements are refused"),
        ("INSERT INTO findings VALUES (1)", "INSERT statements are refused"),
        ("UPDATE fee_list_d SET cnt = 0", "UPDATE statements are refused"),
        ("ATTACH 'other.duckdb'", "ATTACH statements are refused"),
        ("COPY lines TO 'out.csv'", "COPY statements are refused"),
        ("PRAGMA version", "PRAGMA statements are refused"),
        (
            "WITH gone AS (DELETE FROM fee_list_d RETURNING *) SELECT bkkp_sn FROM gone",
            "holds a writing DELETE (a CTE that writes)",
        ),
        (
            "WITH x AS (INSERT INTO setl_d SELECT * FROM setl_d RETURNING *) SELECT 1 AS bkkp_sn FROM x",
            "holds a writing INSERT",
        ),
        ("SELECT * FROM read_csv('/etc/passwd')", "table function read_csv() is not one a sql rule may call"),
        (
            "SELECT bkkp_sn FROM lines WHERE bkkp_sn IN (SELECT column0 FROM read_text('x'))",
            "table function read_text() is not one",
        ),
        ("SELECT bkkp_sn FROM findings", "table findings is not one a sql rule may read (allowed: lines, visits"),
        ("SELECT * FROM 'fee_list_d.csv'", "table fee_list_d.csv is not one a sql rule may read"),
        (
            "SELECT bkkp_sn FROM other.main.lines",
            "table other.main.lines is not one a sql rule may read: name it without a schema",
        ),
        ("SELEC bkkp_sn FROM lines", "params.query: not valid SQL"),
    ],
)
def test_sql_anything_but_one_read_only_select_is_refused_at_load(tmp_path, query, message):
    with pytest.raises(RuleLibraryError) as e:
        load_library(write_rules(tmp_path, rule(query)))
    assert "rule R-SQL: params.query" in str(e.value) and message in str(e.value)


def test_sql_allowed_forms():
    assert check_query("WITH t AS (SELECT * FROM lines) SELECT bkkp_sn FROM t JOIN diag USING (mdtrt_id)") is None
    assert (
        check_query("SELECT l.bkkp_sn FROM lines l, unnest([1, 2]) u(x) UNION SELECT bkkp_sn FROM fee_list_d") is None
    )
    assert (
        check_query("SELECT bkkp_sn FROM lines WHERE mdtrt_id IN (SELECT mdtrt_id FROM purchases p, hilist h)") is None
    )


def test_sql_query_without_bkkp_sn_fails_naming_the_rule(tmp_path):
    b = Batch()
    b.line(b.visit(), "001102000010000")
    with pytest.raises(RuntimeError, match="rule R-SQL: its query must return a column bkkp_sn"):
        b.screen(tmp_path, rule("SELECT mdtrt_id FROM lines"))
    with pytest.raises(RuntimeError, match="rule R-SQL: its query failed: .*no_such_column"):
        (tmp_path / "2").mkdir()
        b.screen(tmp_path / "2", rule("SELECT no_such_column AS bkkp_sn FROM lines"))


def test_sql_rule_reads_the_spare_columns_a_full_screen_otherwise_leaves_out(tmp_path):
    """A full screen builds ``lines`` without the columns no type names (``engine.SPARE_COLUMNS``);
    an analyst's query naming one of them keeps it there. Dropped regardless, the query would
    fail (the sandbox gets no such column)."""
    b = Batch()
    v = b.visit(mdtrt_id="V1", med_type="11")
    b.line(v, "001102000010000", pric="20", bkkp_sn="L-APPR", hosp_appr_flag="1")
    b.line(v, "001102000010000", pric="20", bkkp_sn="L-OWN", fulamt_ownpay_amt="5")
    b.line(v, "001102000010000", pric="20", bkkp_sn="L-B", chrgitm_lv="02")
    b.line(v, "001102000010000", pric="20", bkkp_sn="L-PLAIN")
    rules = (
        rule("SELECT bkkp_sn FROM lines WHERE hosp_appr_flag = '1'", "R-SQL-APPR")
        + rule("SELECT bkkp_sn FROM lines WHERE ownpay > 0", "R-SQL-OWN")
        + rule("SELECT l.bkkp_sn FROM lines l WHERE l.chrgitm_lv = '02'", "R-SQL-LV")
    )
    found = {f["rule_id"]: set(f["violating"]) for f in b.screen(tmp_path, rules)}
    assert found == {"R-SQL-APPR": {"L-APPR"}, "R-SQL-OWN": {"L-OWN"}, "R-SQL-LV": {"L-B"}}


def test_full_screen_lines_leave_out_the_spare_columns_no_rule_names(tmp_path):
    from medaudit import db, engine
    from medaudit.types import REGISTRY

    def columns(rules_yaml: str | None) -> str:
        lib = load_library(ROOT / "rules")
        rules = list(lib.rules)
        if rules_yaml is not None:
            folder = tmp_path / str(len(list(tmp_path.iterdir())))
            rules += load_library(write_rules(folder, rules_yaml)).rules
        con = db.connect(tmp_path / f"{len(list(tmp_path.iterdir()))}.duckdb")
        try:
            by_type = engine.register_rules(con, rules, distinct_bodies=True)
            return engine.slim_columns(con, [REGISTRY[t] for t in by_type])
        finally:
            con.close()

    # the bundled library (its sql rule names four columns): every spare column left out
    bundled = columns(None)
    assert bundled != engine.SLIM_COLUMNS
    for c in engine.SPARE_COLUMNS:
        assert f", {c}" in bundled
    # a rule naming one keeps that one
    named = columns(rule("SELECT bkkp_sn FROM lines WHERE ownpay > 0", "R-SQL-OWN"))
    assert "ownpay" not in named and "hosp_appr_flag" in named
    # a query reading whole rows of lines may read any: all kept
    assert columns(rule("SELECT * FROM lines WHERE amt > 100", "R-SQL-ALL")) == engine.SLIM_COLUMNS
