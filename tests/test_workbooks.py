"""Workbooks a hospital accepts: names beside codes, numbers stored as numbers, the appeal
workbook's protected bureau columns and the receipt that names an edited bureau cell."""

from __future__ import annotations

import openpyxl
import pytest

from medaudit import db, names
from medaudit.hospital_loop import appeals, deduct, lifecycle, report
from medaudit.loader import load_batch
from kit import Batch
from test_lifecycle import clock, finding, loop_batch, loop_db

CODE_NAMES = [
    {"kind": "dept", "code": "D02", "code_name": "妇产科", "fixmedins_code": "H001"},
    {"kind": "doctor", "code": "DR02", "code_name": "孙医生", "fixmedins_code": "H001"},
    {"kind": "dept", "code": "D03", "code_name": "普通外科", "fixmedins_code": ""},
]


@pytest.fixture
def named(tmp_path, monkeypatch):
    b, v = loop_batch()
    b.rows["code_names"] += CODE_NAMES
    return loop_db(tmp_path, monkeypatch, b), v


def sheet(path, name):
    rows = list(openpyxl.load_workbook(path)[name].iter_rows(values_only=True))
    return list(rows[0]), [dict(zip(rows[0], r)) for r in rows[1:]]


def edit(path, out, changes: dict[str, dict[str, object]]):
    """A clerk who removes the sheet protection (it has no password) and types into cells."""
    wb = openpyxl.load_workbook(path)
    ws = wb[appeals.SHEET]
    header = [c.value for c in ws[1]]
    for row in ws.iter_rows(min_row=2):
        for col, value in changes.get(row[0].value, {}).items():
            row[header.index(col)].value = value
    wb.save(out)
    return out


# ---------------------------------------------------------------------------- names


def test_code_names_table_loads_with_its_key_and_rejects_unknown_kinds(tmp_path):
    b = Batch()
    b.visit()
    b.rows["code_names"] += [
        {"kind": "dept", "code": "D01", "code_name": "心内科", "fixmedins_code": "H001"},
        {"kind": "ward", "code": "W1", "code_name": "一病区", "fixmedins_code": "H001"},
        {"kind": "dept", "code": "D01", "code_name": "心内科二", "fixmedins_code": "H001"},
        {"kind": "institution", "code": "H009", "code_name": "第九医院", "fixmedins_code": ""},
        {"kind": "doctor", "code": "DR01", "code_name": "", "fixmedins_code": "H001"},
    ]
    con = db.connect(tmp_path / "n.duckdb")
    res = load_batch(b.write(tmp_path / "batch"), con)
    rej = {
        (r["row_no"], r["column_name"]): r["reason"]
        for r in res.rejected.filter(res.rejected["table_name"] == "code_names").to_dicts()
    }
    assert rej == {
        (3, "kind"): 'kind: "ward" is not one of dept, doctor, institution',
        (4, "kind, code, fixmedins_code"): "kind, code, fixmedins_code: duplicate of row 2",
        (6, "code_name"): "code_name: required value is missing",
    }
    nm = names.Names(con)
    assert nm.dept("H001", "D01") == "心内科 (D01)" and nm.dept("H002", "D01") == "D01"
    assert nm.institution("H009") == "第九医院 (H009)"  # no visit of H009: the reference table names it
    assert nm.institution("H001") == "测试医院 (H001)"  # the batch's fixmedins_name
    assert nm.doctor("H001", None) == "" and names.label("", "0101") == "0101"
    # the reload policy of every table: a name already loaded is not loaded twice
    b2 = Batch()
    b2.rows["code_names"].append({"kind": "institution", "code": "H009", "code_name": "第九医院", "fixmedins_code": ""})
    b2.visit()
    res2 = load_batch(b2.write(tmp_path / "batch2"), con)
    assert (
        "was already loaded in batch 1"
        in res2.rejected.filter(res2.rejected["table_name"] == "code_names")["reason"][0]
    )


