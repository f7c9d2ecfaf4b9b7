"""Final deductions: what stands goes into the statement, each line once, idempotent, reconciled."""

from __future__ import annotations

from decimal import Decimal as D

from medaudit import money
from medaudit.hospital_loop import deduct, lifecycle
from kit import set_wall_clock
from test_lifecycle import RULES, clock, finding, loop_batch, loop_db, rescreen

RULES_V2 = RULES.replace("  - id: R-SEX-001\n    version: 1", "  - id: R-SEX-001\n    version: 2")


def statement_lines(con):
    return con.execute(
        "SELECT statement_id, finding_id, bkkp_sn, round(amount, 2) FROM deduction_lines ORDER BY 1, 3"
    ).fetchall()


def test_nothing_stands_while_windows_are_open(tmp_path, monkeypatch):
    con = loop_db(tmp_path, monkeypatch)
    res = deduct.finalize(con, "2026-03", clock=clock("2026-04-10"))
    assert res.statements == [] and res.expired_now == 0
    assert res.not_final == {"pending_appeal": 5, "pending_review": 1}
    assert con.execute("SELECT count(*) FROM deduction_statements").fetchall()[0][0] == 0


def test_a_line_two_rules_claim_is_deducted_once_by_the_largest_standing_claim(tmp_path, monkeypatch):
    b, v = loop_batch()
    con = loop_db(tmp_path, monkeypatch, b)
    sex, frq = finding(con, v["both"], "R-SEX-001"), finding(con, v["both"], "R-FRQ-001")
    # 3 x 60.00: gender claims the whole line, frequency the 2 excess units; gender carries
    assert (sex["deduction"], frq["deduction"]) == (D("180.00"), D("0.00"))
    assert frq["claimed"] == D("120.00")
    # the hospital proves the gender; the frequency finding now carries its own claim
    lifecycle.transition(con, sex["id"], "appeal", "王芳", "患者为女性（登记错误）", clock=clock("2026-04-02"))
    lifecycle.transition(con, frq["id"], "appeal", "王芳", "三个部位分别造影", clock=clock("2026-04-02"))
    lifecycle.transition(con, sex["id"], "overturn", "李审", "性别登记错误属实", clock=clock("2026-04-08"))
    money.settle_deductions(con)
    assert finding(con, v["both"], "R-FRQ-001")["deduction"] == D("120.00")
    # frequency still appealed: it waits; the rest of H001 expires on Apr 16 and stands
    res = deduct.finalize(con, "2026-03", "H001", by="结算科", clock=clock("2026-04-16"))
    assert res.expired_now == 3  # expiry closes every window that passed: sex and bed of H001, other of H002
    assert [(s.institution, s.n_findings, s.total) for s in res.statements] == [("H001", 2, D("210.00"))]
    lifecycle.transition(con, frq["id"], "uphold", "李审", "重复收费", clock=clock("2026-04-17"))
    res = deduct.finalize(con, "2026-03", "H001", clock=clock("2026-04-17"))
    assert [(s.seq, s.n_findings, s.total) for s in res.statements] == [(2, 1, D("120.00"))]
    lines = [r for r in statement_lines(con) if r[2] == "BOTH1"]
    assert lines == [(2, frq["id"], "BOTH1", D("120.00"))]
    assert deduct.reconcile(con) == []


def test_a_standing_finding_waits_while_its_line_is_carried_by_an_open_one(tmp_path, monkeypatch):
    b, v = loop_batch()
    con = loop_db(tmp_path, monkeypatch, b)
    sex, frq = finding(con, v["both"], "R-SEX-001"), finding(con, v["both"], "R-FRQ-001")
    lifecycle.transition(con, sex["id"], "appeal", "王芳", "患者为女性", clock=clock("2026-04-02"))
    res = deduct.finalize(con, "2026-03", "H001", clock=clock("2026-04-16"))
    # frequency expired (stands, 0 carried: gender's 180.00 claim is larger but still under appeal)
    assert finding(con, v["both"], "R-FRQ-001")["status"] == "expired"
    assert [h[0] for h in res.held] == [frq["id"]]
    assert "BOTH1" in res.held[0][1] and sex["id"][:12] in res.held[0][1]
    assert res.held[0][1].endswith("（已申诉待复核 (appealed)）承担，等待其结案")  # the state in Chinese with its code
    assert [(s.n_findings, s.total) for s in res.statements] == [(2, D("210.00"))]  # sex-visit 180 + bed 30
    # gender upheld: both stand; gender carries 180.00, frequency 0.00 — the line once
    lifecycle.transition(con, sex["id"], "uphold", "李审", "维持", clock=clock("2026-04-17"))
    res = deduct.finalize(con, "2026-03", "H001", clock=clock("2026-04-17"))
    assert [(s.n_findings, s.n_lines, s.total) for s in res.statements] == [(2, 1, D("180.00"))]
    assert [r[1:] for r in statement_lines(con) if r[2] == "BOTH1"] == [(sex["id"], "BOTH1", D("180.00"))]
    assert deduct.reconcile(con) == []


