"""Security of the hospital loop (issue items 6, 7, 8): workbooks, time and money, database locks.

6. Appeal import files for the institution the bureau names, never the one the workbook says;
   a workbook naming any finding that is not that institution's is refused whole; attachments
   are plain file names inside the workbook's folder; every xlsx stores text as text.
7. Nothing in the environment moves the clock; ``deduct finalize --as-of`` is the explicit,
   logged simulated day; typed amounts round half-up and nan/inf/negatives are refused.
8. A command on a database another process holds ends in one line naming the holder.
"""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
import textwrap
from decimal import Decimal as D
from pathlib import Path

import openpyxl
import pytest
from typer.testing import CliRunner

from kit import set_wall_clock
from medaudit import db, money
from medaudit.hospital_loop import appeals, deduct, lifecycle, report
from medaudit.cli import app
from test_appeals import fill
from test_lifecycle import RULES, UTERUS, clock, finding, loop_batch, loop_db

REPO = Path(__file__).resolve().parents[1]


def run(dbf, *args):
    r = CliRunner().invoke(app, [*args, "--db", str(dbf)])
    r.flat = " ".join(r.output.split())
    return r


def n_events(con) -> int:
    return con.execute("SELECT count(*) FROM finding_events").fetchall()[0][0]


# ---------------------------------------------------------------------------- 6. whose workbook


def test_import_files_for_the_named_institution_never_the_workbooks_own(tmp_path, monkeypatch):
    b, v = loop_batch()
    con = loop_db(tmp_path, monkeypatch, b)
    other = finding(con, v["other"], "R-SEX-001")["id"]  # H002's
    # H002's workbook, its 说明 sheet rewritten to claim H001 (what a forger would do)
    exported = appeals.export_workbook(con, "H002", "2026-03", tmp_path / "h002.xlsx", clock("2026-04-02")).path
    wb = openpyxl.load_workbook(exported)
    for row in wb["说明"].iter_rows():
        if row[0].value == "机构编码":
            row[1].value = "H001"
    wb.save(exported)
    filled = fill(exported, tmp_path / "forged.xlsx", {other: ("申诉", None)})
    before = n_events(con)
    # no --institution: refused, the message says whose the findings are
    with pytest.raises(appeals.AppealFileError, match=r"--institution CODE .* its findings belong to H002"):
        appeals.import_workbook(con, filled, "王芳", None, clock=clock("2026-04-03"))
    # the bureau says H001 sent it: H002's finding in it refuses the whole workbook, naming row and id
    with pytest.raises(
        appeals.WorkbookRefused,
        match=f"refused whole, nothing was filed: row 2: finding {other} belongs to institution H002, not H001",
    ):
        appeals.import_workbook(con, filled, "王芳", "H001", clock=clock("2026-04-03"))
    assert n_events(con) == before
    assert finding(con, v["other"], "R-SEX-001")["status"] == "pending_appeal"


def test_one_foreign_or_unknown_finding_refuses_the_whole_workbook(tmp_path, monkeypatch):
    b, v = loop_batch()
    con = loop_db(tmp_path, monkeypatch, b)
    sex, bed = finding(con, v["sex"], "R-SEX-001")["id"], finding(con, v["bed"], "R-FRQ-001")["id"]
    other = finding(con, v["other"], "R-SEX-001")["id"]
    exported = appeals.export_workbook(con, "H001", "2026-03", tmp_path / "h001.xlsx", clock("2026-04-02")).path
    filled = fill(
        exported,
        tmp_path / "mixed.xlsx",
        {sex: ("登记错误", None), bed: ("两张床", None)},
        [{"疑点编号": other}, {"疑点编号": "deadbeef" * 4, "申诉理由": "x"}],
    )  # rows 7 and 8
    before = n_events(con)
    with pytest.raises(appeals.WorkbookRefused) as e:
        appeals.import_workbook(con, filled, "王芳", "H001", clock=clock("2026-04-03"))
    assert f"row 7: finding {other} belongs to institution H002, not H001" in str(e.value)
    assert f"row 8: finding {'deadbeef' * 4} does not exist" in str(e.value)
    assert [(no, fid) for no, fid, _ in e.value.rows] == [(7, other), (8, "deadbeef" * 4)]
    # nothing went in, not even the good rows
    assert n_events(con) == before
    assert {finding(con, v[k], r)["status"] for k, r in (("sex", "R-SEX-001"), ("bed", "R-FRQ-001"))} == {
        "pending_appeal"
    }

    # the CLI: one error, the receipt lists the rows without saying whose the finding is
    con.close()
    set_wall_clock(monkeypatch, "2026-04-03")
    r = run(
        tmp_path / "loop.duckdb",
        "appeal",
        "import",
        str(filled),
        "--by",
        "王芳",
        "--institution",
        "H001",
        "--receipt",
        str(tmp_path / "回执.xlsx"),
    )
    assert r.exit_code == 2 and "refused whole" in r.flat and "Traceback" not in r.output
    cells = [
        c for row in openpyxl.load_workbook(tmp_path / "回执.xlsx")["回执"].iter_rows(values_only=True) for c in row
    ]
    assert cells[4:8] == [7, other, "未受理", appeals.NOT_YOURS]
    assert "H002" not in " ".join(str(c) for c in cells) and "整份工作簿未受理" in " ".join(str(c) for c in cells)