def test_appeal_workbook_names_numbers_and_protection(named, tmp_path):
    con, v = named
    res = appeals.export_workbook(con, "H001", "2026-03", tmp_path / "a.xlsx", clock("2026-04-02"))
    header, rows = sheet(res.path, appeals.SHEET)
    by = {(r["就诊ID"], r["规则编号"]): r for r in rows}
    both = by[(v["both"], "R-SEX-001")]
    assert (both["科室"], both["医生"]) == ("妇产科 (D02)", "孙医生 (DR02)")
    assert by[(v["bed"], "R-FRQ-001")]["科室"] == "普通外科 (D03)"  # a bureau-wide name
    assert by[(v["sex"], "R-SEX-001")]["科室"] == "D01"  # no name anywhere: the code alone
    wb = openpyxl.load_workbook(res.path)
    ws = wb[appeals.SHEET]
    assert ws.protection.sheet and ws.protection.autoFilter is False  # protected; filtering stays allowed
    for row in ws.iter_rows(min_row=2, max_row=len(rows) + 1):
        locked = {header[j]: c.protection.locked for j, c in enumerate(row)}
        assert not locked["申诉理由"] and not locked["附件"]
        assert all(locked[c] for c in appeals.BUREAU_COLUMNS)
    assert wb[appeals.ORIGINAL_SHEET].sheet_state == "veryHidden" and wb["明细"].protection.sheet
    info = {r[0]: r[1] for r in wb["说明"].iter_rows(values_only=True)}
    assert (info["疑点数"], info["可申诉"]) == (5, 4)  # numbers, not text
    _, lines = sheet(res.path, "明细")
    line = next(r for r in lines if r["明细流水号"] == "BOTH1")
    assert (line["数量"], line["单价（元）"], line["金额（元）"]) == (3, 60, 180)
    assert line["医保目录编码"] == "002101030300000"  # a code keeps its leading zeros


def test_import_reports_edited_bureau_cells_in_the_receipt(named, tmp_path):
    con, v = named
    res = appeals.export_workbook(con, "H001", "2026-03", tmp_path / "a.xlsx", clock("2026-04-02"))
    sex, bed = finding(con, v["sex"], "R-SEX-001")["id"], finding(con, v["bed"], "R-FRQ-001")["id"]
    age = finding(con, v["age"], "R-AGE-001")["id"]
    edit(
        res.path,
        tmp_path / "f.xlsx",
        {
            sex: {"扣款金额（元）": 0},  # an edited amount, no reason: not "not appealed"
            bed: {
                "扣款金额（元）": 0,
                "科室": "X",
                "申诉理由": "当日只收一次",
            },  # edited, and a reason: filed on the bureau's values
        },
    )
    out = appeals.import_workbook(con, tmp_path / "f.xlsx", "王芳", "H001", clock("2026-04-03"))
    assert [fid for _, fid in out.filed] == [bed]
    assert [(fid, why) for _, fid, why in out.refused] == [
        (
            sex,
            "局方列被修改（不作为申诉，按导出时的原值处理）：扣款金额（元）“180”改为“0”。对扣款有异议请在“申诉理由”列填写理由",
        )
    ]
    assert out.untouched == 3 and {fid for _, fid, _ in out.edited} == {sex, bed}
    assert finding(con, v["sex"], "R-SEX-001")["status"] == "pending_appeal"
    assert finding(con, v["sex"], "R-SEX-001")["deduction"] == 180  # the workbook never changes money
    assert finding(con, v["age"], "R-AGE-001")["id"] == age
    appeals.write_receipt(out, tmp_path / "f.xlsx", tmp_path / "r.xlsx")
    receipt = list(openpyxl.load_workbook(tmp_path / "r.xlsx")["回执"].iter_rows(values_only=True))
    rows = {r[1]: r for r in receipt[1:] if r[1]}
    assert (
        rows[bed][2] == "已受理"
        and "科室“普通外科 (D03)”改为“X”" in rows[bed][3]
        and "扣款金额（元）“30”改为“0”" in rows[bed][3]
    )
    assert rows[sex][2] == "未受理" and "扣款金额（元）“180”改为“0”" in rows[sex][3]
    assert isinstance(receipt[1][0], int)
    assert receipt[-1][0].endswith("其中 2 行修改了局方列（见原因）。")


def test_import_reports_a_cleared_row(named, tmp_path):
    con, v = named
    res = appeals.export_workbook(con, "H001", "2026-03", tmp_path / "a.xlsx", clock("2026-04-02"))
    sex = finding(con, v["sex"], "R-SEX-001")["id"]
    wb = openpyxl.load_workbook(res.path)
    ws = wb[appeals.SHEET]
    for row in ws.iter_rows(min_row=2):
        if row[0].value == sex:
            for c in row:
                c.value = None
    wb.save(tmp_path / "f.xlsx")
    out = appeals.import_workbook(con, tmp_path / "f.xlsx", "王芳", "H001", clock("2026-04-03"))
    assert [fid for _, fid, _ in out.refused] == [sex] and "找不到" in out.refused[0][2]
    assert out.untouched == 4


# ---------------------------------------------------------------------------- numbers as numbers

#: headers whose cells hold numbers in every workbook of the project
NUMERIC = (
    "（元）",
    "疑点数",
    "数量",
    "第几次",
    "扣款单号",
    "行号",
    "扣款明细行数",
    "可申诉",
    "涉及就诊人次",
    "待申诉疑点数",
)