def test_finalize_is_idempotent_and_reconciles_to_the_cent(tmp_path, monkeypatch):
    b, v = loop_batch()
    con = loop_db(tmp_path, monkeypatch, b)
    age = finding(con, v["age"], "R-AGE-001")
    lifecycle.transition(con, age["id"], "confirm", "李审", clock=clock("2026-04-02"))
    first = deduct.finalize(con, "2026-03", clock=clock("2026-04-20"))
    # H001: sex 180.00 + both (gender carries) 180.00 + bed 30.00 + confirmed suspect 24.70; H002: 200.00
    assert [(s.institution, s.n_findings, s.n_lines, s.total) for s in first.statements] == [
        ("H001", 5, 4, D("414.70")),
        ("H002", 1, 1, D("200.00")),
    ]
    total_findings = con.execute(
        "SELECT sum(deduction_amt) FROM findings f JOIN finding_state s USING (finding_id) WHERE s.statement_id IS NOT NULL"
    ).fetchall()[0][0]
    assert total_findings == D("614.70")
    before = (
        statement_lines(con),
        con.execute("SELECT * FROM deduction_statements ORDER BY 1").fetchall(),
        con.execute("SELECT count(*) FROM finding_events").fetchall()[0][0],
    )
    again = deduct.finalize(con, "2026-03", clock=clock("2026-04-21"))
    assert again.statements == [] and again.held == []
    assert (
        statement_lines(con),
        con.execute("SELECT * FROM deduction_statements ORDER BY 1").fetchall(),
        con.execute("SELECT count(*) FROM finding_events").fetchall()[0][0],
    ) == before
    assert deduct.reconcile(con) == []
    # a final finding never moves again
    sex = finding(con, v["sex"], "R-SEX-001")
    assert sex["statement"] == 1
    try:
        lifecycle.transition(con, sex["id"], "appeal", "王芳", "理由", clock=clock("2026-04-21"))
        raise AssertionError("a final finding moved")
    except lifecycle.LifecycleError as e:
        assert "final in deduction statement 1" in str(e) and sex["id"][:12] in str(e)


def test_rescreen_after_finalize_changes_nothing_final(tmp_path, monkeypatch):
    b, v = loop_batch()
    con = loop_db(tmp_path, monkeypatch, b)
    deduct.finalize(con, "2026-03", "H001", clock=clock("2026-04-20"))
    final_before = con.execute(
        """SELECT f.finding_id, f.status, f.deduction_amt, s.statement_id FROM findings f JOIN finding_state s USING (finding_id)
           WHERE s.statement_id IS NOT NULL ORDER BY 1"""
    ).fetchall()
    lines_before = statement_lines(con)
    set_wall_clock(monkeypatch, "2026-04-22")
    res = rescreen(tmp_path, con, RULES_V2, name="rules2")
    assert res.n_new_findings == 3
    assert (
        con.execute(
            """SELECT f.finding_id, f.status, f.deduction_amt, s.statement_id FROM findings f JOIN finding_state s USING (finding_id)
           WHERE s.statement_id IS NOT NULL ORDER BY 1"""
        ).fetchall()
        == final_before
    )
    # H001's v2 twins claim lines a statement already deducted: they carry nothing
    v2 = dict(con.execute("SELECT mdtrt_id, deduction_amt FROM findings WHERE rule_version = '2'").fetchall())
    assert (v2[v["sex"]], v2[v["both"]]) == (D("0.00"), D("0.00"))
    # H002 was out of the statement's scope: its expired v1 finding and the v2 twin tie on the line
    # (same rule id, the finding id decides): the line is carried once either way
    assert con.execute("SELECT sum(deduction_amt) FROM findings WHERE mdtrt_id = ?", [v["other"]]).fetchall()[0][
        0
    ] == D("200.00")
    # the v2 twins stand later, but their lines were deducted already: their statement adds 0.00
    res = deduct.finalize(con, "2026-03", "H001", clock=clock("2026-05-20"))
    assert [(s.n_findings, s.total) for s in res.statements] == [(2, D("0.00"))]
    assert [r for r in statement_lines(con)] == lines_before
    assert deduct.reconcile(con) == []


