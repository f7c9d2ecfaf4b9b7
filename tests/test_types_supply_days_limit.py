"""supply_days_limit: prd_days above max_days; excess_qty on (prd_days - max_days) / prd_days of the line."""

from __future__ import annotations

from decimal import Decimal

import pytest

from kit import Batch, write_rules
from medaudit.library import RuleLibraryError, load_library

MET = "XA10BAE001A001010100001"
RULES = """
- id: R-SUP-001
  version: 1
  name: 门诊处方超7日用量
  type: supply_days_limit
  items: {prefixes: [X]}
  params: {max_days: 7, outpatient_only: true}
"""
DISCHARGE = """
- id: R-SUP-002
  version: 1
  name: 出院带药超30天
  type: supply_days_limit
  params: {max_days: 30, discharge_only: true}
"""


def test_proportion_of_the_line(tmp_path):
    b = Batch()
    v = b.visit(mdtrt_id="VD1")
    sn = b.line(v, MET, cnt="3", pric="30", prd_days="30", hilist_name="二甲双胍片")
    found = b.screen(tmp_path, RULES)
    assert found[0]["violating"] == {sn: Decimal("69")}
    assert found[0]["evidence"] == (
        f"药品【二甲双胍片】({MET}) 限 7 天用量，开药 30 天，超出 23 天（按 23/30 计）；2026-03-02 收费 3 次，金额 90.00 元"
    )


def test_at_the_limit_or_without_days_is_fine_and_filters_apply(tmp_path):
    b = Batch()
    v = b.visit()
    b.line(v, MET, prd_days="7")
    b.line(v, MET)  # no prd_days
    b.line(v, "002503020070000", prd_days="30")  # not a drug: outside the items
    ipt = b.visit(med_type="21", begntime="2026-03-01 08:00:00", endtime="2026-03-05 08:00:00")
    b.line(ipt, MET, prd_days="30")  # inpatient: outpatient_only rule does not judge it
    b.line(v, MET, prd_days="30", hosp_appr_flag="2", time="2026-03-02 09:00:00")  # self-paid
    assert b.screen(tmp_path, RULES) == []


def test_discharge_only(tmp_path):
    b = Batch()
    v = b.visit(med_type="21", begntime="2026-03-01 08:00:00", endtime="2026-03-05 08:00:00")
    b.line(v, MET, prd_days="60")  # ward medication: not discharge medication
    sn = b.line(v, MET, cnt="4", pric="15", prd_days="60", dscg_tkdrug_flag="1", time="2026-03-05 08:00:00")
    found = b.screen(tmp_path, DISCHARGE)
    assert [f["violating"] for f in found] == [{sn: Decimal("30")}]
    assert "限 30 天用量，出院带药 60 天，超出 30 天（按 30/60 计）" in found[0]["evidence"]


def test_refund_and_fund_share(tmp_path):
    b = Batch()
    v = b.visit()
    sn = b.line(v, MET, cnt="3", pric="30", prd_days="30")
    b.refund(sn, cnt="-1")  # net 2 boxes: 2 x 30 x 23/30 = 46
    shared = b.line(
        v, MET, cnt="3", pric="30", prd_days="9", fulamt_ownpay_amt="20", time="2026-03-02 09:00:00"
    )  # 3 x 30 x 2/9 x 70/90 = 15.555...
    found = b.screen(tmp_path, RULES)
    assert found[0]["violating"] == {sn: Decimal("46"), shared: Decimal("15.555555555555")}
    assert found[0]["deduction_amt"] == Decimal("61.56")


def test_exact_half_cent_with_four_decimal_prices(tmp_path):
    # 1/3 of 0.0450 is exactly 0.015: rounds half-up to 0.02 (a truncated 1/3 of a unit would give 0.01)
    b = Batch()
    sn = b.line(b.visit(), MET, cnt="1", pric="0.045", prd_days="3")
    found = b.screen(tmp_path, RULES.replace("max_days: 7", "max_days: 2"))
    assert found[0]["violating"] == {sn: Decimal("0.015")}
    assert found[0]["deduction_amt"] == Decimal("0.02")


def test_both_filters_are_refused(tmp_path):
    lib = write_rules(
        tmp_path / "r", RULES.replace("outpatient_only: true", "outpatient_only: true, discharge_only: true")
    )
    with pytest.raises(RuleLibraryError, match="outpatient_only and params.discharge_only exclude each other"):
        load_library(lib)


def test_full_refund_and_rule_validity(tmp_path):
    b = Batch()
    v = b.visit()
    gone = b.line(v, MET, prd_days="30")
    b.refund(gone)
    old = b.visit(begntime="2025-12-31 08:00:00", endtime="2025-12-31 09:00:00")
    b.line(old, MET, prd_days="30")  # before the rule's validity
    assert b.screen(tmp_path, RULES + "  valid_from: 2026-01-01\n") == []
