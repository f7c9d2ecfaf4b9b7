"""The Excel round trip: export a hospital's open findings, read the filled workbook back."""

from __future__ import annotations

import hashlib

import openpyxl
from typer.testing import CliRunner

from medaudit.hospital_loop import appeals, lifecycle
from medaudit.cli import app
from kit import set_wall_clock
from test_lifecycle import clock, finding, loop_batch, loop_db


def rows_of(path):
    ws = openpyxl.load_workbook(path)["申诉"]
    header = [c.value for c in ws[1]]
    return ws, header, [dict(zip(header, [c.value for c in r])) for r in ws.iter_rows(min_row=2)]


def fill(path, out, reasons: dict[str, tuple[str, str]], extra_rows: list[dict] = ()):
    """Write reasons/attachments into the exported workbook, as a hospital clerk would."""
    wb = openpyxl.load_workbook(path)
    ws = wb["申诉"]
    header = [c.value for c in ws[1]]
    ci, cr, ca = header.index("疑点编号"), header.index("申诉理由"), header.index("附件")
    for row in ws.iter_rows(min_row=2):
        fid = row[ci].value
        if fid in reasons:
            row[cr].value, row[ca].value = reasons[fid]
    for extra in extra_rows:
        ws.append([extra.get(h) for h in header])
    wb.save(out)
    return out


def test_export_lists_open_findings_with_evidence_amounts_deadline_and_masked_people(tmp_path, monkeypatch):
    b, v = loop_batch()
    con = loop_db(tmp_path, monkeypatch, b)
    res = appeals.export_workbook(con, "H001", "2026-03", tmp_path / "out.xlsx", clock("2026-04-02"))
    assert (res.n_findings, res.n_appealable) == (5, 4)
    ws, header, rows = rows_of(res.path)
    assert header[-2:] == ["申诉理由", "附件"]
    by = {(r["就诊ID"], r["规则编号"]): r for r in rows}
    assert set(by) == {
        (v["sex"], "R-SEX-001"),
        (v["both"], "R-SEX-001"),
        (v["both"], "R-FRQ-001"),
        (v["bed"], "R-FRQ-001"),
        (v["age"], "R-AGE-001"),
    }
    sex = by[(v["sex"], "R-SEX-001")]
    assert sex["参保人"] == "张*" and sex["证件号"] == "**************1234"
    assert sex["申诉截止日"] == "2026-04-15" and sex["状态"] == "待申诉 (pending_appeal)"
    assert sex["扣款金额（元）"] == 180 and sex["违规金额（元）"] == 180
    assert "患者性别为男" in sex["证据"] and "子宫造影" in sex["证据"]
    assert "SEX1 项目【子宫造影】(002101030300000) 2026-03-02 08:00 1×180.00，金额 180.00" == sex["违规明细"]
    assert sex["依据"] == "国家医保局第一批规则库（限定性别对象）"
    age = by[(v["age"], "R-AGE-001")]
    assert age["状态"] == "疑点待复核 (pending_review)（无需填写）" and age["扣款金额（元）"] == 24.7
    both = by[(v["both"], "R-FRQ-001")]
    assert both["扣款金额（元）"] == 0  # the line's money is carried by the gender finding
    # nobody's full name or ID number is in the file
    text = " ".join(str(c.value) for s in openpyxl.load_workbook(res.path).worksheets for r in s.iter_rows() for c in r)
    assert "张三" not in text and "110101198001011234" not in text
    info = {r[0].value: r[1].value for r in openpyxl.load_workbook(res.path)["说明"].iter_rows()}
    assert info["机构编码"] == "H001" and info["结算月份"] == "2026-03"
    lines = list(openpyxl.load_workbook(res.path)["明细"].iter_rows(min_row=2, values_only=True))
    assert {(r[1], r[2]) for r in lines} >= {("SEX1", "违规项"), ("BED2", "违规项"), ("BED1", "涉及项")}


