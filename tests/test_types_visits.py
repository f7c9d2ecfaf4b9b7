"""Visit- and person-level types: readmission, overlapping_stays, gender_diagnosis_conflict."""

from decimal import Decimal

import pytest

from kit import Batch, findings, write_rules
from medaudit import db
from medaudit.engine import screen
from medaudit.library import RuleLibraryError, load_library
from medaudit.loader import load_batch

READM = """
- id: R-READM
  version: 1
  name: 15天内再入院
  type: readmission
"""


def by_visit(found):
    return {f["mdtrt_id"]: f for f in found}


def stay(b, vid, psn, begin, end, inst="H001", diag=None, settled=True, **kw):
    v = b.visit(
        mdtrt_id=vid,
        psn_no=psn,
        med_type=kw.pop("med_type", "21"),
        fixmedins_code=inst,
        begntime=f"{begin} 09:00:00",
        endtime=f"{end} 10:00:00" if end else "",
        settled=settled,
        **kw,
    )
    if diag:
        b.diag(v, diag)
    return v


# ---------------------------------------------------------------------------- readmission


def test_readmission_gap_15_flags_and_16_does_not(tmp_path):
    b = Batch()
    stay(b, "A1", "PA", "2026-03-01", "2026-03-05", diag="J18.900")
    b.line("A1", "001109000010000", cnt="4", pric="50")
    stay(b, "A2", "PA", "2026-03-20", "2026-03-25", diag="J18.000x001")  # 15 days after 03-05
    b.line("A2", "001109000010000", cnt="5", pric="50", bkkp_sn="A2-BED")
    b.line("A2", "X0000000000000000000001", cnt="3", pric="33.33", fulamt_ownpay_amt="10.01", bkkp_sn="A2-DRUG")
    b.line("A2", "002501000010000", pric="99", chrgitm_lv="03", bkkp_sn="A2-SELF")  # class C: 0 at risk
    stay(b, "B1", "PB", "2026-03-01", "2026-03-05", diag="J18.900")
    b.line("B1", "001109000010000")
    stay(b, "B2", "PB", "2026-03-21", "2026-03-25", diag="J18.900")  # 16 days
    b.line("B2", "001109000010000")
    found = by_visit(b.screen(tmp_path, READM))
    assert set(found) == {"A2"}
    f = found["A2"]
    assert f["severity"] == "suspect" and f["status"] == "pending_review"
    # whole visit: every screened line, claiming its deductible (amount at risk)
    assert f["violating"] == {"A2-BED": Decimal("250"), "A2-DRUG": Decimal("89.98"), "A2-SELF": Decimal("0")}
    assert f["claimed_amt"] == Decimal("339.98") and f["flagged_amt"] == Decimal("448.99")
    assert f["deduction_amt"] == Decimal("0")  # a suspect claims nothing until confirmed
    assert f["evidence"] == (
        "本次住院 A2 2026-03-20 入院，距上次住院 A1 2026-03-05 出院 15 天（同一机构，主诊断 J18 相同），不超过 15 天；"
        "本次就诊费用 3 条，金额合计 448.99 元，其中医保支付范围内 339.98 元"
    )


def test_readmission_same_day_is_gap_0_and_only_the_later_stay_is_flagged(tmp_path):
    b = Batch()
    stay(b, "C1", "PC", "2026-04-01", "2026-04-08", diag="I63.900")
    b.line("C1", "001109000010000")
    stay(b, "C2", "PC", "2026-04-08", "2026-04-12", diag="I63.900")
    b.line("C2", "001109000010000")
    found = by_visit(b.screen(tmp_path, READM))
    assert set(found) == {"C2"}
    assert "出院 0 天" in found["C2"]["evidence"]


def test_readmission_planned_chemotherapy_z51_is_excluded(tmp_path):
    b = Batch()
    stay(b, "D1", "PD", "2026-03-01", "2026-03-05", diag="C16.900")
    b.line("D1", "001109000010000")
    stay(b, "D2", "PD", "2026-03-10", "2026-03-12", diag="C16.900")
    b.diag("D2", "Z51.102", main=False)  # chemotherapy as an other diagnosis still excludes
    b.line("D2", "001109000010000")
    stay(b, "E1", "PE", "2026-03-01", "2026-03-05", diag="C16.900")
    b.line("E1", "001109000010000")
    stay(b, "E2", "PE", "2026-03-10", "2026-03-12", diag="C16.900")
    b.diag("E2", "Z50.000", main=False)  # not Z51: flagged
    b.line("E2", "001109000010000")
    assert set(by_visit(b.screen(tmp_path, READM))) == {"E2"}