def test_attachments_are_plain_names_inside_the_workbooks_folder(tmp_path, monkeypatch):
    b, v = loop_batch()
    con = loop_db(tmp_path, monkeypatch, b)
    ids = {k: finding(con, v[k], r)["id"] for k, r in (("sex", "R-SEX-001"), ("bed", "R-FRQ-001"))}
    both = {r: finding(con, v["both"], r)["id"] for r in ("R-SEX-001", "R-FRQ-001")}
    folder = tmp_path / "hospital"
    folder.mkdir()
    (tmp_path / "secret.txt").write_text("the bureau's secret")
    (folder / "病历.pdf").write_bytes(b"record")
    os.symlink(tmp_path / "secret.txt", folder / "link.pdf")  # escapes to a file that exists
    os.symlink(tmp_path / "no-such-file", folder / "ghost.pdf")  # escapes to nothing
    os.symlink(folder / "病历.pdf", folder / "alias.pdf")  # stays inside: fine
    exported = appeals.export_workbook(con, "H001", "2026-03", folder / "h001.xlsx", clock("2026-04-02")).path
    filled = fill(
        exported,
        folder / "filled.xlsx",
        {
            ids["sex"]: ("理由", "病历.pdf；alias.pdf"),
            ids["bed"]: ("理由", "../secret.txt"),
            both["R-SEX-001"]: ("理由", "link.pdf"),
            both["R-FRQ-001"]: ("理由", "ghost.pdf"),
        },
    )
    res = appeals.import_workbook(con, filled, "王芳", "H001", clock=clock("2026-04-03"))
    assert [fid for _, fid in res.filed] == [ids["sex"]]
    why = {fid: r for _, fid, r in res.refused}
    assert why[ids["bed"]].startswith("附件只能写文件名") and "../secret.txt" in why[ids["bed"]]
    # a link to a file that exists and a link to nothing read the same: nothing tells what is outside
    assert why[both["R-SEX-001"]] == "附件指向工作簿文件夹之外，不予读取：link.pdf"
    assert why[both["R-FRQ-001"]] == "附件指向工作簿文件夹之外，不予读取：ghost.pdf"
    att = lifecycle.history(con, ids["sex"])[-1]["attachments"]
    assert [a["name"] for a in att] == ["病历.pdf", "alias.pdf"] and {a["bytes"] for a in att} == {6}
    # names with a folder, a drive or `..` in any spelling, whether or not something is there
    for name in (
        "../secret.txt",
        "../nothing.txt",
        "/etc/passwd",
        "/nonexistent",
        "..\\secret.txt",
        "sub/a.pdf",
        "C:secret.txt",
        "..",
        ".",
        "a\x00b",
    ):
        files, reason = appeals.attachments_in(folder, name)
        assert files == [] and reason.startswith("附件只能写文件名"), name
    assert appeals.plain_file_name("病历 2026.03.pdf") and not appeals.plain_file_name("")


# ---------------------------------------------------------------------------- 6. text is text

PAYLOADS = ['=HYPERLINK("http://x","y")', "=1+1", "+cmd|' /C calc'!A0", "@SUM(A1)", "-2+3"]


