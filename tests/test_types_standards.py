"""Standards and duplicates: frequency_limit, duplicate_charge, bed_days_over_los.

Each case asserts the violating and related lines, the claims to the cent and, for one case
per type, the evidence a clerk checks against the hospital's own records.
"""

from __future__ import annotations

from decimal import Decimal as D

import pytest

from kit import Batch

BED = "001109000010000"
BED2 = "001109000010100"
NURSE = "001202000010000"


def lines_of(found) -> tuple[dict, list]:
    violating, related = {}, []
    for f in found:
        violating.update(f["violating"])
        related += f["related"]
    return violating, sorted(related)


# ---------------------------------------------------------------------------- frequency_limit

FREQ = f"""
- id: R-FRQ-001
  version: 1
  name: 床位费每日限1次
  type: frequency_limit
  items: {{codes: ["{BED}"]}}
  params: {{max_per_day: 1}}
"""


def inpatient(b: Batch, **kw) -> str:
    base = dict(med_type="21", begntime="2026-03-01 08:00:00", endtime="2026-03-06 10:00:00")
    base.update(kw)
    return b.visit(**base)


def test_frequency_flags_the_later_line_and_relates_the_earlier(tmp_path):
    b = Batch()
    v = inpatient(b)
    first = b.line(v, BED, pric="30", time="2026-03-02 08:00:00", hilist_name="普通病房床位费")
    second = b.line(v, BED, pric="30", time="2026-03-02 18:00:00", hilist_name="普通病房床位费")
    b.line(v, BED, pric="30", time="2026-03-03 08:00:00")  # next day: within limit
    (f,) = b.screen(tmp_path, FREQ)
    assert f["violating"] == {second: D("30")} and f["related"] == [first]
    assert f["deduction_amt"] == D("30.00") and f["flagged_amt"] == D("30.00")
    assert f["evidence"] == (
        "项目【普通病房床位费】(001109000010000) 每日限 1，2026-03-02 共收费 2，超出 1，按单价 30.00 元计；"
        "2026-03-02 18:00 收费 1 次，金额 30.00 元，其中 1 超出"
    )


def test_frequency_excess_from_the_latest_lines_first(tmp_path):
    b = Batch()
    v = inpatient(b)
    a = b.line(v, BED, cnt="1", pric="30", time="2026-03-02 08:00:00")
    c = b.line(v, BED, cnt="2", pric="30", time="2026-03-02 12:00:00")
    d = b.line(v, BED, cnt="1", pric="30", time="2026-03-02 20:00:00")
    (f,) = b.screen(tmp_path, FREQ)
    # 4 units, limit 1: excess 3 = d (1) + c (2); a is the allowed one
    assert f["violating"] == {c: D("60"), d: D("30")} and f["related"] == [a]
    assert f["deduction_amt"] == D("90.00")


def test_frequency_same_time_ties_break_on_bkkp_sn(tmp_path):
    b = Batch()
    v = inpatient(b)
    b.line(v, BED, bkkp_sn="B-1", time="2026-03-02 08:00:00")
    b.line(v, BED, bkkp_sn="B-2", time="2026-03-02 08:00:00")
    (f,) = b.screen(tmp_path, FREQ)
    assert list(f["violating"]) == ["B-2"] and f["related"] == ["B-1"]


def test_frequency_within_limit_and_refunded_copy_not_flagged(tmp_path):
    b = Batch()
    v = inpatient(b)
    b.line(v, BED, time="2026-03-02 08:00:00")
    dup = b.line(v, BED, time="2026-03-02 09:00:00")
    b.refund(dup)
    w = inpatient(b)
    b.line(w, BED, time="2026-03-02 08:00:00")
    assert b.screen(tmp_path, FREQ) == []


def test_frequency_partly_self_paid_excess_line_claims_its_fund_share(tmp_path):
    b = Batch()
    v = inpatient(b)
    b.line(v, BED, pric="30", time="2026-03-02 08:00:00")
    late = b.line(v, BED, cnt="2", pric="30", fulamt_ownpay_amt="20", time="2026-03-02 20:00:00")
    (f,) = b.screen(tmp_path, FREQ)
    # excess 2 units x 30 x share (60 - 20) / 60 = 40.00; never more than the deductible 40
    assert f["violating"] == {late: D("40")}


