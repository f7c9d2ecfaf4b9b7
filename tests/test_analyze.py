"""medaudit analyze: shares, costs, LOS, readmissions and percentiles per entity (hand-built batches)."""

from __future__ import annotations

import datetime as dt
import re

import pytest
from rich.console import Console
from typer.testing import CliRunner

from kit import Batch
from medaudit import analysis as an, cli, db
from medaudit.commands import analyze as analyze_cmd
from medaudit.loader import load_batch

DRUG = "XA10BAD010A001010104486"  # list_type 101
CONS = "C0101010101010101"  # list_type 301
ITEM = "001102000010000"  # list_type 201


def load(b: Batch, tmp_path):
    con = db.connect(tmp_path / "t.duckdb")
    load_batch(b.write(tmp_path / "batch"), con)
    return con


def run(con, **kw):
    level = kw.get("level", "institution")
    return an.analyze(con, an.Options(**kw))[level]


def by(a: an.Analysis, code: str) -> dict:
    return next(r for r in a.rows if a.entity_code(r) == code)


def mixed_visit(b, **kw):
    """100.00 of lines: drug 40 (class 09), exam 20 (03), lab 10 (04), consumable 5 (class 08),
    treatment 10 (05), surgery 5 (06), bed 5 (01), nursing 3 (07), consultation 2 (02)."""
    v = b.visit(**kw)
    b.line(v, DRUG, pric="40", med_chrgitm_type="09")
    b.line(v, ITEM, pric="20", med_chrgitm_type="03")
    b.line(v, ITEM[:-1] + "1", pric="10", med_chrgitm_type="04")
    b.line(v, CONS, pric="5", med_chrgitm_type="08")
    b.line(v, ITEM[:-1] + "2", pric="10", med_chrgitm_type="05")
    b.line(v, ITEM[:-1] + "3", pric="5", med_chrgitm_type="06")
    b.line(v, ITEM[:-1] + "4", pric="5", med_chrgitm_type="01")
    b.line(v, ITEM[:-1] + "5", pric="3", med_chrgitm_type="07")
    # self-paid part 1.00 and a class C line: in the total, not in the fund amount
    b.line(v, ITEM[:-1] + "6", pric="2", med_chrgitm_type="02", fulamt_ownpay_amt="1")
    return v


def test_shares_fund_and_cost_per_visit(tmp_path):
    b = Batch()
    for _ in range(2):
        mixed_visit(b)
    v = b.visit()
    b.line(v, ITEM, pric="100", med_chrgitm_type="03", chrgitm_lv="03")  # class C: fund 0
    r = by(run(load(b, tmp_path), min_visits=1), "H001")
    assert (r["visits"], r["stays"]) == (3, 0)
    assert float(r["total"]) == 300 and float(r["fund"]) == 198  # 2 x (100 - 1) + 0
    assert r["drug_share"] == pytest.approx(80 / 300)
    assert r["exam_lab_share"] == pytest.approx(160 / 300)  # 2 x 30 + 100
    assert r["consumable_share"] == pytest.approx(10 / 300)
    assert r["treatment_share"] == pytest.approx(30 / 300)
    assert r["bed_nursing_share"] == pytest.approx(16 / 300)
    assert r["cost_per_visit"] == pytest.approx(100)
    assert r["mean_los"] is None and r["readmission_rate"] is None  # no stays


def test_no_rate_over_fewer_than_30_visits_by_default(tmp_path):
    b = Batch()
    for inst, n in (("H1", 29), ("H2", 30)):
        for _ in range(n):
            v = b.visit(fixmedins_code=inst)
            b.line(v, DRUG, pric="10")
    con = load(b, tmp_path)
    a = run(con)
    small, big = by(a, "H1"), by(a, "H2")
    assert small["visits"] == 29 and small["drug_share"] is None and small["cost_per_visit"] is None
    assert big["drug_share"] == 1.0 and big["cost_per_visit"] == pytest.approx(10)
    # the denominator is shown beside the value, with the minimum it missed
    assert an.denom_text(a, an.METRIC["drug_share"], small) == "n=29<30"
    assert an.denom_text(a, an.METRIC["drug_share"], big) == "n=30"
    assert an.fmt(an.METRIC["drug_share"], small["drug_share"]) == "—"
    # asked for: a lower minimum
    assert by(run(con, min_visits=29), "H1")["drug_share"] == 1.0


