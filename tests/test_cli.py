"""The analyst's terminal: what `medaudit` prints at 80 columns and when piped (issue 11, item 3)."""

from __future__ import annotations

from pathlib import Path

import pytest
from rich.cells import cell_len
from rich.console import Console
from typer.testing import CliRunner

from kit import Batch, write_rules
from medaudit import cli, db
from medaudit.loader import load_batch

ROOT = Path(__file__).resolve().parent.parent
UTERO = "002101030300000"  # 子宫造影, for women

# two rules: one flags the man's 子宫造影, the other never hits
TWO_RULES = f"""
- id: R-GEN-1
  version: 1
  name: 限女性使用的检查项目
  type: restrict_gender
  items: {{codes: ["{UTERO}"]}}
  params: {{gender: 2}}
- id: R-GEN-2
  version: 1
  name: 限男性使用的检查项目
  type: restrict_gender
  items: {{codes: ["999999999999999"]}}
  params: {{gender: 1}}
"""


@pytest.fixture
def run(monkeypatch):
    """``run(args)``: the CLI as a piped 80-column terminal sees it (COLUMNS=80, not a tty)."""
    monkeypatch.setenv("COLUMNS", "80")
    # the module consoles were made at import: make them again under this environment
    for mod in (cli,):
        monkeypatch.setattr(mod, "console", Console())
        monkeypatch.setattr(mod, "err", Console(stderr=True))

    def invoke(args):
        return CliRunner().invoke(cli.app, [str(a) for a in args], env={"COLUMNS": "80"})

    return invoke


def assert_fits(text: str, width: int = 80) -> None:
    long = [line for line in text.splitlines() if cell_len(line) > width]
    assert not long, f"{len(long)} lines wider than {width}: {long[:3]}"


@pytest.fixture(scope="module")
def sample_db(tmp_path_factory) -> Path:
    """The README's sample batch, loaded (not screened)."""
    path = tmp_path_factory.mktemp("sample") / "sample.duckdb"
    con = db.connect(path)
    load_batch(ROOT / "sample_data" / "batch", con)
    con.close()
    return path


def small_batch(tmp_path: Path, settled: bool = True) -> tuple[Path, Path]:
    """A loaded database with one man's 子宫造影 (settled or an open stay) and the two rules."""
    b = Batch()
    v = b.visit(gend="1", settled=settled)
    b.line(v, UTERO, hilist_name="子宫造影", pric="180")
    tmp_path.mkdir(parents=True, exist_ok=True)
    path = tmp_path / "t.duckdb"
    con = db.connect(path)
    load_batch(b.write(tmp_path / "batch"), con)
    con.close()
    return path, write_rules(tmp_path / "rules", TWO_RULES)


# ---------------------------------------------------------------------------- screen summary


@pytest.mark.slow  # over 3 s: screens the whole sample with the whole library
def test_screen_summary_of_the_sample_fits_80_columns(run, sample_db, tmp_path):
    import shutil

    path = tmp_path / "s.duckdb"
    shutil.copy(sample_db, path)
    r = run(["screen", path, "--rules", ROOT / "rules"])
    assert r.exit_code == 0, r.output
    assert_fits(r.output)
    lines = r.output.splitlines()
    assert len(lines) < 80, r.output
    # one line a rule: every rule id of the library is on a line of its own, whole
    n_rules = int(r.output.split(" rules in ")[0].rsplit("with ", 1)[1])
    rule_rows = [line for line in lines if line.startswith("R-")]
    assert len(rule_rows) == n_rules
    assert "R-PEER-001" in r.output and "R-AGE-001" in r.output