def test_statement_workbook(tmp_path, monkeypatch):
    import openpyxl

    b, v = loop_batch()
    b.rows["code_names"].append({"kind": "dept", "code": "D02", "code_name": "妇产科", "fixmedins_code": "H001"})
    con = loop_db(tmp_path, monkeypatch, b)
    both = finding(con, v["both"], "R-SEX-001")["id"]
    lifecycle.transition(con, both, "appeal", "王芳", "患者为女性，登记错误", clock=clock("2026-04-02"))
    lifecycle.transition(con, both, "uphold", "审核员甲", "身份证号显示为男性", clock=clock("2026-04-03"))
    res = deduct.finalize(con, "2026-03", "H001", clock=clock("2026-04-20"))
    path = deduct.write_statement_xlsx(con, [s.statement_id for s in res.statements], tmp_path / "st.xlsx")
    wb = openpyxl.load_workbook(path)
    assert wb.sheetnames == ["扣款单", "扣款疑点", "扣款明细行"]

    def table(name):
        rows = list(wb[name].iter_rows(values_only=True))
        return [dict(zip(rows[0], r)) for r in rows[1:]]

    st = table("扣款单")[0]
    # numbers are number cells (the clerk sums them), the institution has its name
    assert (st["扣款单号"], st["第几次"], st["疑点数"], st["扣款合计（元）"]) == (1, 1, 4, 390.0)
    assert st["机构"] == "测试医院 (H001)"
    items = {(r["就诊ID"], r["规则编号"]): r for r in table("扣款疑点")}
    assert {r["参保人"] for r in items.values()} == {"张*", "李*", "王**"}
    sex, upheld = items[(v["sex"], "R-SEX-001")], items[(v["both"], "R-SEX-001")]
    # the deadline the finding had, its state with the code, the hospital's reason and the reviewer's decision
    assert sex["申诉截止日"] == "2026-04-15" and sex["状态"] == "逾期未申诉（维持扣款） (expired)"
    assert sex["医院申诉理由"] is None and sex["复核结论及理由"] is None and sex["科室"] == "D01"
    assert upheld["状态"] == "申诉驳回（维持扣款） (upheld)" and upheld["科室"] == "妇产科 (D02)"
    assert upheld["医院申诉理由"] == "患者为女性，登记错误（王芳，2026-04-02）"
    assert upheld["复核结论及理由"] == "驳回申诉 (uphold)：身份证号显示为男性（审核员甲，2026-04-03）"
    lines = table("扣款明细行")
    assert sum(r["扣款（元）"] for r in lines) == 390.0
    both_line = next(r for r in lines if r["明细流水号"] == "BOTH1")
    assert (both_line["数量"], both_line["单价（元）"], both_line["金额（元）"]) == (3, 60, 180)