def test_readmission_other_institution_only_when_same_institution_is_false(tmp_path):
    b = Batch()
    stay(b, "F1", "PF", "2026-03-01", "2026-03-05", inst="H002", diag="J18.900")
    b.line("F1", "001109000010000")
    stay(b, "F2", "PF", "2026-03-08", "2026-03-12", inst="H001", diag="J18.100")
    b.line("F2", "001109000010000")
    rules = (
        READM
        + """
- id: R-READM-ANY
  version: 1
  name: 15天内再入院（不限机构）
  type: readmission
  params: {same_institution: false}
"""
    )
    found = b.screen(tmp_path, rules)
    assert [(f["rule_id"], f["mdtrt_id"]) for f in found] == [("R-READM-ANY", "F2")]
    assert found[0]["evidence"].startswith(
        "本次住院 F2 2026-03-08 入院，距上次住院 F1 2026-03-05 出院 3 天（上次住院机构 H002，主诊断 J18 相同），不超过 15 天；"
    )


def test_readmission_diagnosis_prefix(tmp_path):
    b = Batch()
    stay(b, "G1", "PG", "2026-03-01", "2026-03-05", diag="J18.900")
    b.line("G1", "001109000010000")
    stay(b, "G2", "PG", "2026-03-08", "2026-03-12", diag="K35.800")  # another illness
    b.line("G2", "001109000010000")
    stay(b, "G3", "PH", "2026-03-01", "2026-03-05")  # no diagnosis at all
    b.line("G3", "001109000010000")
    stay(b, "G4", "PH", "2026-03-08", "2026-03-12")
    b.line("G4", "001109000010000")
    rules = (
        READM
        + """
- id: R-READM-ANYDX
  version: 1
  name: 15天内再入院（不限诊断）
  type: readmission
  params: {same_diag_prefix_len: 0}
"""
    )
    found = b.screen(tmp_path, rules)
    assert sorted((f["rule_id"], f["mdtrt_id"]) for f in found) == [("R-READM-ANYDX", "G2"), ("R-READM-ANYDX", "G4")]
    g2 = next(f for f in found if f["mdtrt_id"] == "G2")
    assert "出院 3 天（同一机构），不超过 15 天" in g2["evidence"]


def test_readmission_history_from_an_earlier_batch_counts_but_outpatient_and_cancelled_stays_do_not(tmp_path):
    con = db.connect(tmp_path / "t.duckdb")
    first = Batch()
    stay(first, "H1", "PI", "2026-02-20", "2026-02-25", diag="J18.900")
    first.line("H1", "001109000010000")
    stay(first, "K1", "PK", "2026-02-20", "2026-02-25", diag="J18.900", refunded=True)  # cancelled
    first.line("K1", "001109000010000")
    stay(first, "M1", "PM", "2026-02-24", "2026-02-24", diag="J18.900", med_type="11")  # outpatient
    first.line("M1", "001109000010000")
    load_batch(first.write(tmp_path / "b1"), con)
    second = Batch()
    stay(second, "H2", "PI", "2026-03-01", "2026-03-04", diag="J18.900")
    second.line("H2", "001109000010000", pric="12.34")
    stay(second, "K2", "PK", "2026-03-01", "2026-03-04", diag="J18.900")
    second.line("K2", "001109000010000")
    stay(second, "M2", "PM", "2026-03-01", "2026-03-04", diag="J18.900")
    second.line("M2", "001109000010000")
    load_batch(second.write(tmp_path / "b2"), con)
    screen(con, load_library(write_rules(tmp_path / "rules", READM)))
    found = findings(con)
    assert [f["mdtrt_id"] for f in found] == ["H2"]
    assert found[0]["violating"] == {next(iter(found[0]["violating"])): Decimal("12.34")}
    assert "距上次住院 H1 2026-02-25 出院 4 天" in found[0]["evidence"]