@pytest.mark.slow  # over 3 s: loads and screens the whole sample
def test_screen_readme_command_fits_80_columns(run, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    r = run(["screen", ROOT / "sample_data" / "batch", "--rules", ROOT / "rules", "--db", tmp_path / "sample.duckdb"])
    assert r.exit_code == 0, r.output
    assert_fits(r.output)
    summary = r.output[r.output.index("Run 1:") :].splitlines()
    assert len(summary) < 60, "\n".join(summary)


def test_screen_lists_every_rule_with_its_count_zero_included(run, tmp_path):
    path, rules = small_batch(tmp_path)
    r = run(["screen", path, "--rules", rules])
    assert r.exit_code == 0, r.output
    rows = {line.split()[0]: line.split() for line in r.output.splitlines() if line.startswith("R-GEN-")}
    assert set(rows) == {"R-GEN-1", "R-GEN-2"}
    assert rows["R-GEN-1"][3] == "1"  # rule name sev findings ...
    assert rows["R-GEN-2"][3] == "0"


def test_screen_says_why_nothing_was_screened(run, tmp_path):
    path, rules = small_batch(tmp_path)  # every stay settled: nothing open
    r = run(["screen", path, "--rules", rules, "--stage", "in_process"])
    assert r.exit_code == 0, r.output
    assert "0 lines screened" in r.output
    text = " ".join(r.output.split())
    assert "Nothing screened (in_process): no open stays: all 1 visits have ended and have a settlement" in text
    assert "--stage post_hoc" in text
    # an open stay and post_hoc: the other way round
    path2, rules2 = small_batch(tmp_path / "open", settled=False)
    r = run(["screen", path2, "--rules", rules2])
    text = " ".join(r.output.split())
    assert "Nothing screened (post_hoc): no settled claims" in text and "--stage in_process" in text


def test_screen_on_an_empty_database_says_load_first(run, tmp_path):
    path = tmp_path / "e.duckdb"
    db.connect(path).close()
    rules = write_rules(tmp_path / "rules", TWO_RULES)
    r = run(["screen", path, "--rules", rules])
    assert "no fee lines" in " ".join(r.output.split())


def test_progress_never_shows_none():
    from rich.progress import Progress

    p = Progress()
    task = p.add_task("screening", total=None)
    col = cli._RuleTypesColumn()
    assert col.render(p.tasks[task]).plain == ""
    p.update(task, total=12, completed=3)
    assert col.render(p.tasks[task]).plain == "3/12 rule types"


# ---------------------------------------------------------------------------- findings


@pytest.fixture
def screened(tmp_path):
    """A screened database: the man's 子宫造影 flagged by a rule whose name looks like a formula."""
    path, rules = small_batch(tmp_path)
    (rules / "rules.yaml").write_text(
        TWO_RULES.replace("name: 限女性使用的检查项目", 'name: "=HYPERLINK(\\"http://x\\",\\"y\\")"'), encoding="utf-8"
    )
    from medaudit.engine import screen
    from medaudit.library import load_library

    con = db.connect(path)
    screen(con, load_library(rules))
    fid = con.execute("SELECT finding_id FROM findings").fetchall()[0][0]
    con.close()
    return path, fid


def test_findings_list_is_readable_at_80_columns(run, sample_db, tmp_path):
    import shutil

    path = tmp_path / "s.duckdb"
    shutil.copy(sample_db, path)
    assert run(["screen", path, "--rules", ROOT / "rules"]).exit_code == 0
    r = run(["findings", "--db", path, "--limit", "20"])
    assert r.exit_code == 0, r.output
    assert_fits(r.output)
    # the evidence is at the full width, not a 14-character column: its lines are long
    ev_lines = [line for line in r.output.splitlines() if "收费" in line]
    assert ev_lines and max(cell_len(line) for line in ev_lines) > 60
    assert "20 of 140 findings; 120 more" in " ".join(r.output.split())
    assert "待申诉 (pending_appeal)" in r.output


def test_findings_empty_result_is_one_line(run, screened):
    path, _ = screened
    r = run(["findings", "--db", path, "--rule", "R-NOPE"])
    assert r.exit_code == 0
    assert r.output.strip() == "No findings match rule R-NOPE."
    assert "┃" not in r.output and "─" not in r.output


def test_findings_show_has_evidence_lines_and_history(run, screened):
    path, fid = screened
    from medaudit.hospital_loop import lifecycle

    con = db.connect(path)
    f = lifecycle.resolve(con, fid)
    lifecycle.transition(con, f, "appeal", "H001 医保办", "已提供病历：患者为女性")
    con.close()
    r = run(["findings", "--db", path, "show", fid[:8]])
    assert r.exit_code == 0, r.output
    assert_fits(r.output)
    text = " ".join(r.output.split())
    assert fid in text and "R-GEN-1" in text
    assert "子宫造影" in text and UTERO in text and "180.00" in text  # the line and its amount
    assert "生成 (create)" in text and "申诉 (appeal)" in text  # the audit log
    assert "已申诉待复核 (appealed)" in text and "已提供病历" in text
    r = run(["findings", "--db", path, "show", "ffffffffff"])
    assert r.exit_code == 2 and "no such finding" in r.output


def test_findings_export_csv_and_xlsx_keep_text_as_text(run, screened, tmp_path):
    import csv

    import openpyxl

    path, fid = screened
    con = db.connect(path)
    con.execute(
        "INSERT INTO code_names (kind, code, code_name, fixmedins_code) VALUES ('dept', 'D01', '心内科', 'H001')"
    )
    con.close()
    r = run(["findings", "--db", path, "--export", tmp_path / "f.csv"])
    assert r.exit_code == 0, r.output
    assert "1 findings written to" in r.output
    with open(tmp_path / "f.csv", encoding="utf-8-sig", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 1 and rows[0]["finding_id"] == fid
    assert rows[0]["rule_name"].startswith("'=HYPERLINK")  # not a formula when Excel opens it
    assert rows[0]["flagged_amt"] == "180.00" and rows[0]["状态"] == "待申诉 (pending_appeal)"
    # names beside the codes: the institution's from the batch; the department's from the bureau's code_names
    assert (rows[0]["fixmedins_code"], rows[0]["机构名称"]) == ("H001", "测试医院")
    assert (rows[0]["dept_code"], rows[0]["科室名称"]) == ("D01", "心内科")
    r = run(["findings", "--db", path, "--export", tmp_path / "f.xlsx"])
    assert r.exit_code == 0, r.output
    ws = openpyxl.load_workbook(tmp_path / "f.xlsx").active
    header = [c.value for c in ws[1]]
    row = {h: c for h, c in zip(header, ws[2])}
    assert row["rule_name"].data_type == "s" and row["rule_name"].value.startswith("=HYPERLINK")
    assert row["flagged_amt"].value == 180
    r = run(["findings", "--db", path, "--export", tmp_path / "f.txt"])
    assert r.exit_code == 2 and ".csv or .xlsx" in r.output
    assert not (tmp_path / "f.txt").exists()


# ---------------------------------------------------------------------------- a missing database


@pytest.mark.parametrize(
    "args",
    [
        ["findings"],
        ["findings", "show", "abcdef"],
        ["findings", "--export", "x.csv"],
        ["review", "list"],
        ["review", "decide", "abcdef", "--decision", "uphold", "--by", "x", "--reason", "y"],
        ["appeal", "export", "--institution", "H", "--period", "2026-03"],
        ["appeal", "import", "w.xlsx", "--institution", "H", "--by", "x"],
        ["appeal", "submit", "abcdef", "--by", "x", "--reason", "y"],
        ["appeal", "history", "abcdef"],
        ["appeal", "settings"],
        ["deduct", "finalize", "--period", "2026-03"],
        ["deduct", "show"],
        ["report", "--institution", "H", "--period", "2026-03"],
    ],
)
def test_a_missing_database_is_one_line_and_is_not_created(run, args, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "w.xlsx").write_bytes(b"")
    missing = tmp_path / "typo.duckdb"
    r = run([*args, "--db", missing])
    assert r.exit_code == 2, r.output
    lines = r.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"medaudit: no database at {missing}"), r.output
    assert "Traceback" not in r.output
    assert not missing.exists() and not (tmp_path / "medaudit.duckdb").exists()


def test_a_folder_given_as_the_database_is_one_line(run, tmp_path):
    r = run(["findings", "--db", tmp_path])
    assert r.exit_code == 2
    assert (
        r.output.strip() == f"medaudit: {tmp_path} is a folder, not a database file; give the file made by "
        "load or screen with --db"
    )


# ---------------------------------------------------------------------------- options and help


@pytest.mark.parametrize(
    "args",
    [
        ["report", "--institution", "H", "--period", "2026-13"],
        ["report", "--institution", "H", "--period", "202603"],
        ["appeal", "export", "--institution", "H", "--period", "2026-3"],
        ["deduct", "finalize", "--period", "March"],
        ["deduct", "show", "--period", "2026-00"],
        ["review", "list", "--period", "26-03"],
    ],
)
def test_period_must_be_yyyy_mm(run, args, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    r = run([*args, "--db", tmp_path / "x.duckdb"])
    assert r.exit_code == 2, r.output
    assert "is not a month written YYYY-MM (e.g. 2026-03)" in " ".join(r.output.split())


def test_stage_decision_and_status_have_choices(run, screened, tmp_path):
    path, fid = screened
    r = run(["screen", path, "--rules", tmp_path / "rules", "--stage", "pre_alert"])
    assert r.exit_code == 2 and "'pre_alert' is not one of 'post_hoc', 'in_process'" in " ".join(r.output.split())
    r = run(["review", "decide", fid, "--decision", "approve", "--by", "x", "--reason", "y", "--db", path])
    assert r.exit_code == 2 and "'approve' is not one of 'uphold', 'overturn', 'confirm', 'dismiss'" in " ".join(
        r.output.split()
    )
    r = run(["review", "list", "--status", "open", "--db", path])
    assert r.exit_code == 2 and "--status 'open': give states among pending_appeal" in " ".join(r.output.split())
    r = run(["screen", "--help"])
    assert "--stage [post_hoc|in_process]" in r.output
    r = run(["review", "decide", "--help"])
    assert "--decision [uphold|overturn|confirm|dismiss]" in r.output


@pytest.mark.parametrize(
    "args",
    [
        [],
        ["findings"],
        ["appeal", "settings"],
        ["appeal", "import"],
        ["review", "decide"],
        ["screen"],
        ["rules", "list"],
    ],
)
def test_help_has_the_usual_style(run, args):
    r = run([*args, "--help"])
    assert r.exit_code == 0, r.output
    assert "<bool>" not in r.output and "<str>" not in r.output and "<path>" not in r.output
    assert "{" not in r.output.splitlines()[0]  # Usage: ... FILE, not {file}
    assert "…" not in r.output  # no option name or help cut short
    # click wraps help by characters: a line of Chinese may run past 80 cells, never past 80 characters
    assert max(len(line) for line in r.output.splitlines()) <= 80, r.output


def test_help_text_keeps_its_square_brackets(run):
    r = run(["appeal", "settings", "--help"])
    assert "one YYYY-MM-DD [name] a line" in " ".join(r.output.split())
    r = run(["--help"])
    assert "Default: [duckdb] memory_limit" in " ".join(r.output.split())
    r = run(["findings", "--help"])
    assert "--db PATH" in r.output and "--limit INTEGER RANGE" in r.output


# ---------------------------------------------------------------------------- status labels


def test_status_label_is_chinese_with_the_code():
    from medaudit.hospital_loop import lifecycle

    assert lifecycle.status_label("expired") == "逾期未申诉（维持扣款） (expired)"
    assert lifecycle.status_label("pending_appeal") == "待申诉 (pending_appeal)"
    assert lifecycle.action_label("appeal") == "申诉 (appeal)"


def test_every_table_shows_status_in_chinese_with_its_code(run, screened):
    path, fid = screened
    r = run(["review", "list", "--db", path])
    assert (
        r.exit_code == 0
        and " ".join(r.output.split())
        == "Nothing waits for a decision (已申诉待复核 (appealed), 疑点待复核 (pending_review))."
    )
    r = run(["appeal", "submit", fid[:10], "--by", "H001 医保办", "--reason", "已提供病历", "--db", path])
    assert r.exit_code == 0 and "待申诉 (pending_appeal) -> 已申诉待复核 (appealed)" in " ".join(r.output.split())
    for args in (["review", "list"], ["appeal", "history", fid[:10]], ["findings"], ["findings", "show", fid[:10]]):
        r = run([*args, "--db", path])
        assert r.exit_code == 0, r.output
        assert_fits(r.output)
        text = " ".join(r.output.split())
        assert "已申诉待复核 (appealed)" in text, (args, r.output)
    text = " ".join(run(["review", "list", "--db", path]).output.split())
    assert "申诉理由 appeal: 已提供病历" in text and "子宫造影" in text
    text = " ".join(run(["appeal", "history", fid[:10], "--db", path]).output.split())
    assert "生成 (create)" in text and "申诉 (appeal)" in text and "from 待申诉" in text and "(pending_appeal)" in text