def test_percentiles_among_same_level_peers(tmp_path):
    b = Batch()
    for k, cost in enumerate([100, 200, 300, 400, 500], start=1):
        for _ in range(2):
            b.line(b.visit(fixmedins_code=f"H{k}", hosp_lv="05"), ITEM, pric=str(cost))
    b.line(b.visit(fixmedins_code="H6", hosp_lv="05"), ITEM, pric="900")  # 1 visit: no value, no peer
    for _ in range(2):
        b.line(b.visit(fixmedins_code="H9", hosp_lv="01"), ITEM, pric="999")  # level 3: alone
    con = load(b, tmp_path)
    a = run(con, min_visits=2)
    pct = {a.entity_code(r): r["p_cost_per_visit"] for r in a.rows}
    assert pct == {"H1": 0, "H2": 25, "H3": 50, "H4": 75, "H5": 100, "H6": None, "H9": None}
    assert by(a, "H3")["peers_cost_per_visit"] == 5
    assert an.pct_text(by(a, "H4"), an.METRIC["cost_per_visit"]) == "P75/5"
    # visits have no minimum: six level-2 peers, H6 (1 visit) the lowest
    assert by(a, "H6")["p_visits"] == 0 and by(a, "H1")["p_visits"] == pytest.approx(20)
    # fewer peers than asked: no percentile at all
    assert all(r["p_cost_per_visit"] is None for r in run(con, min_visits=2, min_peers=6).rows)
    # the institution filter picks the rows shown; the peers stay every institution's
    one = run(con, min_visits=2, institution="H4")
    assert [r["fixmedins_code"] for r in one.rows] == ["H4"] and one.rows[0]["p_cost_per_visit"] == 75


def stay(b, psn, begin, end, diag, dept="D01", inst="H001", amt="100", **kw):
    v = b.visit(
        psn_no=psn,
        fixmedins_code=inst,
        med_type="21",
        adm_dept_codg=dept,
        begntime=f"{begin} 08:00:00",
        endtime=f"{end} 10:00:00",
        **kw,
    )
    b.diag(v, diag)
    b.line(v, ITEM, pric=amt, med_chrgitm_type="01")
    return v


def test_los_cost_per_bed_day_and_readmission_as_the_readmission_type(tmp_path):
    b = Batch()
    stay(b, "P1", "2026-03-01", "2026-03-04", "J18.900")  # 3 days
    stay(b, "P1", "2026-03-09", "2026-03-10", "J18.000")  # 5 days after: readmission (J18)
    stay(b, "P2", "2026-03-01", "2026-03-03", "K35.800")  # 2 days
    stay(b, "P2", "2026-03-13", "2026-03-19", "J18.900")  # other diagnosis group: not one
    stay(b, "P3", "2026-03-01", "2026-03-02", "C34.900")
    stay(b, "P3", "2026-03-05", "2026-03-06", "C34.900", amt="60")  # planned chemotherapy: Z51 not counted
    b.diag(b.rows["mdtrt_d"][-1]["mdtrt_id"], "Z51.102", main=False)
    b.line(b.visit(adm_dept_codg="D01"), DRUG, pric="50")  # an outpatient visit of D01
    con = load(b, tmp_path)
    a = run(con, level="department", min_visits=1, min_stays=1)
    r = by(a, "D01")
    assert (r["visits"], r["stays"], r["los_stays"], r["bed_days"]) == (7, 6, 6, 3 + 1 + 2 + 6 + 1 + 1)
    assert r["readmission_rate"] == pytest.approx(1 / 6)
    assert r["mean_los"] == pytest.approx(14 / 6)
    assert r["cost_per_bed_day"] == pytest.approx(560 / 14)
    assert r["cost_per_visit"] == pytest.approx(610 / 7)
    assert r["bed_nursing_share"] == pytest.approx(560 / 610)
    # the minimum for stays is separate from the one for visits
    r = by(run(con, level="department", min_visits=1, min_stays=7), "D01")
    assert r["mean_los"] is None and r["readmission_rate"] is None and r["cost_per_visit"] is not None