def test_every_workbook_stores_text_as_text(tmp_path, monkeypatch):
    hyper, plus, dde, at, minus = PAYLOADS
    b, v = loop_batch()
    bad = b.visit(gend="1", psn_name="=1+1", fixmedins_name=hyper, adm_dept_codg=plus, chfpdr_code=hyper)
    b.line(bad, UTERUS, hilist_name=dde, pric="50", bkkp_sn="BAD1", bilg_dept_codg=plus, bilg_dr_code=hyper)
    rules = RULES.replace("name: 限女性使用的检查项目", f'name: "{at}"').replace(
        "basis: 国家医保局第一批规则库（限定性别对象）", f'basis: "{minus}"'
    )
    con = loop_db(tmp_path, monkeypatch, b, rules=rules)
    folder = tmp_path / "wb"
    books = {
        "appeal export": appeals.export_workbook(
            con, "H001", "2026-03", folder / "export.xlsx", clock("2026-04-02")
        ).path
    }
    # the receipt: a workbook whose own file name is a formula, the finding's row refused
    sex = finding(con, v["sex"], "R-SEX-001")["id"]
    src = fill(books["appeal export"], folder / "=1+1.xlsx", {sex: ("理由", "-2+3.pdf")})
    res = appeals.import_workbook(con, src, "王芳", "H001", clock=clock("2026-04-03"))
    books["receipt"] = appeals.write_receipt(res, src, folder / "receipt.xlsx")
    books["refusal receipt"] = appeals.write_receipt(
        appeals.WorkbookRefused("x", [(2, hyper, appeals.NOT_YOURS)]), folder / f"{at}.xlsx", folder / "refusal.xlsx"
    )
    fin = deduct.finalize(con, "2026-03", "H001", by=minus, clock=clock("2026-04-20"))
    books["deduction statement"] = deduct.write_statement_xlsx(
        con, [s.statement_id for s in fin.statements], folder / "statement.xlsx"
    )
    books["report"] = report.build(con, "H001", "2026-03", folder / "report", clock("2026-04-20"))[0]
    expect = {
        "appeal export": {plus, hyper, dde, at, minus},
        "receipt": {"=1+1.xlsx", "-2+3.pdf"},
        "refusal receipt": {hyper, at},
        "deduction statement": set(PAYLOADS),
        "report": {plus, hyper, dde, at, minus},
    }
    for name, path in books.items():
        wb = openpyxl.load_workbook(path)
        cells = [c for ws in wb.worksheets for row in ws.iter_rows() for c in row if c.value is not None]
        formulas = [(c.parent.title, c.coordinate, c.value) for c in cells if c.data_type == "f"]
        assert formulas == [], f"{name}: {formulas[:3]}"
        texts = [c.value for c in cells if c.data_type == "s"]
        for p in expect[name]:
            assert any(p in t for t in texts), f"{name}: {p!r} not stored as text"


# ---------------------------------------------------------------------------- 7. time


def test_the_environment_does_not_move_the_clock(tmp_path, monkeypatch, wall_clock):
    b, v = loop_batch()
    con = loop_db(tmp_path, monkeypatch, b)  # screened on 2026-04-01, deadline 2026-04-15
    con.close()
    wall_clock("2026-04-03")
    monkeypatch.setenv("MEDAUDIT_NOW", "2026-05-20")  # what moved deadlines before
    assert lifecycle.default_clock() == dt.datetime(2026, 4, 3, 9, 0)
    r = run(tmp_path / "loop.duckdb", "deduct", "finalize", "--period", "2026-03")
    assert r.exit_code == 0 and "Nothing new stands" in r.flat, r.output
    con = db.connect(tmp_path / "loop.duckdb")
    assert finding(con, v["sex"], "R-SEX-001")["status"] == "pending_appeal"
    assert con.execute("SELECT max(event_at) FROM finding_events").fetchall()[0][0] < dt.datetime(2026, 5, 1)