def test_frequency_self_paid_line_absorbs_excess_without_a_claim(tmp_path):
    b = Batch()
    v = inpatient(b)
    a = b.line(v, BED, pric="30", time="2026-03-02 08:00:00")
    c = b.line(v, BED, pric="30", time="2026-03-02 20:00:00", chrgitm_lv="03")
    # the excess unit is the self-paid one: the fund paid for 1 bed day, within the limit
    assert b.screen(tmp_path, FREQ) == []
    e = b.line(v, BED, pric="30", time="2026-03-02 21:00:00")  # a third, paid by the fund
    (tmp_path / "2").mkdir()
    (f,) = b.screen(tmp_path / "2", FREQ)
    # 3 units, limit 1: excess 2 = e (claimed) + c (self-paid, absorbs one unit without a claim)
    assert f["violating"] == {e: D("30")} and f["related"] == sorted([a, c])
    assert f["evidence"] == (
        "项目【项目0000】(001109000010000) 每日限 1，2026-03-02 共收费 3，超出 2，按单价 30.00 元计；"
        "2026-03-02 21:00 收费 1 次，金额 30.00 元，其中 1 超出"
    )


def test_frequency_a_quiet_day_adds_no_context_to_the_visits_finding(tmp_path):
    b = Batch()
    v = inpatient(b)
    b.line(v, BED, time="2026-03-02 08:00:00")
    b.line(v, BED, time="2026-03-02 09:00:00", chrgitm_lv="03")  # excess, self-paid
    x = b.line(v, BED, time="2026-03-03 08:00:00")
    y = b.line(v, BED, time="2026-03-03 09:00:00")
    (f,) = b.screen(tmp_path, FREQ)
    assert f["violating"] == {y: D("10")} and f["related"] == [x]


def test_frequency_hours_per_day_and_per_item_limits(tmp_path):
    rules = """
- id: R-FRQ-002
  version: 1
  name: 呼吸机每日限24小时
  type: frequency_limit
  items: {table: t.csv}
"""
    b = Batch()
    v = inpatient(b)
    vent = b.line(v, "003101000010000", cnt="26", pric="12.5", time="2026-03-02 08:00:00")
    b.line(v, "003101000020000", cnt="3", pric="5", time="2026-03-02 08:00:00")  # limit 3: fine
    (f,) = b.screen(tmp_path, rules, tables={"t.csv": "code,max_per_day\n003101000010000,24\n003101000020000,3\n"})
    assert f["violating"] == {vent: D("25")}  # 2 hours x 12.50


# ---------------------------------------------------------------------------- duplicate_charge

MAIN, SEC = "001103000010000", "001102000030000"  # 急诊监护费 includes 急诊诊查费


def dup_rule(window: str) -> str:
    return f"""
- id: R-DUP-001
  version: 1
  name: 急诊监护费含诊查费
  type: duplicate_charge
  items:
    rows:
      - {{code: "{SEC}", main_code: "{MAIN}", window: "{window}"}}
"""


@pytest.mark.parametrize(
    "window, main_time, sec_time, flags",
    [
        ("hours:6", "2026-03-02 08:00:00", "2026-03-02 14:00:00", False),  # exactly 6 h apart
        ("hours:6", "2026-03-02 08:00:00", "2026-03-02 13:59:00", True),  # 5 h 59 m
        ("hours:6", "2026-03-02 14:00:00", "2026-03-02 08:00:01", True),  # either side
        ("same_hour", "2026-03-02 08:59:00", "2026-03-02 09:00:00", False),
        ("same_hour", "2026-03-02 09:00:00", "2026-03-02 09:59:59", True),
        ("same_hour", "2026-03-02 09:00:00", "2026-03-03 09:00:00", False),  # same hour, another day
        ("same_day", "2026-03-02 23:59:00", "2026-03-03 00:00:00", False),  # across midnight
        ("same_day", "2026-03-02 00:00:00", "2026-03-02 23:59:59", True),
        ("same_visit", "2026-03-01 09:00:00", "2026-03-05 09:00:00", True),
    ],
)
def test_duplicate_windows(tmp_path, window, main_time, sec_time, flags):
    b = Batch()
    v = inpatient(b)
    m = b.line(v, MAIN, time=main_time)
    s = b.line(v, SEC, time=sec_time)
    found = b.screen(tmp_path, dup_rule(window))
    assert lines_of(found) == (({s: D("10")}, [m]) if flags else ({}, []))


def test_duplicate_evidence_and_money(tmp_path):
    b = Batch()
    v = b.visit(med_type="13", begntime="2026-03-02 08:00:00")
    m = b.line(v, MAIN, hilist_name="急诊监护费", pric="60", time="2026-03-02 08:00:00")
    s = b.line(v, SEC, hilist_name="急诊诊查费", pric="12", time="2026-03-02 09:30:00")
    (f,) = b.screen(tmp_path, dup_rule("same_day"))
    assert f["violating"] == {s: D("12")} and f["related"] == [m]
    assert f["evidence"] == (
        "项目【急诊诊查费】(001102000030000) 已包含在 项目【急诊监护费】(001103000010000) 中（同日），"
        "主项 2026-03-02 08:00 已收费；2026-03-02 收费 1 次，金额 12.00 元"
    )
    assert f["deduction_amt"] == D("12.00")