def test_doctors_are_compared_within_their_main_department(tmp_path):
    b = Batch()
    for dept, shares in (("D01", [10, 20, 30, 40, 50]), ("D02", [60, 70, 80, 90, 95])):
        for k, share in enumerate(shares, start=1):
            dr = f"{dept}-DR{k}"
            for _ in range(2):
                v = b.visit(adm_dept_codg=dept, chfpdr_code=dr)
                b.line(v, DRUG, pric=str(share))
                b.line(v, ITEM, pric=str(100 - share))
    # DR9 works in D01 on 2 visits and in D02 on 1: its department is D01
    for dept in ("D01", "D01", "D02"):
        v = b.visit(adm_dept_codg=dept, chfpdr_code="DR9")
        b.line(v, DRUG, pric="99")
        b.line(v, ITEM, pric="1")
    a = run(load(b, tmp_path), level="doctor", min_visits=2)
    p = {a.entity_code(r): (r["main_dept"], r["p_drug_share"]) for r in a.rows}
    assert p["D01-DR1"] == ("D01", 0) and p["D01-DR5"] == ("D01", pytest.approx(80))
    assert p["DR9"] == ("D01", 100)  # top of D01 (6 peers), though below D02's doctors
    assert p["D02-DR1"] == ("D02", 0) and p["D02-DR5"] == ("D02", 100)


def test_period_filters_stage_and_months(tmp_path):
    b = Batch()
    for month, n, diag in (("03", 2, "J18.900"), ("04", 3, "K35.800"), ("07", 1, "J18.900")):
        for i in range(n):
            v = b.visit(begntime=f"2026-{month}-1{i} 08:00:00", endtime=f"2026-{month}-1{i} 09:00:00")
            b.diag(v, diag)
            b.line(v, ITEM, pric="10", time=f"2026-{month}-1{i} 08:30:00")
    open_stay = b.visit(med_type="21", begntime="2026-04-20 08:00:00", endtime="", settled=False)
    b.line(open_stay, ITEM, pric="70")
    con = load(b, tmp_path)
    assert by(run(con, period=an.parse_period(period="2026-03"), min_visits=1), "H001")["visits"] == 2
    q = run(con, period=an.parse_period(quarter="2026Q2"), min_visits=1)
    assert by(q, "H001")["visits"] == 3
    q1 = run(con, period=an.parse_period(year="2026"), min_visits=1)
    assert [(m["month"], m["visits"]) for m in q1.months] == [("2026-03", 2), ("2026-04", 3), ("2026-07", 1)]
    assert [(m["month"], m["visits"]) for m in q1.pool_months] == [("2026-03", 2), ("2026-04", 3), ("2026-07", 1)]
    assert (
        by(run(con, period=an.parse_period(date_from="2026-03-11", date_to="2026-04"), min_visits=1), "H001")["visits"]
        == 4
    )
    assert by(run(con, diag_prefix="j18", min_visits=1), "H001")["visits"] == 3
    assert run(con, med_type_group="inpatient").rows == []
    # the open stay is in process, not settled
    ip = by(run(con, stage="in_process", min_visits=1), "H001")
    assert (ip["visits"], ip["stays"], float(ip["total"]), ip["mean_los"]) == (1, 1, 70.0, None)


def test_periods_are_read_strictly():
    assert an.parse_period(quarter="2026Q1") == an.Period(dt.date(2026, 1, 1), dt.date(2026, 3, 31), "2026Q1")
    assert an.parse_period(period="2024-02").hi == dt.date(2024, 2, 29)
    for kw, msg in (
        ({"period": "2026-13"}, "--period '2026-13' is not a month"),
        ({"quarter": "2026Q5"}, "--quarter '2026Q5' is not a quarter"),
        ({"year": "26"}, "--year '26' is not a year"),
        ({"date_from": "2026-04-01", "date_to": "2026-03-01"}, "is after --to"),
        ({"period": "2026-03", "year": "2026"}, "give one period, not --period and --year"),
    ):
        with pytest.raises(an.AnalysisError, match=re.escape(msg)):
            an.parse_period(**kw)
    with pytest.raises(an.AnalysisError, match="--diag-prefix"):
        an.Options(diag_prefix="J18'; DROP TABLE x").check()


@pytest.fixture
def cli_run(monkeypatch):
    monkeypatch.setenv("COLUMNS", "80")
    monkeypatch.setattr(analyze_cmd, "console", Console())
    monkeypatch.setattr(analyze_cmd, "err", Console(stderr=True))
    return lambda args: CliRunner().invoke(cli.app, [str(a) for a in args], env={"COLUMNS": "80"})


