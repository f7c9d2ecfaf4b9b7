"""Money: a line is never deducted twice, claims are exact, rounding happens once at the end."""

from __future__ import annotations

from decimal import Decimal as D

from kit import Batch, findings, write_rules
from medaudit import db
from medaudit.engine import screen
from medaudit.library import load_library
from medaudit.loader import load_batch

CODE = "002101030300000"


def gender(rid: str, severity: str = "violation") -> str:
    return f"""
- id: {rid}
  version: 1
  name: 限女性
  type: restrict_gender
  severity: {severity}
  items: {{codes: ["{CODE}"]}}
  params: {{gender: 2}}
"""


def freq(rid: str, max_per_day: str = "1") -> str:
    return f"""
- id: {rid}
  version: 1
  name: 每日限次
  type: frequency_limit
  items: {{codes: ["{CODE}"]}}
  params: {{max_per_day: {max_per_day}}}
"""


def by_rule(found) -> dict[str, dict]:
    return {f["rule_id"]: f for f in found}


def test_largest_claim_carries_the_line_and_the_other_stays_visible(tmp_path):
    b = Batch()
    sn = b.line(b.visit(gend="1"), CODE, cnt="2", pric="50")
    f = by_rule(b.screen(tmp_path, gender("R-Z") + freq("R-A")))
    # gender claims the whole line (100); frequency only the excess unit (50), though its id is lower
    assert f["R-Z"]["violating"] == {sn: D("100")} and f["R-Z"]["carried"] == {sn: D("100")}
    assert f["R-A"]["violating"] == {sn: D("50")} and f["R-A"]["carried"] == {sn: D("0")}
    assert f["R-Z"]["deduction_amt"] == D("100.00")
    assert f["R-A"]["deduction_amt"] == D("0.00") and f["R-A"]["claimed_amt"] == D("50.00")


def test_a_tie_is_carried_by_the_lowest_rule_id(tmp_path):
    b = Batch()
    sn = b.line(b.visit(gend="1"), CODE, pric="80")
    f = by_rule(b.screen(tmp_path, gender("R-B") + gender("R-A") + gender("R-C")))
    assert [f[r]["carried"][sn] for r in ("R-A", "R-B", "R-C")] == [D("80"), D("0"), D("0")]
    assert sum(x["deduction_amt"] for x in f.values()) == D("80.00")


def test_carry_is_per_line_not_per_finding(tmp_path):
    """One finding may carry one line and lose another to a larger claim."""
    b = Batch()
    v = b.visit(gend="1", med_type="21", begntime="2026-03-01 08:00:00", endtime="2026-03-05 08:00:00")
    a = b.line(v, CODE, cnt="1", pric="50", time="2026-03-02 08:00:00")
    c = b.line(v, CODE, cnt="3", pric="50", time="2026-03-03 08:00:00")
    f = by_rule(b.screen(tmp_path, gender("R-Z") + freq("R-A", "2")))
    assert f["R-A"]["violating"] == {c: D("50")}
    assert f["R-Z"]["carried"] == {a: D("50"), c: D("150")}
    assert f["R-A"]["carried"] == {c: D("0")}


def test_excess_qty_with_a_fund_share_is_exact_and_rounded_once(tmp_path):
    b = Batch()
    v = b.visit(gend="2")
    sn = b.line(v, CODE, cnt="2", pric="50", fulamt_ownpay_amt="33.33")
    (f,) = b.screen(tmp_path, freq("R-A"))
    # 1 excess unit x 50.00 x 66.67 / 100.00 = 33.335 exactly; half-up at the end: 33.34
    assert f["violating"] == {sn: D("33.335")}
    assert f["deduction_amt"] == D("33.34") and f["claimed_amt"] == D("33.34")