def test_readmission_unscreened_previous_stay_counts_as_history_and_open_stay_warns_in_process(tmp_path):
    b = Batch()
    stay(b, "N1", "PN", "2026-03-01", "2026-03-05", diag="J18.900", settled=False)  # discharged, not settled
    stay(b, "N2", "PN", "2026-03-07", None, diag="J18.900", settled=False)  # still in hospital
    b.line("N2", "001109000010000", cnt="2", pric="40")
    found = b.screen(tmp_path, READM, stage="in_process")
    assert [f["mdtrt_id"] for f in found] == ["N2"]
    assert found[0]["status"] == "warning" and found[0]["deduction_amt"] == Decimal("0")
    assert found[0]["violating"] == {next(iter(found[0]["violating"])): Decimal("80")}


def test_readmission_validity_is_judged_on_the_admission_date(tmp_path):
    b = Batch()
    stay(b, "Q1", "PQ", "2026-03-01", "2026-03-05", diag="J18.900")
    b.line("Q1", "001109000010000")
    stay(b, "Q2", "PQ", "2026-03-09", "2026-03-12", diag="J18.900")
    b.line("Q2", "001109000010000")
    rules = READM.replace("type: readmission", "type: readmission\n  valid_from: 2026-03-10")
    assert b.screen(tmp_path, rules) == []


# ---------------------------------------------------------------------------- overlapping_stays

OVL = """
- id: R-OVL-IP
  version: 1
  name: 重复住院
  type: overlapping_stays
  params: {kind: inpatient}
- id: R-OVL-OP
  version: 1
  name: 住院期间门诊
  type: overlapping_stays
  params: {kind: outpatient}
"""


def test_overlapping_inpatient_by_one_day_flags_the_later_stay_but_touching_does_not(tmp_path):
    b = Batch()
    stay(b, "S1", "PS", "2026-03-01", "2026-03-10", inst="H001")
    b.line("S1", "001109000010000")
    stay(b, "S2", "PS", "2026-03-09", "2026-03-15", inst="H002")  # overlaps 03-09..03-10
    b.line("S2", "001109000010000", cnt="6", pric="45.5")
    stay(b, "T1", "PT", "2026-03-01", "2026-03-10", inst="H001")
    b.line("T1", "001109000010000")
    stay(b, "T2", "PT", "2026-03-10", "2026-03-15", inst="H002")  # same-day transfer: touches only
    b.line("T2", "001109000010000")
    found = b.screen(tmp_path, OVL)
    assert [(f["rule_id"], f["mdtrt_id"]) for f in found] == [("R-OVL-IP", "S2")]
    f = found[0]
    assert f["violating"] == {next(iter(f["violating"])): Decimal("273")}
    assert f["evidence"] == (
        "本次普通住院 S2（机构 H002）2026-03-09 入院，与住院 S1（机构 H001，2026-03-01 入院，2026-03-10 出院）重叠 1 天；"
        "本次就诊费用 1 条，金额合计 273.00 元，其中医保支付范围内 273.00 元"
    )


def test_overlapping_stay_still_open_overlaps_everything_after_its_admission(tmp_path):
    b = Batch()
    stay(b, "U1", "PU", "2026-03-01", None, inst="H001", settled=False)
    stay(b, "U2", "PU", "2026-03-20", "2026-03-22", inst="H001")
    b.line("U2", "001109000010000")
    found = b.screen(tmp_path, OVL)
    assert [f["mdtrt_id"] for f in found] == ["U2"]
    assert "与住院 U1（机构 H001，2026-03-01 入院，尚未出院）重叠 2 天" in found[0]["evidence"]


def test_outpatient_visit_strictly_inside_a_stay_elsewhere(tmp_path):
    b = Batch()
    stay(b, "W0", "PW", "2026-03-01", "2026-03-10", inst="H001")
    b.line("W0", "001109000010000")
    for vid, day, inst in [
        ("W1", "03-05", "H002"),
        ("W2", "03-01", "H002"),
        ("W3", "03-10", "H002"),
        ("W4", "03-05", "H001"),
    ]:
        b.visit(
            mdtrt_id=vid,
            psn_no="PW",
            fixmedins_code=inst,
            med_type="11",
            begntime=f"2026-{day} 15:00:00",
            endtime=f"2026-{day} 16:00:00",
        )
        b.line(vid, "001101000010000", pric="25")
    found = b.screen(tmp_path, OVL)
    assert [(f["rule_id"], f["mdtrt_id"]) for f in found] == [("R-OVL-OP", "W1")]
    assert found[0]["violating"] == {next(iter(found[0]["violating"])): Decimal("25")}
    assert found[0]["evidence"].startswith(
        "本次普通门诊 W1（机构 H002）2026-03-05 就诊，正值参保人在住院 W0（机构 H001，2026-03-01 入院，2026-03-10 出院）期间；"
    )


