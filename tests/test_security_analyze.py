"""Attacks on ``medaudit analyze``: hostile values in the claim data (names, department and doctor
codes, diagnosis codes) rendered into the HTML page (text, SVG <title>/<text>), the xlsx and the
console; hostile filters (--diag-prefix with LIKE wildcards or quotes, --institution, --highlight)
and output paths. Reuses the batches and CLI runner of test_analyze."""

from __future__ import annotations

import re

import openpyxl
import pytest

from kit import Batch
from medaudit import analysis as an
from medaudit.loader import LoadError, load_batch
from medaudit import db
import test_analyze
from test_analyze import DRUG, ITEM, load, run

cli_run = test_analyze.cli_run  # the fixture of test_analyze

SCRIPT = "</title><script>alert(1)</script>"
SVG = '"><svg onload=alert(2)>'
FORMULA = '=HYPERLINK("evil.example","点我")'
RTL = "\u202eexe.fdp"
ESC = "\x1b]0;pwned\x07\x1b[31mRED"


def hostile_batch() -> Batch:
    b = Batch()
    for k in range(1, 4):
        for _ in range(2):
            v = b.visit(
                fixmedins_code=f"H{k}",
                fixmedins_name=(SCRIPT + RTL) if k == 1 else f"医院{k}",
                adm_dept_codg=SVG if k == 1 else "D01",
                chfpdr_code=FORMULA if k == 1 else "DR01",
                med_type="21",
                begntime="2026-03-02 08:00:00",
                endtime="2026-03-05 08:00:00",
            )
            b.diag(v, "</title><svg/onload=alert(4)>" if k == 1 else "J18.900")
            b.line(v, DRUG, pric="40")
            b.line(v, ITEM, pric="60", med_chrgitm_type="03")
    return b


@pytest.mark.parametrize("level", ["institution", "department", "doctor"])
def test_hostile_values_are_escaped_in_the_page_and_text_in_the_workbook(tmp_path, cli_run, level):
    load(hostile_batch(), tmp_path).close()
    page, out = tmp_path / "a.html", tmp_path / "a.xlsx"
    r = cli_run(
        [
            "analyze",
            "--db",
            tmp_path / "t.duckdb",
            "--year",
            "2026",
            "--level",
            level,
            "--by-diag",
            "--min-visits",
            "1",
            "--min-stays",
            "1",
            "--min-peers",
            "2",
            "--highlight",
            {"institution": "H1", "department": f"H1/{SVG}", "doctor": FORMULA}[level],
            "--html",
            page,
            "--out",
            out,
        ]
    )
    assert r.exit_code == 0, r.output
    text = page.read_text(encoding="utf-8")
    for raw in ("<script", "<svg onload", "<svg/onload", '"><svg'):
        assert raw not in text, raw
    # the hostile label was shown (escaped) in SVG <title>s, the highlight line and the table
    shown = {
        "institution": "&lt;/title&gt;&lt;script&gt;alert(1)&lt;/script&gt;",
        "department": "&quot;&gt;&lt;svg onload=alert(2)&gt;",
        "doctor": "=HYPERLINK(&quot;evil.example&quot;,&quot;点我&quot;)",
    }[level]
    assert text.count(shown) >= 3, level
    assert "class='hl'" in text  # the hostile entity was found and highlighted
    # every <title>/<text> of the SVG holds text only: no element opens inside them
    for inner in re.findall(r"<title>(.*?)</title>|<text[^>]*>(.*?)</text>", text, flags=re.S):
        assert "<" not in "".join(inner)
    # the workbook: hostile values are string cells, never formulas or links
    wb = openpyxl.load_workbook(out)
    cells = [c for ws in wb.worksheets for row in ws.iter_rows() for c in row if c.value is not None]
    assert not [c.coordinate for c in cells if c.data_type == "f"]
    assert not [c.coordinate for c in cells if c.hyperlink is not None]
    if level == "doctor":
        assert any(c.value == FORMULA for c in cells)


