"""secondary_procedure: second and further operations of one group on one day billed above rate x full price."""

from __future__ import annotations

from decimal import Decimal

import pytest

from kit import Batch, write_rules
from medaudit.library import RuleLibraryError, load_library

MAIN = "003310000010000"
SEC = "003310000020000"
OTHER = "003310000030000"
RULES = f"""
- id: R-SEC-001
  version: 1
  name: 胃肠同切口多项手术次要手术按50%收费
  type: secondary_procedure
  items:
    rows:
      - {{code: "{MAIN}", group: 胃肠手术组}}
      - {{code: "{SEC}", group: 胃肠手术组}}
      - {{code: "{OTHER}", group: 胃肠手术组}}
"""


def stay(b: Batch) -> str:
    return b.visit(med_type="21", begntime="2026-03-01 08:00:00", endtime="2026-03-09 08:00:00")


def test_secondary_at_full_price(tmp_path):
    b = Batch()
    v = stay(b)
    main = b.line(v, MAIN, pric="3000", pric_uplmt_amt="3000", time="2026-03-02 09:00:00", hilist_name="胃大部切除术")
    sec = b.line(v, SEC, pric="2000", pric_uplmt_amt="2000", time="2026-03-02 10:00:00", hilist_name="胃肠吻合术")
    found = b.screen(tmp_path, RULES)
    assert found[0]["violating"] == {sec: Decimal("1000")} and found[0]["related"] == [main]
    assert found[0]["evidence"] == (
        f"项目【胃肠吻合术】({SEC}) 与主手术 项目【胃大部切除术】({MAIN})（单价 3000.00 元）同日同组（胃肠手术组），"
        "次要手术应不高于全价 2000.00 元的 50%（1000.00 元），实际单价 2000.00 元，按 50% 扣除；"
        "2026-03-02 收费 1 次，金额 2000.00 元"
    )


@pytest.mark.parametrize("billed, claim", [("1000", None), ("1000.01", Decimal("500.005"))])
def test_discount_boundary(tmp_path, billed, claim):
    b = Batch()
    v = stay(b)
    b.line(v, MAIN, pric="3000", pric_uplmt_amt="3000")
    sec = b.line(v, SEC, pric=billed, pric_uplmt_amt="2000")
    found = b.screen(tmp_path, RULES)
    assert [f["violating"] for f in found] == ([{sec: claim}] if claim else [])
    if claim:
        assert found[0]["deduction_amt"] == Decimal("500.01")  # half-up at the end


def test_needs_two_codes_on_one_day_and_a_full_price(tmp_path):
    b = Batch()
    v = stay(b)
    b.line(v, MAIN, pric="3000", pric_uplmt_amt="3000", time="2026-03-02 09:00:00")
    b.line(v, SEC, pric="2000", pric_uplmt_amt="2000", time="2026-03-03 09:00:00")  # another day
    b.line(v, MAIN, pric="3000", pric_uplmt_amt="3000", time="2026-03-04 09:00:00")
    b.line(v, MAIN, pric="3000", pric_uplmt_amt="3000", time="2026-03-04 10:00:00")  # one code only
    b.line(v, MAIN, pric="3000", time="2026-03-05 09:00:00")
    b.line(v, SEC, pric="2000", time="2026-03-05 10:00:00")  # no full price known: not judged
    assert b.screen(tmp_path, RULES) == []


def test_full_price_from_the_catalogue_and_other_rate(tmp_path):
    b = Batch()
    b.add("hilist", hilist_code=SEC, lv1_pric="1800", lv2_pric="2000", lv3_pric="2400")
    v = stay(b)
    b.line(v, MAIN, pric="3000")
    sec = b.line(v, SEC, pric="1500")  # 1500 > 70% of 2000
    found = b.screen(tmp_path, RULES + "  params: {rate: 0.7}\n")
    assert found[0]["violating"] == {sec: Decimal("450")}  # 30% of 1500
    assert "应不高于全价 2000.00 元的 70%（1400.00 元），实际单价 1500.00 元，按 30% 扣除" in found[0]["evidence"]


def test_every_line_but_the_main_one(tmp_path):
    b = Batch()
    v = stay(b)
    first = b.line(v, MAIN, pric="3000", pric_uplmt_amt="3000", time="2026-03-02 09:00:00", hosp_appr_flag="2")
    again = b.line(v, MAIN, pric="3000", pric_uplmt_amt="3000", time="2026-03-02 10:00:00")
    sec = b.line(v, SEC, pric="2000", pric_uplmt_amt="2000", time="2026-03-02 11:00:00", fulamt_ownpay_amt="500")
    found = b.screen(tmp_path, RULES)
    # the self-paid main line is still the main one; the same code again is a secondary operation;
    # a partly self-paid secondary line gives half of its deductible
    assert found[0]["violating"] == {again: Decimal("1500"), sec: Decimal("750")}
    assert found[0]["related"] == [first]


def test_rate_must_be_below_one(tmp_path):
    lib = write_rules(tmp_path / "r", RULES + "  params: {rate: 1}\n")
    with pytest.raises(RuleLibraryError, match="params.rate must be at least 0 and below 1, got 1"):
        load_library(lib)


def test_code_in_two_groups_and_an_item_listed_twice(tmp_path):
    rules = (
        RULES
        + f"""      - {{code: "{MAIN}", group: 胃肠手术组}}
      - {{code: "{MAIN}", group: 腹腔手术组}}
      - {{code: "{OTHER}", group: 腹腔手术组}}
"""
    )
    b = Batch()
    v = stay(b)
    main = b.line(v, MAIN, pric="3000", pric_uplmt_amt="3000")  # main of both groups
    sec = b.line(v, SEC, pric="2000", pric_uplmt_amt="2000")
    oth = b.line(v, OTHER, pric="800", pric_uplmt_amt="1000")
    found = b.screen(tmp_path, rules)
    assert found[0]["violating"] == {sec: Decimal("1000"), oth: Decimal("400")}
    assert found[0]["related"] == [main]
    assert found[0]["deduction_amt"] == Decimal("1400.00")


def test_refunded_main_operation_leaves_one_code(tmp_path):
    b = Batch()
    v = stay(b)
    main = b.line(v, MAIN, pric="3000", pric_uplmt_amt="3000")
    b.refund(main)
    b.line(v, SEC, pric="2000", pric_uplmt_amt="2000")
    assert b.screen(tmp_path, RULES) == []