# ---------------------------------------------------------------------------- gender_diagnosis_conflict

GDX = """
- id: R-GDX
  version: 1
  name: 性别与诊断不符
  type: gender_diagnosis_conflict
"""


def _dx_visit(b, vid, gend, *codes):
    b.visit(mdtrt_id=vid, psn_no=f"P{vid}", gend=gend)
    for i, c in enumerate(codes):
        b.diag(vid, c, main=i == 0)
    return b.line(vid, "001101000010000", pric="18.5")


def test_gender_diagnosis_conflict_default_ranges(tmp_path):
    b = Batch()
    _dx_visit(b, "M-O80", "1", "O80.000")  # childbirth, man: flagged
    _dx_visit(b, "M-O9A", "1", "J18.9", "O9A.111")  # other diagnosis in O00-O9A: flagged
    _dx_visit(b, "M-N97", "1", "N97.000")  # female infertility, man: flagged
    _dx_visit(b, "M-N99", "1", "N99.000")  # outside N70-N98
    _dx_visit(b, "F-O80", "2", "O80.000")  # woman: fine
    _dx_visit(b, "U-O80", "0", "O80.000")  # unknown gender: never flagged
    _dx_visit(b, "X-O80", "9", "O80.000")  # unstated: never flagged
    _dx_visit(b, "F-N40", "2", "N40.x00")  # prostate, woman: flagged
    _dx_visit(b, "F-N53", "2", "N53.900")  # last male category
    _dx_visit(b, "F-N54", "2", "N54.000")  # outside N40-N53
    _dx_visit(b, "F-N39", "2", "N39.000")
    found = by_visit(b.screen(tmp_path, GDX))
    assert set(found) == {"M-O80", "M-O9A", "M-N97", "F-N40", "F-N53"}
    f = found["M-O80"]
    assert f["violating"] == {next(iter(f["violating"])): Decimal("18.5")}
    assert f["evidence"] == (
        "患者性别为男，本次就诊 M-O80 诊断 O80.000 属女性专有诊断（O00-O9A）；"
        "本次就诊费用 1 条，金额合计 18.50 元，其中医保支付范围内 18.50 元"
    )
    assert found["F-N40"]["evidence"].startswith("患者性别为女，本次就诊 F-N40 诊断 N40.x00 属男性专有诊断（N40-N53）")


def test_gender_diagnosis_conflict_custom_lists_and_bad_entries(tmp_path):
    b = Batch()
    _dx_visit(b, "M-C53", "1", "C53.900")
    _dx_visit(b, "M-O80", "1", "O80.000")
    rules = """
- id: R-GDX2
  version: 1
  name: 宫颈癌诊断用于男性
  type: gender_diagnosis_conflict
  params: {female_prefixes: [C53], male_prefixes: []}
"""
    assert [f["mdtrt_id"] for f in b.screen(tmp_path, rules)] == ["M-C53"]
    bad = rules.replace("[C53]", "[N98-N70]")
    with pytest.raises(
        RuleLibraryError, match=r"rule R-GDX2: params.female_prefixes range 'N98-N70' ends before it starts"
    ):
        load_library(write_rules(tmp_path / "bad", bad))


# ---------------------------------------------------------------------------- high_frequency_purchase

HFP = """
- id: R-HFP
  version: 1
  name: 同一药品每月购药不超过4天
  type: high_frequency_purchase
  params: {max_days_per_month: 4}
"""
METFORMIN_A = "XA10BAD010A001010104486"  # same generic group (first 10 characters) ...
METFORMIN_B = "XA10BAD010A002010100002"  # ... from another maker
ASPIRIN = "XB01ACA056A001010100007"


def buy(b, vid, psn, day, code=METFORMIN_A, cnt="1", pric="18", inst="Y001", **kw):
    b.visit(
        mdtrt_id=vid,
        psn_no=psn,
        med_type="41",
        fixmedins_code=inst,
        begntime=f"2026-{day} 10:00:00",
        endtime=f"2026-{day} 10:05:00",
    )
    return b.line(vid, code, cnt=cnt, pric=pric, bkkp_sn=f"{vid}-L", hilist_name="二甲双胍片", **kw)