def test_import_files_good_rows_and_refuses_the_rest_with_reasons(tmp_path, monkeypatch):
    b, v = loop_batch()
    con = loop_db(tmp_path, monkeypatch, b)
    sex = finding(con, v["sex"], "R-SEX-001")["id"]
    both_sex = finding(con, v["both"], "R-SEX-001")["id"]
    both_frq = finding(con, v["both"], "R-FRQ-001")["id"]
    bed = finding(con, v["bed"], "R-FRQ-001")["id"]
    age = finding(con, v["age"], "R-AGE-001")["id"]
    exported = appeals.export_workbook(con, "H001", "2026-03", tmp_path / "h001.xlsx", clock("2026-04-02")).path
    (tmp_path / "病历.pdf").write_bytes(b"scan of the record")
    filled = fill(
        exported,
        tmp_path / "h001_filled.xlsx",
        {
            sex: ("患者为女性，HIS 登记错误", "病历.pdf"),
            both_sex: ("同上", "缺失的文件.pdf"),
            both_frq: ("", "病历.pdf"),  # attachment but no reason
            age: ("不是儿童药", ""),  # a suspect awaiting review: not open for appeal
            # bed left untouched: the hospital accepts it
        },
        extra_rows=[{"疑点编号": sex, "申诉理由": "重复的一行"}],
    )
    res = appeals.import_workbook(con, filled, "医保办 王芳", "H001", clock=clock("2026-04-10"))
    assert res.institution == "H001"
    assert [fid for _, fid in res.filed] == [sex]
    assert res.untouched == 1
    why = {fid: reason for _, fid, reason in res.refused}
    assert set(why) == {both_sex, both_frq, age, sex}
    assert "附件不存在：缺失的文件.pdf" in why[both_sex]
    assert "未填写申诉理由" in why[both_frq]
    assert "疑点待复核" in why[age] and "pending_review" in why[age]
    assert "appealed" in why[sex]  # the duplicate row: already appealed by the first one
    assert finding(con, v["sex"], "R-SEX-001")["status"] == "appealed"
    for fid in (both_sex, both_frq, bed):
        assert (
            con.execute("SELECT status FROM findings WHERE finding_id = ?", [fid]).fetchall()[0][0] == "pending_appeal"
        )
    log = lifecycle.history(con, sex)[-1]
    assert (log["actor"], log["reason"]) == ("医保办 王芳", "患者为女性，HIS 登记错误")
    assert log["attachments"] == [
        {"name": "病历.pdf", "sha256": hashlib.sha256(b"scan of the record").hexdigest(), "bytes": 18}
    ]


def test_import_after_the_deadline_refuses_every_row(tmp_path, monkeypatch):
    b, v = loop_batch()
    con = loop_db(tmp_path, monkeypatch, b)
    sex = finding(con, v["sex"], "R-SEX-001")["id"]
    bed = finding(con, v["bed"], "R-FRQ-001")["id"]
    exported = appeals.export_workbook(con, "H001", "2026-03", tmp_path / "h001.xlsx", clock("2026-04-02")).path
    filled = fill(exported, tmp_path / "late.xlsx", {sex: ("理由", None), bed: ("理由", None)})
    res = appeals.import_workbook(con, filled, "王芳", "H001", clock=clock("2026-04-16"))
    assert res.filed == []
    assert {fid: "申诉期已于 2026-04-15 截止" in r for _, fid, r in res.refused} == {sex: True, bed: True}
    assert finding(con, v["sex"], "R-SEX-001")["status"] == "expired"


def test_import_refuses_a_workbook_of_another_institution(tmp_path, monkeypatch):
    con = loop_db(tmp_path, monkeypatch)
    exported = appeals.export_workbook(con, "H002", "2026-03", tmp_path / "h002.xlsx", clock("2026-04-02")).path
    try:
        appeals.import_workbook(con, exported, "王芳", institution="H001", clock=clock("2026-04-03"))
        raise AssertionError("accepted")
    except appeals.AppealFileError as e:
        assert "belongs to institution H002, not H001" in str(e)
    (tmp_path / "x.xlsx").write_text("not a workbook")
    try:
        appeals.import_workbook(con, tmp_path / "x.xlsx", "王芳", "H001")
        raise AssertionError("accepted")
    except appeals.AppealFileError as e:
        assert "not a readable xlsx" in str(e)