def test_duplicate_evidence_names_the_main_item_from_the_item_table(tmp_path):
    """A batch without hilist_name: the evidence takes the main item's name from the rule's
    item table (主项名称, column main_name), not `项目【】(code)`."""
    b = Batch()
    v = b.visit(med_type="13", begntime="2026-03-02 08:00:00")
    b.line(v, MAIN, pric="60", time="2026-03-02 08:00:00", hilist_name="")
    b.line(v, SEC, pric="12", time="2026-03-02 09:30:00", hilist_name="")
    rules = """
- id: R-DUP-001
  version: 1
  name: 急诊监护费含诊查费
  type: duplicate_charge
  items: {table: pairs.csv}
"""
    table = f"code,name,main_code,main_name,window\n{SEC},急诊诊查费,{MAIN},急诊监护费,same_day\n"
    (f,) = b.screen(tmp_path, rules, tables={"pairs.csv": table})
    assert f["evidence"].startswith(
        "项目【急诊诊查费】(001102000030000) 已包含在 项目【急诊监护费】(001103000010000) 中（同日）"
    ), f["evidence"]
    assert f["deduction_amt"] == D("12.00")


def test_duplicate_other_visit_refunded_main_or_self_paid_secondary_not_flagged(tmp_path):
    b = Batch()
    v = b.visit(psn_no="P-X")
    w = b.visit(psn_no="P-X")  # same person, another visit
    b.line(v, MAIN)
    b.line(w, SEC)
    x = b.visit()
    mm = b.line(x, MAIN)
    b.refund(mm)
    b.line(x, SEC)
    y = b.visit()
    b.line(y, MAIN)
    b.line(y, SEC, hosp_appr_flag="2")
    assert b.screen(tmp_path, dup_rule("same_visit")) == []


def test_duplicate_several_mains_are_all_related(tmp_path):
    b = Batch()
    v = inpatient(b)
    m1 = b.line(v, MAIN, time="2026-03-02 08:00:00")
    m2 = b.line(v, MAIN, time="2026-03-02 10:00:00")
    s = b.line(v, SEC, time="2026-03-02 09:00:00", pric="12")
    (f,) = b.screen(tmp_path, dup_rule("same_day"))
    assert f["violating"] == {s: D("12")} and f["related"] == sorted([m1, m2])
    assert "主项 2026-03-02 08:00 已收费" in f["evidence"]  # the nearest main (a tie: the first line id)


def test_duplicate_same_code_pair_keeps_the_first_line(tmp_path):
    """A pair whose main and secondary are one code (e.g. 挂号费 twice a day): the first
    line stands, every later copy in the window is the duplicate."""
    rules = f"""
- id: R-DUP-002
  version: 1
  name: 同日重复挂号
  type: duplicate_charge
  items:
    rows:
      - {{code: "{MAIN}", main_code: "{MAIN}", window: same_day}}
"""
    b = Batch()
    v = inpatient(b)
    a = b.line(v, MAIN, time="2026-03-02 08:00:00")
    c = b.line(v, MAIN, time="2026-03-02 09:00:00")
    d = b.line(v, MAIN, time="2026-03-02 10:00:00")
    (f,) = b.screen(tmp_path, rules)
    assert f["violating"] == {c: D("10"), d: D("10")}
    assert f["related"] == [a]


def test_duplicate_prefix_items_and_several_pairs(tmp_path):
    rules = """
- id: R-DUP-003
  version: 1
  name: 套餐分解
  type: duplicate_charge
  items: {table: pairs.csv}
"""
    table = "code,main_code,window\n002501,002500000000000,same_day\n002502000000000,002500000000000,hours:2\n"
    b = Batch()
    v = inpatient(b)
    m = b.line(v, "002500000000000", time="2026-03-02 08:00:00")
    a = b.line(v, "002501000000000", time="2026-03-02 20:00:00")
    b.line(v, "002502000000000", time="2026-03-02 10:00:00")  # exactly 2 h: not flagged
    found = b.screen(
        tmp_path,
        rules.replace("{table: pairs.csv}", "{table: pairs.csv}"),
        tables={"pairs.csv": table.replace("002501,", "002501000000000,")},
    )
    assert lines_of(found) == ({a: D("10")}, [m])


# ---------------------------------------------------------------------------- bed_days_over_los

BEDS = f"""
- id: R-BED-001
  version: 1
  name: 床位费天数超住院天数
  type: bed_days_over_los
  items: {{codes: ["{BED}", "{BED2}"]}}
"""


def stay(b: Batch, **kw) -> str:  # 2026-03-01 to 2026-03-06: LOS 5
    return inpatient(b, **kw)