def test_high_frequency_purchase_counts_days_per_group_and_calendar_month(tmp_path):
    b = Batch()
    for i, day in enumerate(["03-01", "03-05", "03-09", "03-13"]):
        buy(b, f"A{i}", "P1", day, code=METFORMIN_A if i % 2 else METFORMIN_B, inst=f"Y00{i}")
    buy(b, "A4", "P1", "03-20", cnt="2", pric="18", fulamt_ownpay_amt="6.5")  # 5th day: excess
    buy(b, "A5", "P1", "03-20", cnt="1", pric="18", inst="Y009")  # same day elsewhere: excess
    buy(b, "A6", "P1", "03-31", pric="9.99")  # 6th day: excess
    buy(b, "A7", "P1", "04-01")  # April: its own month
    buy(b, "A8", "P1", "03-21", code=ASPIRIN)  # another group
    for i, day in enumerate(["03-01", "03-05", "03-09", "03-13"]):  # exactly 4 days
        buy(b, f"B{i}", "P2", day)
    stay(b, "B-IP", "P2", "2026-03-20", "2026-03-22")  # given in hospital: not bought
    for d in ("20", "21", "22"):
        b.line("B-IP", METFORMIN_A, time=f"2026-03-{d} 08:00:00")
    for i, day in enumerate(["03-01", "03-05", "03-09", "03-13"]):  # 4 paid days ...
        buy(b, f"C{i}", "P3", day)
    buy(b, "C4", "P3", "03-20", chrgitm_lv="03")  # ... + a self-paid one
    found = b.screen(tmp_path, HFP)
    assert len(found) == 1
    f = found[0]
    assert f["finding_key"] == "P1|XA10BAD010|2026-03" and f["period"] == "2026-03" and f["psn_no"] == "P1"
    assert f["mdtrt_id"] == "A4" and f["severity"] == "suspect"
    assert f["violating"] == {"A4-L": Decimal("29.5"), "A5-L": Decimal("18"), "A6-L": Decimal("9.99")}
    assert f["related"] == ["A0-L", "A1-L", "A2-L", "A3-L"]
    assert f["claimed_amt"] == Decimal("57.49") and f["flagged_amt"] == Decimal("63.99")
    assert f["evidence"].startswith(
        "参保人 P1 2026-03 购买同组药品 XA10BAD010（编码前 10 位）共 6 天（03-01、03-05、03-09、03-13、03-20、03-31），"
        "每月限 4 天，超出 2 天；药品【二甲双胍片】(XA10BAD010A001010104486) 2026-03-20 收费 2 次，金额 36.00 元（就诊 A4，机构 Y001）"
    )


def test_high_frequency_purchase_items_narrow_the_drugs(tmp_path):
    b = Batch()
    for i, day in enumerate(["03-01", "03-02", "03-03"]):
        buy(b, f"D{i}", "P4", day)
        buy(b, f"E{i}", "P4", day, code=ASPIRIN)
    rules = """
- id: R-HFP2
  version: 1
  name: 阿司匹林每月限2天
  type: high_frequency_purchase
  items: {prefixes: [XB01ACA056]}
  params: {max_days_per_month: 2}
"""
    found = b.screen(tmp_path, rules)
    assert [(f["finding_key"], list(f["violating"])) for f in found] == [("P4|XB01ACA056|2026-03", ["E2-L"])]


def test_high_frequency_purchase_is_post_hoc_only(tmp_path):
    with pytest.raises(
        RuleLibraryError, match="rule R-HFP: type high_frequency_purchase cannot run at stage in_process"
    ):
        load_library(write_rules(tmp_path, HFP.replace("params:", "stages: [in_process]\n  params:")))


# ---------------------------------------------------------------------------- inventory_mismatch

INV = """
- id: R-INV
  version: 1
  name: 进销存不符
  type: inventory_mismatch
"""
AMOX = "XJ01CAA040A001010100001"