def test_finalize_as_of_is_explicit_logged_and_never_later_than_today(tmp_path, monkeypatch):
    b, v = loop_batch()
    con = loop_db(tmp_path, monkeypatch, b)  # deadline 2026-04-15
    sex = finding(con, v["sex"], "R-SEX-001")["id"]
    con.close()
    dbf = tmp_path / "loop.duckdb"
    set_wall_clock(monkeypatch, "2026-04-13 10:30:00")
    r = run(dbf, "deduct", "finalize", "--period", "2026-03", "--as-of", "2026-04-20")
    assert r.exit_code == 2 and "later than today (2026-04-13)" in r.flat
    r = run(dbf, "deduct", "finalize", "--period", "2026-03", "--as-of", "20260401")
    assert r.exit_code == 2 and "--as-of must be a date YYYY-MM-DD" in r.flat
    con = db.connect(dbf)
    assert con.execute("SELECT count(*) FROM finding_events WHERE action <> 'create'").fetchall() == [(0,)]
    con.close()
    # weeks later (every window closed and expired by now) the month is closed on its cut-off day:
    # on the deadline day itself nothing stands yet, on the day after it does
    set_wall_clock(monkeypatch, "2026-05-06 11:00:00")
    assert run(dbf, "review", "list").exit_code == 0  # any command expires what is due by the real clock
    r = run(dbf, "deduct", "finalize", "--period", "2026-03", "--institution", "H001", "--as-of", "2026-04-15")
    assert r.exit_code == 0 and "Nothing new stands" in r.flat, r.output
    r = run(dbf, "deduct", "finalize", "--period", "2026-03", "--institution", "H001", "--as-of", "2026-04-16")
    assert r.exit_code == 0 and "judged as of 2026-04-16 (--as-of; today is 2026-05-06)" in r.flat, r.output
    con = db.connect(dbf)
    log = lifecycle.history(con, sex)
    assert [(e["action"], e["event_at"], e["as_of"]) for e in log[1:]] == [
        ("expire", dt.datetime(2026, 5, 6, 11, 0), None),
        ("finalize", dt.datetime(2026, 5, 6, 11, 0), dt.date(2026, 4, 16)),
    ]
    assert con.execute("SELECT created_at, as_of FROM deduction_statements").fetchall() == [
        (dt.datetime(2026, 5, 6, 11, 0), dt.date(2026, 4, 16))
    ]
    con.close()
    from medaudit.commands import appeal as appeal_cmd

    monkeypatch.setattr(appeal_cmd.console, "width", 250)  # rich would wrap the table's cells
    r = run(dbf, "appeal", "history", sex)
    assert "2026-05-06 11:00 (as of 2026-04-16)" in r.flat


# ---------------------------------------------------------------------------- 7. money


@pytest.mark.parametrize(
    "text, value",
    [
        ("10.005", "10.01"),
        ("10.004", "10.00"),
        ("0.125", "0.13"),
        ("2.675", "2.68"),
        ("20", "20.00"),
        (".5", "0.50"),
        (10.005, "10.01"),
        (D("1.005"), "1.01"),
    ],
)
def test_amounts_round_half_up(text, value):
    assert money.parse_amount(text, "--amount") == D(value)


@pytest.mark.parametrize(
    "text",
    [
        "nan",
        "NaN",
        "inf",
        "-inf",
        "Infinity",
        "-1",
        "-0.01",
        "1e3",
        "12元",
        "",
        "1,000",
        float("nan"),
        float("inf"),
        -5,
        "99999999999999999",
    ],
)
def test_amounts_refused_with_a_message(text):
    with pytest.raises(money.AmountError, match="^--amount: "):
        money.parse_amount(text, "--amount")


def test_review_decide_amount_rounds_half_up_and_refuses_nan_in_one_line(tmp_path, monkeypatch):
    b, v = loop_batch()
    con = loop_db(tmp_path, monkeypatch, b)
    age = finding(con, v["age"], "R-AGE-001")["id"]  # a suspect, 24.70 at risk
    con.close()
    dbf = tmp_path / "loop.duckdb"
    set_wall_clock(monkeypatch, "2026-04-02")
    for bad, says in (
        ("nan", "'nan' is not an amount of yuan"),
        ("inf", "'inf' is not an amount"),
        ("-5", "must not be negative"),
        ("0", "more than 0"),
    ):
        r = run(dbf, "review", "decide", age, "--decision", "confirm", "--by", "李审", "--amount", bad)
        assert r.exit_code == 2 and says in r.flat, r.output
        assert "Traceback" not in r.output and len(r.output.strip().splitlines()) <= 2, r.output
    r = run(dbf, "review", "decide", age, "--decision", "confirm", "--by", "李审", "--amount", "10.005")
    assert r.exit_code == 0 and "deduction now 10.01" in r.flat, r.output
    con = db.connect(dbf)
    assert finding(con, v["age"], "R-AGE-001")["claimed"] == D("10.01")