def test_bed_days_over_los_flags_the_latest_days(tmp_path):
    b = Batch()
    v = stay(b)
    sns = [b.line(v, BED, pric="30", time=f"2026-03-0{d} 08:00:00", hilist_name="普通病房床位费") for d in range(1, 6)]
    single = b.line(v, BED2, cnt="2", pric="80", time="2026-03-06 08:00:00", hilist_name="单人间床位费")
    (f,) = b.screen(tmp_path, BEDS)
    # 7 bed days for a 5-day stay: the 2 excess units are the latest line's (2 x 80)
    assert f["violating"] == {single: D("160")}
    assert f["related"] == sorted(sns)
    assert f["deduction_amt"] == D("160.00")
    assert f["evidence"] == (
        "住院 2026-03-01 至 2026-03-06，住院天数 5 天，床位/护理类项目共收费 7，超出 2；"
        "项目【单人间床位费】(001109000010100) 2026-03-06 收费 2 次，金额 160.00 元，其中 2 超出"
    )


def test_bed_days_excess_split_across_lines(tmp_path):
    b = Batch()
    v = stay(b)
    a = b.line(v, BED, cnt="5", pric="30", time="2026-03-01 08:00:00")
    c = b.line(v, BED, cnt="2", pric="30", time="2026-03-05 08:00:00")
    d = b.line(v, BED, cnt="1", pric="30", time="2026-03-06 08:00:00")
    (f,) = b.screen(tmp_path, BEDS)
    assert f["violating"] == {c: D("60"), d: D("30")} and f["related"] == [a]


@pytest.mark.parametrize("tolerance, n_days, flagged", [(0, 5, False), (0, 6, True), (1, 6, False), (1, 7, True)])
def test_bed_days_tolerance(tmp_path, tolerance, n_days, flagged):
    b = Batch()
    v = stay(b)
    b.line(v, BED, cnt=str(n_days), time="2026-03-06 08:00:00")
    found = b.screen(tmp_path, BEDS + f"  params: {{tolerance: {tolerance}}}\n")
    assert bool(found) is flagged
    if flagged:
        assert found[0]["violating"] == {next(iter(found[0]["violating"])): D("10")}


def test_bed_days_open_stay_outpatient_and_refunds(tmp_path):
    b = Batch()
    open_ = b.visit(med_type="21", begntime="2026-03-01 08:00:00", endtime="", settled=False)
    b.line(open_, BED, cnt="30")
    out = b.visit(med_type="11")
    b.line(out, BED, cnt="3")
    v = stay(b)
    x = b.line(v, BED, cnt="7")
    b.refund(x, cnt="-2", det_item_fee_sumamt="-20")  # net 5 = LOS
    assert b.screen(tmp_path, BEDS) == []
    (tmp_path / "ip").mkdir()
    assert b.screen(tmp_path / "ip", BEDS, stage="in_process") == []


def test_bed_days_excess_on_self_paid_lines_only_is_not_flagged(tmp_path):
    b = Batch()
    v = stay(b)
    b.line(v, BED, cnt="5", time="2026-03-01 08:00:00")
    b.line(v, BED2, cnt="1", time="2026-03-06 08:00:00", hosp_appr_flag="2")
    assert b.screen(tmp_path, BEDS) == []


def test_bed_days_partly_self_paid_excess_line(tmp_path):
    b = Batch()
    v = stay(b)
    b.line(v, BED, cnt="4", pric="30", time="2026-03-01 08:00:00")
    late = b.line(v, BED2, cnt="3", pric="80", fulamt_ownpay_amt="90", time="2026-03-06 08:00:00")
    (f,) = b.screen(tmp_path, BEDS)
    # excess 2 of the 3 units: 2 x 80 x (240 - 90) / 240 = 100.00
    assert f["violating"] == {late: D("100")}


def test_bed_days_ipt_days_wins_and_same_day_stay_counts_one(tmp_path):
    b = Batch()
    v = stay(b, ipt_days="3")  # recorded LOS 3, dates say 5
    a = b.line(v, BED, cnt="4", time="2026-03-06 08:00:00")
    w = b.visit(med_type="21", begntime="2026-03-02 08:00:00", endtime="2026-03-02 18:00:00")  # LOS 1
    c = b.line(w, BED, cnt="2", time="2026-03-02 09:00:00")
    z = b.visit(med_type="21", begntime="2026-03-02 08:00:00", endtime="2026-03-02 18:00:00", ipt_days="0")
    b.line(z, BED, cnt="1", time="2026-03-02 09:00:00")  # recorded 0 days: still one bed day allowed
    violating, _ = lines_of(b.screen(tmp_path, BEDS))
    assert violating == {a: D("10"), c: D("10")}