def test_inventory_mismatch_excess_from_latest_lines_at_average_price(tmp_path):
    b = Batch()
    v = b.visit(
        mdtrt_id="V-INV",
        fixmedins_code="H001",
        med_type="21",
        begntime="2026-03-01 08:00:00",
        endtime="2026-04-02 08:00:00",
    )
    b.line(v, AMOX, cnt="60", pric="1.5", time="2026-03-10 09:00:00", bkkp_sn="X1-a", hilist_name="阿莫西林胶囊")
    b.line(v, AMOX, cnt="30", pric="1.6", time="2026-03-20 09:00:00", bkkp_sn="X1-b", hilist_name="阿莫西林胶囊")
    b.line(v, AMOX, cnt="30", pric="1.5", time="2026-03-31 09:00:00", bkkp_sn="X1-c", hilist_name="阿莫西林胶囊")
    b.line(v, "C0000000000000000000000000X2", cnt="15", pric="2", time="2026-03-15 09:00:00", bkkp_sn="X2-mar")
    b.line(v, "C0000000000000000000000000X2", cnt="5", pric="2", time="2026-04-01 09:00:00", bkkp_sn="X2-apr")
    b.line(v, "XN02BEA011A001010100003", cnt="3", pric="0.7", time="2026-03-15 09:00:00", bkkp_sn="X3")
    b.line(
        v, "XN02BEA011A002010100004", cnt="3", pric="0.7", time="2026-03-15 09:00:00", bkkp_sn="X4", hosp_appr_flag="2"
    )  # self-paid: holds the excess without a claim, so no finding
    b.line(v, "T000700420", cnt="30", pric="38", time="2026-03-15 09:00:00", bkkp_sn="X5")  # never tracked
    b.line(v, "001109000010000", cnt="40", pric="50", time="2026-03-15 09:00:00", bkkp_sn="BED")  # not stocked
    w = b.visit(mdtrt_id="V-H2", fixmedins_code="H002", begntime="2026-03-05 08:00:00", endtime="2026-03-05 09:00:00")
    b.line(w, AMOX, cnt="500", pric="1.5", bkkp_sn="H2-a")  # H002 reported no purchases: not judged
    # one row per institution, code and month (the purchases table's natural key)
    b.add(
        "purchases",
        fixmedins_code="H001",
        hilist_code=AMOX,
        period="2026-03",
        purchase_cnt="60",
        opening_stock_cnt="20",
    )
    b.add(
        "purchases",
        fixmedins_code="H001",
        hilist_code="C0000000000000000000000000X2",
        period="2026-03",
        purchase_cnt="10",
        opening_stock_cnt="5",
    )  # 15 billed = 10 + 5: not flagged
    b.add(
        "purchases",
        fixmedins_code="H001",
        hilist_code="C0000000000000000000000000X2",
        period="2026-04",
        purchase_cnt="5",
        opening_stock_cnt="0",
    )
    for code in ("XN02BEA011A001010100003", "XN02BEA011A002010100004"):  # tracked, but bought in February only
        b.add("purchases", fixmedins_code="H001", hilist_code=code, period="2026-02", purchase_cnt="9")
    found = {f["finding_key"]: f for f in b.screen(tmp_path, INV)}
    assert set(found) == {f"H001|{AMOX}|2026-03", "H001|XN02BEA011A001010100003|2026-03"}
    f = found[f"H001|{AMOX}|2026-03"]
    # billed 120 > 60 + 20 = 80: 40 excess at the average price 183 / 120 = 1.525, latest first:
    # X1-c holds 30 (45.75, capped at its deductible 45.00), X1-b holds 10 (15.25)
    assert f["violating"] == {"X1-b": Decimal("15.25"), "X1-c": Decimal("45")}
    assert f["claimed_amt"] == Decimal("60.25") and f["fixmedins_code"] == "H001" and f["period"] == "2026-03"
    assert f["mdtrt_id"] is None and f["severity"] == "suspect"
    # about the institution: no person, settlement, department or doctor borrowed from a line
    assert (f["psn_no"], f["setl_id"], f["dept_code"], f["dr_code"]) == (None, None, None, None)
    assert f["evidence"] == (
        "机构 H001 2026-03 药品【阿莫西林胶囊】(XJ01CAA040A001010100001) 收费数量 120，购进 60 + 期初库存 20 = 80，"
        "超出 40，按本月平均收费单价 1.53 元计；2026-03-20 收费 30 次，金额 48.00 元，其中 10 超出；"
        "2026-03-31 收费 30 次，金额 45.00 元，其中 30 超出"
    )
    # a tracked code billed with nothing bought in a reported month (有销无进)
    g = found["H001|XN02BEA011A001010100003|2026-03"]
    assert g["violating"] == {"X3": Decimal("2.1")} and g["related"] == []
    assert "进销存数据中本月无该品种购进及库存记录（按 0 计），超出 3，按本月平均收费单价 0.70 元计" in g["evidence"]
