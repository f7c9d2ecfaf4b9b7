"""The assessment (年度考核): scheme checks, points and veto at their edges, a run on the loop's data."""

from __future__ import annotations

import json
from decimal import Decimal as D

import openpyxl
import pytest
from typer.testing import CliRunner

from medaudit.cli import app
from medaudit.hospital_loop import deduct
from medaudit.supervision import assess as asm, scheme as schm
from test_lifecycle import clock, loop_batch, loop_db

SCHEME = {
    "name": "测试方案",
    "version": "1",
    "indicators": [
        {"id": "I1", "name": "每万元违规", "measure": "per_10k_fund", "weight": 60, "full_at": 10, "zero_at": 110},
        {"id": "I2", "name": "申诉成立率", "measure": "appeal_win_rate", "weight": 40, "full_at": 0.5, "zero_at": 0},
    ],
    "grades": [
        {"grade": "优秀", "min_score": 90},
        {"grade": "合格", "min_score": 60},
        {"grade": "不合格", "min_score": 0},
    ],
    "veto": [
        {"id": "V1", "name": "虚构服务", "measure": "count.虚构服务", "at_least": 1},
        {"id": "V2", "name": "扣款率", "measure": "deduction_rate", "above": 0.05},
    ],
    "veto_grade": "不合格",
}


def sch(**changes) -> schm.Scheme:
    raw = json.loads(json.dumps(SCHEME))
    raw.update(changes)
    return schm.parse(raw, "s.yaml")


def inst(code="H1", level=2, **measures) -> asm.InstResult:
    m = {k: None for k in schm.MEASURES} | {"count.虚构服务": 0, "deduction_rate": None} | measures
    return asm.InstResult(code, level, m, {})


# ---------------------------------------------------------------- points and veto at their edges


@pytest.mark.parametrize(
    "value, points",
    [
        (None, D("60.00")),  # no fund payment: nothing to hold against it
        (D("0"), D("60.00")),
        (D("10"), D("60.00")),  # at full_at: the whole weight
        (D("10.01"), D("59.99")),
        (D("60"), D("30.00")),  # linear
        (D("109.99"), D("0.01")),
        (D("110"), D("0.00")),
        (D("1000"), D("0.00")),  # at zero_at: nothing
    ],
)
def test_indicator_points_at_the_thresholds(value, points):
    assert asm.indicator_points(sch().indicators[0], value) == points


@pytest.mark.parametrize(
    "value, points", [(D("0"), D("0.00")), (D("0.25"), D("20.00")), (D("0.5"), D("40.00")), (D("1"), D("40.00"))]
)
def test_indicator_points_where_higher_is_better(value, points):
    assert asm.indicator_points(sch().indicators[1], value) == points


def test_veto_at_least_and_above_at_their_edges():
    s = sch()
    a = [
        inst("A", **{"count.虚构服务": 0, "deduction_rate": D("0.05")}),  # both exactly at the edge: no veto
        inst("B", **{"count.虚构服务": 1, "deduction_rate": D("0.05")}),  # at_least 1: veto
        inst("C", **{"count.虚构服务": 0, "deduction_rate": D("0.050001")}),
    ]  # above 0.05: veto
    by_nature = {
        ("B", "虚构服务"): ["f-b1"],
        ("B", "*"): ["f-b1", "f-b2"],
        ("C", "$"): ["f-c2", "f-c1"],
        ("C", "*"): ["f-c1", "f-c2", "f-c3"],
    }
    asm.score(a, s, by_nature)
    r = {x.code: x for x in a}
    assert not r["A"].vetoed and r["A"].grade == "优秀"
    assert [(v[0], v[3]) for v in r["B"].vetoes] == [("V1", ["f-b1"])] and r["B"].grade == "不合格"
    # the deduction-rate veto names the findings that deducted money, sorted
    assert [(v[0], v[3]) for v in r["C"].vetoes] == [("V2", ["f-c1", "f-c2"])]
    # a vetoed institution ranks after every other of its level, whatever its score
    assert r["B"].score == r["A"].score == D("100.00")
    assert (r["A"].rank, r["B"].rank, r["C"].rank) == (1, 2, 2)


def test_grades_at_their_edges():
    s = sch()
    a = [
        inst("X", per_10k_fund=D("26.67")),
        inst("Y", per_10k_fund=D("26.70")),
        inst("Z", per_10k_fund=D("110"), appeal_win_rate=D("0.49")),
    ]
    asm.score(a, s, {})
    r = {x.code: x for x in a}
    # X: 60 x (110-26.67)/100 = 49.998 -> 50.00, + 40 (no appeal: whole weight) = 90.00: 优秀 at exactly 90
    assert (r["X"].score, r["X"].grade) == (D("90.00"), "优秀")
    # Y: 60 x 83.30/100 = 49.98 + 40 = 89.98: just below, 合格
    assert (r["Y"].score, r["Y"].grade) == (D("89.98"), "合格")
    # Z: 0 + 40 x 0.98 = 39.20: 不合格
    assert (r["Z"].score, r["Z"].grade) == (D("39.20"), "不合格")