def test_cli_table_fits_80_columns_and_writes_xlsx_and_html(tmp_path, cli_run):
    from rich.cells import cell_len

    b = Batch()
    for k in range(1, 7):
        for _ in range(3):
            v = b.visit(
                fixmedins_code=f"H00{k}",
                fixmedins_name=f"第{k}人民医院（一个很长很长很长很长的医院名称）",
                adm_dept_codg="D01",
            )
            b.line(v, DRUG, pric=str(10 * k))
            b.line(v, ITEM, pric="50", med_chrgitm_type="03")
    load(b, tmp_path).close()
    out, page = tmp_path / "a.xlsx", tmp_path / "a.html"
    r = cli_run(
        [
            "analyze",
            "--db",
            tmp_path / "t.duckdb",
            "--year",
            "2026",
            "--min-visits",
            "3",
            "--highlight",
            "H004",
            "--out",
            out,
            "--html",
            page,
        ]
    )
    assert r.exit_code == 0, r.output
    long = [line for line in r.output.splitlines() if cell_len(line) > 80]
    assert not long, long
    assert "药占比 drug share" in r.output and "n=3" in r.output and "P60/6" in r.output
    # the highlighted institution comes first
    assert r.output.index("H004") < r.output.index("H001")
    import openpyxl

    ws = openpyxl.load_workbook(out)["分析 analysis"]
    head = [c.value for c in ws[1]]
    row = {head[j]: c.value for j, c in enumerate(next(r for r in ws.iter_rows(min_row=2) if r[0].value == "H004"))}
    assert row["机构名称 name"].startswith("第4人民医院")
    assert row["就诊人次 visits"] == 3 and isinstance(row["药占比 drug share"], float)
    assert row["药占比 drug share"] == pytest.approx(40 / 90)
    assert row["次均费用 cost per visit"] == pytest.approx(90) and row["药占比 百分位 percentile"] == 60
    assert row["药占比 分母 n"] == 3
    text = page.read_text(encoding="utf-8")
    assert not re.search(r"https?://", text) and "<script" not in text and "<svg" in text
    assert "class='hl'" in text and "第4人民医院" in text and "highlighted: <b>第4人民医院" in text
    # bad options: a clear message, nothing written
    r = cli_run(["analyze", "--db", tmp_path / "t.duckdb", "--quarter", "2026-1", "--out", tmp_path / "b.xlsx"])
    assert r.exit_code == 2 and "--quarter '2026-1' is not a quarter" in r.output
    assert not (tmp_path / "b.xlsx").exists()


def test_highlight_names_a_department_at_one_institution_or_everywhere(tmp_path):
    b = Batch()
    for inst in ("H1", "H2"):
        for dept in ("A03", "A04"):
            b.line(b.visit(fixmedins_code=inst, adm_dept_codg=dept), ITEM)
    a = run(load(b, tmp_path), level="department", min_visits=1)
    assert sorted((r["fixmedins_code"], r["dept"]) for r in a.highlighted("A03")) == [("H1", "A03"), ("H2", "A03")]
    assert [(r["fixmedins_code"], r["dept"]) for r in a.highlighted("H2/A03")] == [("H2", "A03")]
    assert a.highlighted("H1") == [] and a.highlighted(None) == []
    page = an.write_html(a, tmp_path / "p.html", "H2/A03").read_text(encoding="utf-8")
    assert page.count("<tr class='hl'>") == 1 and "A03 @ H2" in page


def test_by_diagnosis_group_splits_entities_and_their_peers(tmp_path):
    b = Batch()
    for k in range(1, 6):
        for diag, cost in (("J18.900", 100 * k), ("K35.800", 600 - 100 * k)):
            v = b.visit(fixmedins_code=f"H{k}")
            b.diag(v, diag)
            b.line(v, ITEM, pric=str(cost))
    con = load(b, tmp_path)
    a = run(con, by_diag=True, min_visits=1)
    p = {(r["fixmedins_code"], r["diag_group"]): r["p_cost_per_visit"] for r in a.rows}
    assert p[("H1", "J18")] == 0 and p[("H5", "J18")] == 100
    assert p[("H1", "K35")] == 100 and p[("H5", "K35")] == 0
    # not split: every institution costs 300 a visit, all tied at the lowest rank
    assert {r["p_cost_per_visit"] for r in run(con, min_visits=1).rows} == {0}
