"""A finding of one hit line takes its values from that line without the grouping
(``engine.findings_sql``); the grouping of every finding (``group_all``) is the reference: the
same ids, labels, amounts, periods and evidence, column for column, in every case a hit can
take (a finding about an entity or a visit, a related line, a line hit twice, a hit without a
line, values missing on the hit or on its line)."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from pathlib import Path

import pytest

from medaudit import db as dbm
from medaudit import engine
from medaudit.engine import screen
from medaudit.library import load_library
from medaudit.loader import load_batch

ROOT = Path(__file__).resolve().parents[1]

# (rule, finding_key, mdtrt_id, bkkp_sn, role, claim, ev_head, ev_line, psn_no, fixmedins_code,
#  dept_code, dr_code, period, excess_units)
HITS = [
    # an entity's finding of one line: the hit names the institution and month; the line's
    # person, department, doctor and settlement are not the finding's
    (0, "E1", None, "L1", "violating", "5.125", "机构 H1", "第一行", None, "H1", None, None, "2026-03", "2"),
    # a visit's finding of one related line: nothing flagged, no violating ids, no evidence
    (0, "V2", "M2", "L2", "related", None, None, None, None, None, None, None, None, None),
    # a visit's finding of one violating line, evidence opening empty
    (1, "V3", "M3", "L3", "violating", "3.333", "", "一行", None, None, None, None, None, None),
    # the same line hit twice in one finding (violating and related): one line
    (1, "V6", "M6", "L6", "violating", "1.005", "头", "甲", None, None, None, None, None, None),
    (1, "V6", "M6", "L6", "related", None, "头", "乙", None, None, None, None, None, None),
    # a finding about an entity with no lines
    (2, "E5", None, None, "violating", "9", "无明细", None, "P5", "H5", "D5", "R5", "2026-04", None),
    # a hit line missing from the lines' facts
    (2, "V7", "M7", "L7", "violating", "2", "头", "丙", None, None, None, None, None, None),
    # a finding of two lines (through the grouping either way)
    (0, "V4", "M4", "L4a", "violating", "1", "头", "丁", None, None, None, None, None, None),
    (0, "V4", "M4", "L4b", "related", None, "头", None, None, None, None, None, None, None),
]

T = dt.datetime
# bkkp_sn, fee_ocur_time, amt, psn_no, fixmedins_code, bilg_dept_codg, bilg_dr_code, setl_id,
# setl_time, visit_dept, chfpdr_code
LINES = [
    ("L1", T(2026, 3, 5, 9), "7.1251", "P1", "H9", "D1", "R1", "S1", T(2026, 3, 20), "VD1", "C1"),
    ("L2", T(2026, 4, 1, 9), "4.5", "P2", "H2", None, None, "S2", None, "VD2", "C2"),
    ("L3", T(2026, 5, 2, 9), "3.335", "P3", "H3", None, "R3", None, None, None, None),
    ("L6", T(2026, 6, 3, 9), "1.0049", "P6", "H6", "D6", None, "S6", T(2026, 7, 1), "VD6", "C6"),
    ("L4a", T(2026, 3, 9, 9), "1", "P4", "H4", "D4", "R4", "S4", T(2026, 3, 30), "VD4", "C4"),
    ("L4b", T(2026, 3, 8, 9), "2", "P4", "H4", "D4b", "R4b", "S4", T(2026, 3, 30), "VD4", "C4"),
]


def _findings(con, group_all: bool):
    con.execute(engine.findings_sql("post_hoc", 1, "hit_line_info", group_all=group_all))
    rows = con.execute("SELECT * EXCLUDE (created_at, __rule_key) FROM new_finding_rows ORDER BY finding_id").fetchall()
    lines = con.execute("SELECT * FROM new_finding_lines ORDER BY ALL").fetchall()
    return rows, lines


def test_one_line_findings_equal_the_grouping(tmp_path):
    con = dbm.connect(tmp_path / "f.duckdb")
    rules = load_library(ROOT / "rules").rules[:3]
    engine.register_rules(con, rules, distinct_bodies=True)
    engine.create_hits(con)
    con.executemany(
        f"INSERT INTO {engine.HITS} (rule_key, finding_key, mdtrt_id, bkkp_sn, role, claim, ev_head, ev_line, psn_no, "
        "fixmedins_code, dept_code, dr_code, period, excess_units) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        HITS,
    )
    con.execute(
        """CREATE TEMP TABLE hit_line_info (bkkp_sn VARCHAR, fee_ocur_time TIMESTAMP, amt DECIMAL(18,4), psn_no VARCHAR,
           fixmedins_code VARCHAR, bilg_dept_codg VARCHAR, bilg_dr_code VARCHAR, setl_id VARCHAR, setl_time TIMESTAMP,
           visit_dept VARCHAR, chfpdr_code VARCHAR)"""
    )
    con.executemany("INSERT INTO hit_line_info VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", LINES)
    grouped = _findings(con, group_all=True)
    direct = _findings(con, group_all=False)
    single = con.execute(
        "SELECT count(*) FROM hit_lines_l WHERE hash(rule_key, finding_key) NOT IN (SELECT k FROM finding_multi)"
    ).fetchall()[0][0]
    con.close()
    assert single == 6, "six findings of one hit line take the shortcut"
    assert direct == grouped
    by_key = {r[16]: r for r in direct[0]}  # finding_key
    cols = ["finding_id", "rule_id", "rule_version", "rule_name", "rule_type", "stage", "severity", "nature", "basis",
            "fixmedins_code", "dept_code", "dr_code", "psn_no", "mdtrt_id", "setl_id", "period", "finding_key",
            "flagged_amt", "claimed_amt", "deduction_amt", "evidence", "status", "first_run", "last_run"]  # fmt: skip
    e1 = dict(zip(cols, by_key["E1"]))
    # the entity's: institution from the hit, nothing of the line's person or visit
    assert (e1["fixmedins_code"], e1["psn_no"], e1["dept_code"], e1["setl_id"], e1["period"]) == (
        "H1",
        None,
        None,
        None,
        "2026-03",
    )
    assert (e1["flagged_amt"], e1["claimed_amt"], e1["evidence"]) == (
        Decimal("7.13"),
        Decimal("5.13"),
        "机构 H1；第一行",
    )
    v2 = dict(zip(cols, by_key["V2"]))
    assert (v2["flagged_amt"], v2["claimed_amt"], v2["evidence"], v2["dept_code"], v2["period"]) == (
        Decimal("0.00"),
        Decimal("0.00"),
        "",
        "VD2",
        "2026-04",
    )
    v3 = dict(zip(cols, by_key["V3"]))
    assert (v3["evidence"], v3["dr_code"], v3["setl_id"], v3["period"]) == ("一行", "R3", None, "2026-05")
    v6 = dict(zip(cols, by_key["V6"]))
    assert (v6["evidence"], v6["period"], v6["claimed_amt"]) == (
        "头；乙；甲",
        "2026-07",
        Decimal("1.01"),
    )  # 乙 sorts before 甲


@pytest.mark.slow
def test_sample_findings_equal_the_grouping(tmp_path, monkeypatch):
    """The bundled sample screened with every rule: the findings stored are the same when every
    finding goes through the grouping."""
    con = dbm.connect(tmp_path / "s.duckdb")
    load_batch(ROOT / "sample_data" / "batch", con)
    lib = load_library(ROOT / "rules")
    stored = []
    real = engine.findings_sql
    for group_all in (False, True):
        con.execute(
            "DELETE FROM finding_lines; DELETE FROM finding_events; DELETE FROM finding_state; DELETE FROM findings"
        )
        monkeypatch.setattr(engine, "findings_sql", lambda *a, g=group_all, **k: real(*a, **k, group_all=g))
        screen(con, lib)
        stored.append(
            (
                con.execute(
                    "SELECT * EXCLUDE (created_at, first_run, last_run) FROM findings ORDER BY finding_id"
                ).fetchall(),
                con.execute("SELECT * FROM finding_lines ORDER BY ALL").fetchall(),
            )
        )
    con.close()
    assert stored[0][0] and stored[0] == stored[1]
