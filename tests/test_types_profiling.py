"""peer_outlier: profiling findings about doctors, departments and institutions (no lines, no money)."""

from decimal import Decimal

import pytest

from kit import Batch, findings, write_rules
from medaudit import db
from medaudit.engine import screen
from medaudit.library import RuleLibraryError, load_library
from medaudit.loader import load_batch

DRUG = "XA10BAD010A001010104486"
ITEM = "001102000010000"

DOCTOR_DRUG_SHARE = """
- id: R-PEER-DR
  version: 1
  name: 医师药占比异常
  type: peer_outlier
  params: {entity: doctor, metric: drug_share, peer_by: level, percentile: 95, min_visits: 2}
"""


def drug_visits(b, doctor, share_pct, n=2, inst="H001", hosp_lv="05", month="03"):
    """n visits of a doctor, each 100.00 of which share_pct is drugs."""
    for i in range(n):
        v = b.visit(
            chfpdr_code=doctor,
            fixmedins_code=inst,
            hosp_lv=hosp_lv,
            adm_dept_codg="D01",
            begntime=f"2026-{month}-0{i + 1} 08:00:00",
            endtime=f"2026-{month}-0{i + 1} 09:00:00",
        )
        if share_pct:
            b.line(v, DRUG, pric=str(share_pct), bilg_dr_code=doctor)
        if share_pct < 100:
            b.line(v, ITEM, pric=str(100 - share_pct), bilg_dr_code=doctor)


def test_doctor_above_the_95th_percentile_of_same_level_doctors(tmp_path):
    b = Batch()
    for k, share in enumerate([10, 20, 30, 40, 50, 90], start=1):
        drug_visits(b, f"DR{k}", share)
    drug_visits(b, "DR7", 100, n=1)  # too few visits: neither judged nor a peer
    drug_visits(b, "DR8", 95, hosp_lv="01")  # another level (three): its own peer group of one
    drug_visits(b, "DR9", 95, month="04")  # another month
    con = db.connect(tmp_path / "t.duckdb")
    load_batch(b.write(tmp_path / "batch"), con)
    lib = load_library(write_rules(tmp_path / "rules", DOCTOR_DRUG_SHARE))
    screen(con, lib)
    found = findings(con)
    assert len(found) == 1
    f = found[0]
    # six peers 0.1..0.5, 0.9: position 5 x 0.95 = 4.75 -> 0.5 + 0.75 x (0.9 - 0.5) = 0.8
    assert f["evidence"] == (
        "医师 DR6（机构 H001，科室 D01）2026-03 药占比 90.0%（就诊 2 人次），"
        "高于同级（二级）医师第 95 百分位 80.0%；同类 6 个医师，中位数 35.0%，排第 1"
    )
    assert (f["fixmedins_code"], f["dept_code"], f["dr_code"], f["period"]) == ("H001", "D01", "DR6", "2026-03")
    assert f["psn_no"] is None and f["mdtrt_id"] is None and f["setl_id"] is None
    # a profiling finding: no lines, no money, a warning even after the fact (nothing to appeal)
    assert f["violating"] == {} and f["related"] == []
    assert f["flagged_amt"] == f["claimed_amt"] == f["deduction_amt"] == Decimal("0")
    assert f["status"] == "warning" and f["stage"] == "post_hoc"
    # stable: a second run recognises the finding instead of adding another
    screen(con, lib)
    assert [g["finding_id"] for g in findings(con)] == [f["finding_id"]]


def test_a_visit_without_its_doctor_or_department_takes_its_largest_lines(tmp_path):
    """A visit that names no attending doctor is the ordering doctor's of its largest line, and
    one that names no department is its largest line's department (the spec's fallbacks)."""
    b = Batch()
    for k, share in enumerate([10, 20, 30, 40, 50], start=1):
        drug_visits(b, f"DR{k}", share)
    for i in range(2):  # DR6's two visits name neither their doctor nor a department
        v = b.visit(
            chfpdr_code="",
            adm_dept_codg="",
            begntime=f"2026-03-0{i + 1} 08:00:00",
            endtime=f"2026-03-0{i + 1} 09:00:00",
        )
        b.line(v, DRUG, pric="90", bilg_dr_code="DR6", bilg_dept_codg="D07")
        b.line(v, ITEM, pric="10", bilg_dr_code="DRX", bilg_dept_codg="D99")
    con = db.connect(tmp_path / "t.duckdb")
    load_batch(b.write(tmp_path / "batch"), con)
    screen(con, load_library(write_rules(tmp_path / "rules", DOCTOR_DRUG_SHARE)))
    found = findings(con)
    assert len(found) == 1
    f = found[0]
    assert (f["dr_code"], f["dept_code"]) == ("DR6", "D07")
    assert f["evidence"].startswith("医师 DR6（机构 H001，科室 D07）2026-03 药占比 90.0%（就诊 2 人次）")