def test_terminal_control_characters_in_names_never_reach_the_console(tmp_path, cli_run):
    """A name carrying an escape sequence (set the terminal title, colour, OSC 8 links) reached
    the bureau's terminal as is: the console shows it with the control characters replaced."""
    b = Batch()
    for k in range(1, 3):
        v = b.visit(fixmedins_code=f"H{k}", fixmedins_name=ESC if k == 1 else "医院2")
        b.line(v, DRUG, pric="40")
    load(b, tmp_path).close()
    r = cli_run(["analyze", "--db", tmp_path / "t.duckdb", "--year", "2026", "--min-visits", "1"])
    assert r.exit_code == 0, r.output
    assert "\x1b]0;" not in r.output and "\x07" not in r.output and "\x1b[31mRED" not in r.output
    assert "pwned" in r.output and "RED" in r.output  # the name itself is still shown


def test_markup_in_options_is_shown_not_interpreted(tmp_path, cli_run):
    """Rich markup in an option value (``[/]``, ``[link=...]``) is printed as typed: no crash, no link."""
    b = Batch()
    b.line(b.visit(fixmedins_code="H1"), DRUG)
    load(b, tmp_path).close()
    r = cli_run(
        [
            "analyze",
            "--db",
            tmp_path / "t.duckdb",
            "--year",
            "2026",
            "--min-visits",
            "1",
            "--highlight",
            "[/][link=http://evil.example]x",
        ]
    )
    assert r.exit_code == 0, r.output
    assert "--highlight [/][link=http://evil.example]x: no such institution" in " ".join(r.output.split())
    r = cli_run(["analyze", "--db", tmp_path / "t.duckdb", "--year", "2026", "--diag-prefix", "[/bold]"])
    assert r.exit_code == 2 and "--diag-prefix '[/bold]' is not an ICD-10 prefix" in " ".join(r.output.split())


@pytest.mark.parametrize(
    "prefix", ["J%", "J_8", "%", "_", "J18' OR '1'='1", 'J18"', "J18;--", "J 18", "Ｊ18", "J18\x00", ""]
)
def test_diag_prefix_takes_icd_characters_only(prefix):
    with pytest.raises(an.AnalysisError, match="--diag-prefix"):
        an.Options(diag_prefix=prefix).check()


def test_diag_prefix_is_a_literal_prefix_and_institution_a_literal_code(tmp_path):
    b = Batch()
    for inst, diag in (("H1", "J18.900"), ("H2", "J28.000"), ("H1'--", "J18.100")):
        v = b.visit(fixmedins_code=inst)
        b.diag(v, diag)
        b.line(v, DRUG)
    con = load(b, tmp_path)
    a = run(con, diag_prefix="J18", min_visits=1)
    assert sorted(r["fixmedins_code"] for r in a.rows) == ["H1", "H1'--"]
    a = run(con, diag_prefix="J1", min_visits=1)  # a real prefix, not a pattern: J28 is out
    assert "H2" not in [r["fixmedins_code"] for r in a.rows]
    assert [r["fixmedins_code"] for r in run(con, institution="H1' OR '1'='1", min_visits=1).rows] == []
    assert [r["fixmedins_code"] for r in run(con, institution="H1'--", min_visits=1).rows] == ["H1'--"]


def test_output_paths_are_checked_before_anything_is_written(tmp_path, cli_run):
    b = Batch()
    b.line(b.visit(fixmedins_code="H1"), DRUG)
    load(b, tmp_path).close()
    dbf = tmp_path / "t.duckdb"
    size = dbf.stat().st_size
    for args, msg in (
        (["--out", dbf], "must end with .xlsx"),
        (["--html", dbf], "must end with .html"),
        (["--html", tmp_path / "nope" / "a.html"], "does not exist"),
        (["--out", tmp_path / "a.html"], "must end with .xlsx"),
    ):
        r = cli_run(["analyze", "--db", dbf, "--year", "2026", *args])
        assert r.exit_code == 2 and msg in " ".join(r.output.split()), r.output
    assert dbf.stat().st_size == size and sorted(p.name for p in tmp_path.iterdir()) == ["batch", "t.duckdb"]


def test_a_nul_in_a_name_is_refused_by_the_loader(tmp_path):
    b = Batch()
    b.line(b.visit(fixmedins_code="H1", fixmedins_name="医院\x00<script>"), DRUG)
    folder = b.write(tmp_path / "batch")
    con = db.connect(tmp_path / "t.duckdb")
    with pytest.raises(LoadError, match="NUL"):
        load_batch(folder, con)
    assert con.execute("SELECT count(*) FROM mdtrt_d").fetchall() == [(0,)]