def test_cli_finalize_and_show(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from medaudit.cli import app

    con = loop_db(tmp_path, monkeypatch)
    con.close()
    dbf = str(tmp_path / "loop.duckdb")
    set_wall_clock(monkeypatch, "2026-04-20")
    run = CliRunner().invoke
    r = run(app, ["deduct", "finalize", "--period", "2026-03", "--out", str(tmp_path / "st.xlsx"), "--db", dbf])
    flat = " ".join(r.output.split())
    assert r.exit_code == 0, r.output
    assert "5 findings expired" in flat and "H001" in flat and "390.00" in flat and "200.00" in flat
    assert "Not final yet: 疑点待复核 (pending_review) 1" in flat
    assert (tmp_path / "st.xlsx").is_file()
    r = run(app, ["deduct", "finalize", "--period", "2026-03", "--db", dbf])
    assert r.exit_code == 0 and "Nothing new stands for 2026-03" in " ".join(r.output.split())
    r = run(app, ["deduct", "show", "--period", "2026-03", "--db", dbf])
    assert r.exit_code == 0 and "Reconciled with the findings table to the cent." in " ".join(r.output.split())


def _money(con) -> tuple[list, list]:
    return (
        con.execute("SELECT finding_id, deduction_amt FROM findings ORDER BY 1").fetchall(),
        con.execute("SELECT finding_id, bkkp_sn, carried FROM finding_lines ORDER BY 1, 2").fetchall(),
    )


def _touched_settles_as_everything(con, untouched_visit: str) -> None:
    """Scramble the money of the touched lines (every line but those of ``untouched_visit``'s
    findings) and of the findings holding one, final ones excepted; settling the touched lines
    must put back what settling everything puts back (and what was there)."""
    money.settle_deductions(con)
    settled = _money(con)
    con.execute(
        f"""CREATE OR REPLACE TEMP TABLE {money.TOUCHED_LINES} AS
            SELECT DISTINCT bkkp_sn FROM finding_lines
            WHERE finding_id NOT IN (SELECT finding_id FROM findings WHERE mdtrt_id = ?)""",
        [untouched_visit],
    )
    scramble = f"""
        UPDATE finding_lines SET carried = claim + 7
        WHERE bkkp_sn IN (SELECT bkkp_sn FROM {money.TOUCHED_LINES})
          AND finding_id NOT IN (SELECT finding_id FROM finding_state WHERE statement_id IS NOT NULL);
        UPDATE findings SET deduction_amt = 999
        WHERE finding_id IN (SELECT finding_id FROM finding_lines WHERE bkkp_sn IN (SELECT bkkp_sn FROM {money.TOUCHED_LINES}))
          AND finding_id NOT IN (SELECT finding_id FROM finding_state WHERE statement_id IS NOT NULL);"""
    con.execute(scramble)
    assert _money(con) != settled
    money.settle_deductions(con, touched=True)
    assert _money(con) == settled
    con.execute(scramble)
    money.settle_deductions(con)
    assert _money(con) == settled


def test_settling_the_touched_lines_gives_what_settling_everything_gives(tmp_path, monkeypatch):
    """A nightly run settles only the lines its findings touch (money.settle_deductions with
    touched=True): it must give what the full settling gives. First with a line two findings
    claim whose larger claim was overturned (the smaller carries it) and a confirmed suspect;
    then with that line in a final statement and a new rule version claiming it again (the
    line is frozen: the new finding carries nothing)."""
    b, v = loop_batch()
    con = loop_db(tmp_path, monkeypatch, b)
    sex, age = finding(con, v["both"], "R-SEX-001"), finding(con, v["age"], "R-AGE-001")
    lifecycle.transition(con, sex["id"], "appeal", "王芳", "患者为女性", clock=clock("2026-04-02"))
    lifecycle.transition(con, sex["id"], "overturn", "李审", "属实", clock=clock("2026-04-08"))
    lifecycle.transition(con, age["id"], "confirm", "李审", clock=clock("2026-04-02"))
    _touched_settles_as_everything(con, v["sex"])
    assert finding(con, v["both"], "R-FRQ-001")["deduction"] == D("120.00")
    assert finding(con, v["age"], "R-AGE-001")["deduction"] == D("24.70")

    res = deduct.finalize(con, "2026-03", "H001", clock=clock("2026-04-20"))
    assert finding(con, v["both"], "R-FRQ-001")["statement"] == res.statements[0].statement_id
    rescreen(tmp_path, con, RULES_V2, "rules_v2")
    v2 = "SELECT claimed_amt, deduction_amt FROM findings WHERE mdtrt_id = ? AND rule_id = 'R-SEX-001' AND rule_version = '2'"
    assert con.execute(v2, [v["both"]]).fetchall() == [(D("180.00"), D("0.00"))]  # BOTH1 was deducted for good
    _touched_settles_as_everything(con, v["sex"])
    assert con.execute(v2, [v["both"]]).fetchall() == [(D("180.00"), D("0.00"))]