# ---------------------------------------------------------------- the scheme is checked like the rule library


@pytest.mark.parametrize(
    "changes, message",
    [
        (
            {"indicators": [dict(SCHEME["indicators"][0], weight=50), SCHEME["indicators"][1]]},
            "s.yaml: indicators: the weights must add up to 100, they add up to 90",
        ),
        (
            {"indicators": [dict(SCHEME["indicators"][0], measure="per_10k"), SCHEME["indicators"][1]]},
            "s.yaml: indicators[0].measure: unknown measure 'per_10k'",
        ),
        (
            {"indicators": [dict(SCHEME["indicators"][0], weight="六十"), SCHEME["indicators"][1]]},
            "s.yaml: indicators[0].weight: must be a number, got '六十'",
        ),
        (
            {"indicators": [dict(SCHEME["indicators"][0], full_at=True), SCHEME["indicators"][1]]},
            "s.yaml: indicators[0].full_at: must be a number, got True",
        ),
        (
            {"indicators": [dict(SCHEME["indicators"][0], zero_at=10), SCHEME["indicators"][1]]},
            "s.yaml: indicators[0]: full_at and zero_at must differ",
        ),
        (
            {"veto": [{"id": "V1", "measure": "count.虚构服务", "at_least": 1, "above": 0}]},
            "s.yaml: veto[0]: give exactly one of at_least",
        ),
        (
            {"veto": [{"id": "V1", "measure": "count.虚假", "at_least": 1}]},
            "s.yaml: veto[0].measure: unknown measure 'count.虚假'",
        ),
        (
            {"grades": [{"grade": "合格", "min_score": 60}, {"grade": "优秀", "min_score": 90}]},
            "s.yaml: grades[1].min_score: grades go from the highest down",
        ),
        (
            {"grades": [{"grade": "合格", "min_score": 60}]},
            "s.yaml: grades[0].min_score: the last grade must take every score",
        ),
        ({"weights": 1}, "s.yaml: unknown field 'weights'"),
    ],
)
def test_scheme_problems_name_the_file_and_the_field(changes, message):
    with pytest.raises(schm.SchemeError) as e:
        sch(**changes)
    assert any(p.startswith(message) for p in e.value.problems), e.value.problems


def test_the_scheme_hash_follows_the_content_not_the_layout(tmp_path):
    a = sch()
    assert sch().hash == a.hash
    assert sch(version="2").hash != a.hash
    (tmp_path / "a.yaml").write_text("# 注释\n" + json.dumps(SCHEME, ensure_ascii=False), encoding="utf-8")
    assert schm.load(tmp_path / "a.yaml").hash == a.hash
    assert schm.load().version  # the sample scheme is valid


# ---------------------------------------------------------------- a run on the hospital loop's data


def finalized_loop(tmp_path, monkeypatch):
    b, v = loop_batch()
    for s in b.rows["setl_d"]:
        s["fund_pay_sumamt"] = "10000"
    con = loop_db(tmp_path, monkeypatch, b)
    res = deduct.finalize(con, "2026-03", clock=clock("2026-04-16"))
    assert {s.institution for s in res.statements} == {"H001", "H002"}
    return con, v