def numeric_cells_are_numbers(path) -> int:
    """Every cell under a numeric header (or beside a numeric key on 汇总/说明) is a number;
    returns how many were checked."""
    n = 0
    for ws in openpyxl.load_workbook(path).worksheets:
        rows = list(ws.iter_rows(values_only=True))
        if not rows:
            continue
        if ws.title in ("汇总", "说明"):  # key / value
            for r in rows:
                if all(c is None or isinstance(c, str) for c in r[1:]) and sum(c is not None for c in r) > 2:
                    continue  # the header row of a table on the sheet
                if r and isinstance(r[0], str) and any(k in r[0] for k in NUMERIC) and len(r) > 1 and r[1] is not None:
                    assert isinstance(r[1], (int, float)), (path.name, ws.title, r)
                    n += 1
            continue
        for j, h in enumerate(rows[0]):
            if isinstance(h, str) and any(k in h for k in NUMERIC):
                for r in rows[1:]:
                    if j < len(r) and r[j] not in (None, ""):
                        assert isinstance(r[j], (int, float)), (path.name, ws.title, h, r[j])
                        n += 1
    return n


def test_every_workbook_stores_numbers_as_numbers(named, tmp_path):
    con, v = named
    exp = appeals.export_workbook(con, "H001", "2026-03", tmp_path / "a.xlsx", clock("2026-04-02"))
    lifecycle.transition(
        con, finding(con, v["both"], "R-SEX-001")["id"], "appeal", "王芳", "登记错误", clock=clock("2026-04-02")
    )
    res = deduct.finalize(con, "2026-03", "H001", clock=clock("2026-04-20"))
    st = deduct.write_statement_xlsx(con, [s.statement_id for s in res.statements], tmp_path / "s.xlsx")
    x, _, _ = report.build(con, "H001", "2026-03", tmp_path / "rep", clock("2026-04-20"))
    counts = {p.name: numeric_cells_are_numbers(p) for p in (exp.path, st, x)}
    assert all(n > 5 for n in counts.values()), counts
    # the report's 明细行 has each line's quantity and unit price
    header, lines = sheet(x, "明细行")
    assert {"数量", "单价（元）"} <= set(header)
    bed = [r for r in lines if r["明细流水号"] in ("BED1", "BED2")]
    assert {(r["数量"], r["单价（元）"]) for r in bed} == {(1, 30)}
    _, by_dept = sheet(x, "按科室")
    assert {r["科室"] for r in by_dept} >= {"妇产科 (D02)", "普通外科 (D03)", "D01"}
    _, by_doctor = sheet(x, "按医生")
    assert any(r["医生"] == "孙医生 (DR02)" and r["科室"] == "妇产科 (D02)" for r in by_doctor)
    _, details = sheet(x, "明细")
    both = next(r for r in details if r["就诊ID"] == v["both"] and r["规则编号"] == "R-SEX-001")
    assert both["医院申诉理由"] == "登记错误（王芳，2026-04-02）" and both["状态代码"] == "appealed"


def test_cli_import_lists_edited_bureau_cells(named, tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from kit import set_wall_clock
    from medaudit.cli import app

    con, v = named
    res = appeals.export_workbook(con, "H001", "2026-03", tmp_path / "a.xlsx", clock("2026-04-02"))
    sex = finding(con, v["sex"], "R-SEX-001")["id"]
    con.close()
    edit(res.path, tmp_path / "f.xlsx", {sex: {"扣款金额（元）": 0}})
    set_wall_clock(monkeypatch, "2026-04-03")
    r = CliRunner().invoke(
        app,
        [
            "appeal",
            "import",
            str(tmp_path / "f.xlsx"),
            "--by",
            "王芳",
            "--institution",
            "H001",
            "--db",
            str(tmp_path / "loop.duckdb"),
        ],
    )
    flat = " ".join(r.output.split())
    assert r.exit_code == 0, r.output
    assert "0 appeals filed for H001, 1 rows refused, 4 findings not appealed" in flat
    assert "Bureau cells edited in the workbook" in flat and sex[:12] in flat


def test_review_help_gives_states_and_decisions_in_chinese_beside_their_codes():
    from typer.testing import CliRunner

    from medaudit.cli import app

    r = CliRunner().invoke(app, ["review", "list", "--help"], env={"COLUMNS": "200"})
    flat = " ".join(r.output.split())
    assert "expired 逾期未申诉（维持扣款）" in flat and "pending_review 疑点待复核" in flat
    r = CliRunner().invoke(app, ["review", "decide", "--help"], env={"COLUMNS": "200"})
    assert "uphold 驳回申诉" in " ".join(r.output.split())