def test_cli_export_import_submit_decide_history(tmp_path, monkeypatch):
    b, v = loop_batch()
    con = loop_db(tmp_path, monkeypatch, b)
    sex = finding(con, v["sex"], "R-SEX-001")["id"]
    bed = finding(con, v["bed"], "R-FRQ-001")["id"]
    con.close()
    dbf = str(tmp_path / "loop.duckdb")
    set_wall_clock(monkeypatch, "2026-04-03")

    def run(*a, **k):  # rich wraps long lines: compare with single spaces
        res = CliRunner().invoke(*a, **k)
        res.flat = " ".join(res.output.split())
        return res

    r = run(
        app,
        [
            "appeal",
            "export",
            "--institution",
            "H001",
            "--period",
            "2026-03",
            "--out",
            str(tmp_path / "e.xlsx"),
            "--db",
            dbf,
        ],
    )
    assert r.exit_code == 0, r.flat
    assert "5 open findings of H001 for 2026-03, 4 of them open for appeal" in r.flat
    fill(tmp_path / "e.xlsx", tmp_path / "f.xlsx", {sex: ("登记错误", None)}, [{"疑点编号": sex, "申诉理由": "x"}])
    r = run(
        app,
        [
            "appeal",
            "import",
            str(tmp_path / "f.xlsx"),
            "--by",
            "王芳",
            "--institution",
            "H001",
            "--receipt",
            str(tmp_path / "回执.xlsx"),
            "--db",
            dbf,
        ],
    )
    assert r.exit_code == 0, r.flat
    assert "1 appeals filed for H001, 1 rows refused, 4 findings not appealed" in r.flat
    receipt = list(openpyxl.load_workbook(tmp_path / "回执.xlsx")["回执"].iter_rows(values_only=True))
    assert receipt[0] == ("行号", "疑点编号", "结果", "原因")
    assert [(r[1], r[2]) for r in receipt[1:3]] == [(sex, "已受理"), (sex, "未受理")]
    assert "appealed" in receipt[2][3]  # the same finding twice: the second row finds it appealed
    # the appended row left the bureau's columns empty: the receipt says so
    assert (
        receipt[4][0] == "f.xlsx：受理 1 条，未受理 1 条，未申诉（视为无异议）4 条，其中 1 行修改了局方列（见原因）。"
    )
    r = run(app, ["appeal", "submit", bed[:10], "--by", "王芳", "--reason", "两张床位费为不同床位", "--db", dbf])
    assert r.exit_code == 0 and "待申诉 (pending_appeal) -> 已申诉待复核 (appealed)" in r.flat, r.output
    r = run(app, ["appeal", "submit", bed[:10], "--by", "王芳", "--reason", "again", "--db", dbf])
    assert r.exit_code == 2 and bed[:12] in r.flat and "appealed" in r.flat
    r = run(
        app, ["review", "decide", bed[:10], "--decision", "overturn", "--by", "李审", "--reason", "属实", "--db", dbf]
    )
    assert r.exit_code == 0 and "(appealed) -> 申诉成立（撤销扣款） (overturned); deduction now 0.00" in r.flat, (
        r.output
    )
    r = run(app, ["review", "decide", sex[:10], "--decision", "explode", "--by", "李审", "--db", dbf])
    assert (
        r.exit_code == 2 and "'explode' is not one of 'uphold', 'overturn', 'confirm', 'dismiss'" in r.flat
    )  # a choice (--help lists them)
    r = run(app, ["appeal", "history", sex[:10], "--db", dbf])
    assert r.exit_code == 0 and "登记错误" in r.flat and "王芳" in r.flat
    from medaudit.commands import review

    monkeypatch.setattr(review.console, "width", 250)
    r = run(app, ["review", "list", "--db", dbf])
    assert r.exit_code == 0 and sex[:12] in r.flat and "登记错误" in r.flat
    r = run(app, ["appeal", "settings", "--window-days", "7", "--second-appeal", "--db", dbf])
    assert r.exit_code == 0 and "appeal window 7 working days; second appeal (复议) allowed" in r.flat
