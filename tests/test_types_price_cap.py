"""price_cap: unit price above the cap of the institution's level (rule table, else hilist)."""

from __future__ import annotations

from decimal import Decimal

from kit import Batch

CONSULT = "001102000010000"
RULES = f"""
- id: R-PRC-001
  version: 1
  name: 诊查费超标准收费
  type: price_cap
  items:
    rows:
      - {{code: "{CONSULT}", lv1_pric: 8, lv2_pric: 10, lv3_pric: 12}}
      - {{code: "001102000020000", cap: 20}}
"""
CATALOGUE_RULES = """
- id: R-PRC-002
  version: 1
  name: 超医保目录限价
  type: price_cap
"""


def test_level_2_cap_from_rule_table(tmp_path):
    b = Batch()
    v = b.visit(hosp_lv="05", mdtrt_id="VP1")
    sn = b.line(v, CONSULT, cnt="2", pric="12", hilist_name="普通门诊诊查费")
    found = b.screen(tmp_path, RULES)
    assert found[0]["violating"] == {sn: Decimal("4")}
    assert found[0]["deduction_amt"] == Decimal("4.00")
    assert found[0]["evidence"] == (
        f"项目【普通门诊诊查费】({CONSULT}) 二级机构限价 10.00 元（规则限价），实际单价 12.00 元；"
        "2026-03-02 收费 2 次，金额 24.00 元，超标准 4.00 元"
    )


def test_price_equal_to_the_cap_is_fine_and_level_decides_the_cap(tmp_path):
    b = Batch()
    b.line(b.visit(hosp_lv="01"), CONSULT, pric="12")  # level 3: cap 12
    b.line(b.visit(hosp_lv="05"), CONSULT, pric="10")  # level 2: cap 10
    b.line(b.visit(hosp_lv="08"), CONSULT, pric="8")  # level 1: cap 8
    assert b.screen(tmp_path, RULES) == []


def test_level_0_uses_level_1_cap(tmp_path):
    b = Batch()
    sn = b.line(b.visit(hosp_lv="11"), CONSULT, pric="10", hilist_name="诊查费")
    found = b.screen(tmp_path, RULES)
    assert found[0]["violating"] == {sn: Decimal("2")}
    assert "未定级机构（按一级）限价 8.00 元（规则限价）" in found[0]["evidence"]


def test_cap_column_for_any_level(tmp_path):
    b = Batch()
    ok = b.line(b.visit(hosp_lv="01"), "001102000020000", pric="20")
    over = b.line(b.visit(hosp_lv="09"), "001102000020000", pric="20.01")
    found = b.screen(tmp_path, RULES)
    assert [f["violating"] for f in found] == [{over: Decimal("0.01")}]
    assert ok not in found[0]["violating"]


def catalogue(b: Batch) -> None:
    b.add(
        "hilist",
        hilist_code="002503020070000",
        hilist_name="糖化血红蛋白测定",
        lv1_pric="35",
        lv2_pric="40",
        lv3_pric="50",
        begndate="2026-01-01",
        enddate="2026-12-31",
    )
    b.add(
        "hilist",
        hilist_code="002503020070000",
        lv1_pric="20",
        lv2_pric="20",
        lv3_pric="20",
        begndate="2020-01-01",
        enddate="2025-12-31",
    )  # expired: not used for 2026 fees


def test_caps_from_the_catalogue_in_force_on_the_fee_date(tmp_path):
    b = Batch()
    catalogue(b)
    v = b.visit()
    sn = b.line(v, "002503020070000", pric="45", hilist_name="糖化血红蛋白测定")
    b.line(b.visit(hosp_lv="01"), "002503020070000", pric="45")  # level 3 cap 50
    old = b.visit(begntime="2025-12-31 08:00:00", endtime="2025-12-31 09:00:00")
    b.line(old, "002503020070000", pric="20")  # 2025 cap 20: fine
    b.line(b.visit(), "009999999990000", pric="999")  # not in the catalogue: no cap, not judged
    found = b.screen(tmp_path, CATALOGUE_RULES)
    assert [f["violating"] for f in found] == [{sn: Decimal("5")}]
    assert "二级机构限价 40.00 元（医保目录限价），实际单价 45.00 元" in found[0]["evidence"]


def test_fund_share_and_never_more_than_deductible(tmp_path):
    b = Batch()
    catalogue(b)
    v = b.visit()
    shared = b.line(v, "002503020070000", cnt="3", pric="45", fulamt_ownpay_amt="35")  # deductible 100 of 135
    odd = b.line(
        v, "002503020070000", cnt="1", pric="100", det_item_fee_sumamt="20", time="2026-03-02 09:00:00"
    )  # billed 20 in total: claim 60 capped at 20
    found = b.screen(tmp_path, CATALOGUE_RULES)
    assert found[0]["violating"] == {shared: Decimal("11.111111111111"), odd: Decimal("20")}
    assert found[0]["deduction_amt"] == Decimal("31.11")


def test_self_paid_and_refunded_lines_are_not_flagged(tmp_path):
    b = Batch()
    v = b.visit()
    b.line(v, CONSULT, pric="12", hosp_appr_flag="2")
    gone = b.line(v, CONSULT, pric="12")
    b.refund(gone)
    assert b.screen(tmp_path, RULES) == []


def test_unit_prices_with_more_decimals_are_shown_as_billed(tmp_path):
    b = Batch()
    sn = b.line(b.visit(), "XA10BAE001A001010100001", cnt="100", pric="0.0450", hilist_name="二甲双胍片")
    rules = RULES.replace("cap: 20}", 'cap: 20}\n      - {code: "XA10BAE001A001010100001", cap: 0.04}')
    found = b.screen(tmp_path, rules)
    assert found[0]["violating"] == {sn: Decimal("0.5")}
    assert (
        "限价 0.04 元（规则限价），实际单价 0.045 元；2026-03-02 收费 100 次，金额 4.50 元，超标准 0.50 元"
        in found[0]["evidence"]
    )