# ---------------------------------------------------------------------------- 8. locks

HOLDER = textwrap.dedent("""
    import sys, duckdb
    con = duckdb.connect(sys.argv[1])
    print("ready", flush=True)
    sys.stdin.read()  # hold the lock until the test closes our stdin
""")


@pytest.fixture
def held_db(tmp_path):
    """A database file another process holds open (as ``medaudit serve`` does)."""
    path = tmp_path / "held.duckdb"
    db.connect(path).close()
    p = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(path)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert p.stdout.readline().strip() == "ready"
        yield path, p.pid
    finally:
        p.stdin.close()
        p.wait(timeout=10)


def test_connect_says_who_holds_the_database(held_db):
    path, pid = held_db
    for ro in (False, True):
        with pytest.raises(db.DatabaseInUse) as e:
            db.connect(path, read_only=ro)
        assert e.value.pid == pid
        assert str(e.value).startswith(f"the database {path} is in use by process {pid} (")
        assert str(e.value).endswith("); stop it or use another --db")


@pytest.mark.parametrize(
    "args",
    [
        ["findings"],
        ["load", "nowhere"],
        ["appeal", "history", "abcdef"],
        ["appeal", "export", "--institution", "H", "--period", "2026-03"],
        ["review", "list"],
        ["review", "decide", "abcdef", "--decision", "uphold", "--by", "x", "--reason", "y"],
        ["deduct", "finalize", "--period", "2026-03"],
        ["deduct", "show"],
        ["report", "--institution", "H", "--period", "2026-03"],
    ],
)
def test_every_command_on_a_held_database_ends_in_one_line(held_db, args, tmp_path, monkeypatch):
    path, pid = held_db
    monkeypatch.chdir(tmp_path)
    r = CliRunner().invoke(app, [*args, "--db", str(path)])
    assert r.exit_code == 3, r.output
    lines = r.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"medaudit: the database {path} is in use by process {pid}"), (
        r.output
    )
    assert lines[0].endswith("stop it or use another --db")


def test_the_real_command_prints_no_traceback(held_db):
    path, pid = held_db
    r = subprocess.run(
        [sys.executable, "-m", "medaudit", "findings", "--db", str(path)],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
    )
    assert r.returncode == 3
    assert r.stderr.strip().splitlines() == [r.stderr.strip()] and "Traceback" not in r.stderr
    assert f"is in use by process {pid} (" in r.stderr


def test_a_workbook_appears_only_whole(tmp_path, monkeypatch):
    """Every xlsx goes through medaudit.xlsx: a write that fails half-way (the disk fills while
    xlsxwriter writes the file) leaves nothing under the asked name and no temporary file; a
    good write leaves exactly the workbook, strings as strings."""
    import openpyxl
    import xlsxwriter

    from medaudit import xlsx

    out = tmp_path / "out.xlsx"
    real_close = xlsxwriter.Workbook.close

    def disk_full(self):
        with open(self.filename, "wb") as f:
            f.write(b"PK\x03\x04 half a zip")
        raise OSError("disk full")

    monkeypatch.setattr(xlsxwriter.Workbook, "close", disk_full)
    wb = xlsx.workbook(out)
    wb.add_worksheet("s").write(0, 0, "=1+1")
    with pytest.raises(OSError):
        wb.close()
    assert list(tmp_path.iterdir()) == []

    monkeypatch.setattr(xlsxwriter.Workbook, "close", real_close)
    wb = xlsx.workbook(out)
    wb.add_worksheet("s").write(0, 0, "=1+1")
    wb.close()
    assert [p.name for p in tmp_path.iterdir()] == ["out.xlsx"]
    cell = openpyxl.load_workbook(out).active["A1"]
    assert (cell.value, cell.data_type) == ("=1+1", "s")