def test_rounding_happens_on_the_finding_not_on_each_line(tmp_path):
    b = Batch()
    v = b.visit(gend="2", med_type="21", begntime="2026-03-01 08:00:00", endtime="2026-03-05 08:00:00")
    for day in ("02", "03"):  # each day: 1 excess unit x 0.01 x share 0.5 = 0.005
        b.line(v, CODE, cnt="2", pric="0.01", fulamt_ownpay_amt="0.01", time=f"2026-03-{day} 08:00:00")
    (f,) = b.screen(tmp_path, freq("R-A"))
    assert sorted(f["violating"].values()) == [D("0.005"), D("0.005")]
    assert f["deduction_amt"] == D("0.01")  # not 0.01 + 0.01


def test_share_with_a_repeating_fraction(tmp_path):
    b = Batch()
    v = b.visit(gend="2")
    sn = b.line(v, CODE, cnt="3", pric="10", fulamt_ownpay_amt="10")
    (f,) = b.screen(tmp_path, freq("R-A"))
    # 2 excess units x 10 x 20/30 = 13.333...: truncated at 12 decimals, 13.33 at the end
    assert f["violating"][sn] == D("13.333333333333")
    assert f["deduction_amt"] == D("13.33")


def test_a_suspect_claims_nothing_and_does_not_take_the_line(tmp_path):
    b = Batch()
    sn = b.line(b.visit(gend="1"), CODE, cnt="2", pric="50")
    f = by_rule(b.screen(tmp_path, gender("R-A", severity="suspect") + freq("R-B")))
    assert f["R-A"]["status"] == "pending_review"
    assert f["R-A"]["deduction_amt"] == D("0.00") and f["R-A"]["carried"] == {sn: D("0")}
    assert f["R-A"]["claimed_amt"] == D("100.00")  # the amount at risk stays visible
    assert f["R-B"]["carried"] == {sn: D("50")} and f["R-B"]["deduction_amt"] == D("50.00")


def test_in_process_warnings_deduct_nothing(tmp_path):
    b = Batch()
    b.line(b.visit(gend="1", settled=False), CODE, pric="80")
    (f,) = b.screen(tmp_path, gender("R-A"), stage="in_process")
    assert (f["status"], f["deduction_amt"], f["claimed_amt"]) == ("warning", D("0.00"), D("80.00"))


def test_finding_ids_are_stable_across_runs_and_databases(tmp_path):
    b = Batch()
    v = b.visit(gend="1")
    b.line(v, CODE, cnt="2", pric="50")
    rules = write_rules(tmp_path / "rules", gender("R-Z") + freq("R-A"))
    folder = b.write(tmp_path / "batch")

    con = db.connect(tmp_path / "one.duckdb")
    load_batch(folder, con)
    first = screen(con, load_library(rules))
    ids1 = sorted(f["finding_id"] for f in findings(con))
    second = screen(con, load_library(rules))
    ids2 = sorted(f["finding_id"] for f in findings(con))
    assert first.n_new_findings == 2 and second.n_new_findings == 0
    assert ids1 == ids2
    assert con.execute("SELECT count(*), count(DISTINCT finding_id) FROM findings").fetchall() == [(2, 2)]
    assert con.execute("SELECT count(*) FROM finding_lines").fetchall() == [(2,)]
    assert con.execute("SELECT min(first_run), max(last_run) FROM findings").fetchall() == [(1, 2)]
    assert sum(f["deduction_amt"] for f in findings(con)) == D("100.00")

    other = db.connect(tmp_path / "two.duckdb")  # another database, same batch and rules: same ids
    load_batch(folder, other)
    screen(other, load_library(rules))
    assert sorted(f["finding_id"] for f in findings(other)) == ids1


def test_a_new_rule_version_gives_new_ids(tmp_path):
    b = Batch()
    b.line(b.visit(gend="1"), CODE)
    folder = b.write(tmp_path / "batch")
    con = db.connect(tmp_path / "t.duckdb")
    load_batch(folder, con)
    screen(con, load_library(write_rules(tmp_path / "r1", gender("R-A"))))
    screen(con, load_library(write_rules(tmp_path / "r2", gender("R-A").replace("version: 1", "version: 2"))))
    rows = con.execute("SELECT rule_version FROM findings ORDER BY rule_version").fetchall()
    assert rows == [("1",), ("2",)]