def test_a_peer_group_of_fewer_than_five_is_not_judged(tmp_path):
    b = Batch()
    for k, share in enumerate([10, 20, 30, 90], start=1):
        drug_visits(b, f"DR{k}", share)
    assert b.screen(tmp_path, DOCTOR_DRUG_SHARE) == []


def test_equal_to_the_percentile_is_not_flagged(tmp_path):
    b = Batch()
    for k in range(1, 7):
        drug_visits(b, f"DR{k}", 40)  # all equal: nobody is above the percentile
    assert b.screen(tmp_path, DOCTOR_DRUG_SHARE) == []


def test_institution_cost_per_visit_against_all_institutions(tmp_path):
    b = Batch()
    for k, cost in enumerate(["100", "100", "100", "100", "500.5"], start=1):
        for i in range(2):
            v = b.visit(fixmedins_code=f"H{k}", med_type="11")
            b.line(v, ITEM, pric=cost)
    rules = """
- id: R-PEER-H
  version: 1
  name: 机构次均费用异常
  type: peer_outlier
  params: {entity: institution, metric: cost_per_visit, peer_by: none, min_visits: 2}
"""
    found = b.screen(tmp_path, rules)
    assert [f["fixmedins_code"] for f in found] == ["H5"]
    # 100 x 4, 500.50: position 3.8 -> 100 + 0.8 x 400.50 = 420.40
    assert (
        found[0]["evidence"]
        == "机构 H5 2026-03 次均费用 500.50 元（就诊 2 人次），高于全部机构第 95 百分位 420.40 元；同类 5 个机构，中位数 100.00 元，排第 1"
    )
    assert found[0]["dept_code"] is None and found[0]["dr_code"] is None


def test_department_los_and_readmission_rate_in_process(tmp_path):
    b = Batch()
    for k in range(1, 6):
        inst = f"H{k}"
        for p in range(2):
            los = 12 if k == 5 else 5
            b.visit(
                mdtrt_id=f"{inst}-P{p}-1",
                psn_no=f"{inst}-P{p}",
                fixmedins_code=inst,
                med_type="21",
                adm_dept_codg="A03",
                begntime="2026-03-01 08:00:00",
                endtime=f"2026-03-{1 + los:02d} 08:00:00",
                settled=False,
            )
            b.line(f"{inst}-P{p}-1", ITEM)
        # at H5 one of the two patients comes back 10 days later: readmission rate 1 of 3 admissions
        if k == 5:
            b.visit(
                mdtrt_id="H5-P0-2",
                psn_no="H5-P0",
                fixmedins_code="H5",
                med_type="21",
                adm_dept_codg="A03",
                begntime="2026-03-23 08:00:00",
                endtime="",
                settled=False,
            )
            b.line("H5-P0-2", ITEM)
    rules = """
- id: R-PEER-LOS
  version: 1
  name: 科室平均住院日异常
  type: peer_outlier
  params: {entity: department, metric: los, peer_by: department, min_visits: 2}
- id: R-PEER-RA
  version: 1
  name: 科室再入院率异常
  type: peer_outlier
  params: {entity: department, metric: readmission_rate, peer_by: department, min_visits: 2}
"""
    found = b.screen(tmp_path, rules, stage="in_process")
    assert [(f["rule_id"], f["fixmedins_code"], f["dept_code"], f["status"]) for f in found] == [
        ("R-PEER-LOS", "H5", "A03", "warning"),
        ("R-PEER-RA", "H5", "A03", "warning"),
    ]
    los, ra = found
    # LOS counts stays with an end only (2 at H5); the readmission rate counts all 3 admissions
    assert (
        los["evidence"]
        == "科室 A03（机构 H5）2026-03 平均住院日 12.0 天（住院 2 人次），高于同科室（A03）科室第 95 百分位 10.6 天；同类 5 个科室，中位数 5.0 天，排第 1"
    )
    assert (
        ra["evidence"]
        == "科室 A03（机构 H5）2026-03 15天内再入院率 33.3%（住院 3 人次），高于同科室（A03）科室第 95 百分位 26.7%；同类 5 个科室，中位数 0.0%，排第 1"
    )


def test_peer_by_department_needs_doctors_or_departments(tmp_path):
    bad = """
- id: R-PEER-BAD
  version: 1
  name: 错误
  type: peer_outlier
  params: {entity: institution, metric: los, peer_by: department}
"""
    with pytest.raises(
        RuleLibraryError, match="rule R-PEER-BAD: params.peer_by department needs entity doctor or department"
    ):
        load_library(write_rules(tmp_path, bad))
    with pytest.raises(RuleLibraryError, match="rule R-PEER-BAD: params.percentile must be above 0 and below 100"):
        load_library(write_rules(tmp_path, bad.replace("peer_by: department", "percentile: 100")))
    with pytest.raises(RuleLibraryError, match="type peer_outlier cannot run at stage pre_alert"):
        load_library(
            write_rules(tmp_path, bad.replace("peer_by: department}", "peer_by: none}\n  stages: [pre_alert]"))
        )