def test_an_assessment_of_the_loop_counts_final_findings_by_nature_and_is_reproducible(tmp_path, monkeypatch):
    con, v = finalized_loop(tmp_path, monkeypatch)
    s = sch(veto=[{"id": "V9", "name": "超范围", "measure": "count.超支付范围", "at_least": 2}])
    a1 = asm.assess(con, s, 2026, 3, by="考核科")
    r = {x.code: x for x in a1.results}
    h1 = r["H001"].measures
    gender = sorted(
        x[0]
        for x in con.execute(
            "SELECT finding_id FROM findings WHERE fixmedins_code = 'H001' AND rule_id = 'R-SEX-001'"
        ).fetchall()
    )
    final = con.execute(
        "SELECT count(*), sum(i.amount) FROM deduction_items i JOIN findings f USING (finding_id) "
        "WHERE f.fixmedins_code = 'H001'"
    ).fetchall()[0]
    assert (h1["violations"], h1["deductions"]) == (final[0], final[1])
    assert h1["count.超支付范围"] == len(gender) == 2 and h1["fund_pay"] == D("40000")
    assert h1["per_10k_fund"] == (h1["violation_amount"] * 10000 / h1["fund_pay"]).quantize(D("0.0001"))
    assert r["H001"].vetoes == [("V9", "超范围", 2, gender)]
    assert not r["H002"].vetoed and r["H002"].measures["count.超支付范围"] == 1
    assert (r["H001"].rank, r["H002"].rank) == (2, 1)  # both level 2: the vetoed one last
    # the same scheme again: the same result; stored twice with the scheme's version and hash
    a2 = asm.assess(con, s, 2026, 3)
    assert a2.result_hash == a1.result_hash and a2.run_id != a1.run_id
    runs = con.execute(
        "SELECT scheme_version, scheme_hash, result_hash FROM assessment_runs ORDER BY run_id"
    ).fetchall()
    assert runs == [("1", s.hash, a1.result_hash)] * 2
    vetoes = con.execute(
        "SELECT fixmedins_code, veto_id, finding_id FROM assessment_vetoes WHERE run_id = ? ORDER BY 3", [a1.run_id]
    ).fetchall()
    assert vetoes == [("H001", "V9", f) for f in gender]
    # a changed scheme is another version and gives another result
    a3 = asm.assess(con, sch(version="2", veto=[]), 2026, 3)
    assert a3.result_hash != a1.result_hash and not any(x.vetoed for x in a3.results)
    ev = con.execute(
        "SELECT actor, action FROM supervision_events WHERE action = 'assess' ORDER BY event_id"
    ).fetchall()
    assert ev == [("考核科", "assess"), ("medaudit", "assess"), ("medaudit", "assess")]


def test_assess_cli_writes_the_table_the_workbook_and_the_page(tmp_path, monkeypatch):
    con, v = finalized_loop(tmp_path, monkeypatch)
    con.close()
    path = tmp_path / "loop.duckdb"
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nversion: 1\nindicators: []\ngrades: []\n", encoding="utf-8")
    r = CliRunner().invoke(app, ["assess", "--year", "2026", "--scheme", str(bad), "--db", str(path)])
    assert r.exit_code == 2 and f"{bad}: indicators: must be a non-empty list" in r.output, r.output
    r = CliRunner().invoke(
        app,
        [
            "assess",
            "--year",
            "2026",
            "--db",
            str(path),
            "--out",
            str(tmp_path / "a.xlsx"),
            "--html",
            str(tmp_path / "a.html"),
            "--by",
            "考核科",
        ],
    )
    assert r.exit_code == 0, r.output
    assert "H001" in r.output and "result SHA-256" in r.output
    wb = openpyxl.load_workbook(tmp_path / "a.xlsx")
    assert wb.sheetnames == ["考核结果", "按性质", "月度趋势", "指标得分", "一票否决", "考核方案"]
    assert len(list(wb["月度趋势"].iter_rows())) == 1 + 2 * 12  # two institutions x twelve months
    page = (tmp_path / "a.html").read_text(encoding="utf-8")
    assert page.count("<svg") >= 3 and "<script" not in page and "扣款构成" in page


def test_hostile_institution_names_stay_text_in_the_workbook_and_the_page(tmp_path, monkeypatch):
    """Institution names come from the hospitals' own batches (mdtrt_d.fixmedins_name): in the
    assessment workbook a formula stays text, in the page a tag stays escaped."""
    hostile = '=HYPERLINK("http://x.invalid","点我")<script>alert(1)</script>'
    b, v = loop_batch()
    for s in b.rows["setl_d"]:
        s["fund_pay_sumamt"] = "10000"
    for row in b.rows["mdtrt_d"]:
        row["fixmedins_name"] = hostile
    con = loop_db(tmp_path, monkeypatch, b)
    deduct.finalize(con, "2026-03", clock=clock("2026-04-16"))
    con.close()
    path = tmp_path / "loop.duckdb"
    r = CliRunner().invoke(
        app,
        [
            "assess",
            "--year",
            "2026",
            "--db",
            str(path),
            "--out",
            str(tmp_path / "a.xlsx"),
            "--html",
            str(tmp_path / "a.html"),
        ],
    )
    assert r.exit_code == 0, r.output
    wb = openpyxl.load_workbook(tmp_path / "a.xlsx")
    cells = [
        c for ws in wb for row in ws.iter_rows() for c in row if isinstance(c.value, str) and "HYPERLINK" in c.value
    ]
    assert cells and all(c.data_type == "s" for c in cells)  # the name is shown, as text
    page = (tmp_path / "a.html").read_text(encoding="utf-8")
    assert "HYPERLINK" in page and "<script" not in page
