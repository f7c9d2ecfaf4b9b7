"""course_limit: within one visit, lines of a group dated max_days or more days after its first paid use."""

from __future__ import annotations

from decimal import Decimal

from kit import Batch

A = "XM05BXG056B002010100486"  # 注射用骨肽, two packages of one generic drug
B = "XM05BXG056B002010200486"
C = "XB01ACA056B002010100001"
RULES = f"""
- id: R-CRS-001
  version: 1
  name: 注射用骨肽限支付14天
  type: course_limit
  items:
    rows:
      - {{code: "{A}", group: 骨肽, max_days: 14}}
      - {{code: "{B}", group: 骨肽, max_days: 14}}
      - {{code: "{C}", max_days: 14}}
"""


def stay(b: Batch, **kw) -> str:
    return b.visit(med_type="21", begntime="2026-03-01 08:00:00", endtime="2026-03-31 10:00:00", **kw)


def test_group_counts_from_first_use_across_codes(tmp_path):
    b = Batch()
    v = stay(b, mdtrt_id="VC1")
    first = b.line(v, A, pric="25", time="2026-03-01 09:00:00", hilist_name="注射用骨肽")
    b.line(v, B, pric="25", time="2026-03-14 23:00:00")  # day 14: still in the course
    d15 = b.line(v, B, pric="25", time="2026-03-15 00:10:00", hilist_name="注射用骨肽(大)")  # day 15
    d16 = b.line(v, A, cnt="2", pric="25", time="2026-03-16 09:00:00", hilist_name="注射用骨肽")
    found = b.screen(tmp_path, RULES)
    assert len(found) == 1
    f = found[0]
    assert f["violating"] == {d15: Decimal("25"), d16: Decimal("50")}
    assert f["related"] == [first]
    assert f["deduction_amt"] == Decimal("75.00")
    assert f["evidence"] == (
        f"药品【注射用骨肽(大)】({B}) 限支付 14 天（骨肽），本次就诊首次使用 2026-03-01，此日为第 15 天；"
        "2026-03-15 收费 1 次，金额 25.00 元；"
        f"药品【注射用骨肽】({A}) 限支付 14 天（骨肽），本次就诊首次使用 2026-03-01，此日为第 16 天；"
        "2026-03-16 收费 2 次，金额 50.00 元"
    )


def test_item_without_group_is_its_own_course(tmp_path):
    b = Batch()
    v = stay(b)
    b.line(v, A, time="2026-03-01 09:00:00")
    b.line(v, C, time="2026-03-05 09:00:00")
    b.line(v, C, time="2026-03-18 09:00:00")  # day 14 of C (day 18 of the stay)
    assert b.screen(tmp_path, RULES) == []


def test_self_paid_or_refunded_first_use_does_not_start_the_course(tmp_path):
    b = Batch()
    v = stay(b)
    b.line(v, A, time="2026-02-27 09:00:00", hosp_appr_flag="2")  # self-paid
    gone = b.line(v, A, time="2026-02-28 09:00:00")
    b.refund(gone)  # refunded in full
    b.line(v, A, time="2026-03-02 09:00:00")  # first paid use: day 1
    b.line(v, A, time="2026-03-15 09:00:00")  # day 14
    late = b.line(v, A, time="2026-03-16 09:00:00")  # day 15
    b.line(v, A, time="2026-03-17 09:00:00", chrgitm_lv="03")  # class C: the fund paid nothing
    found = b.screen(tmp_path, RULES)
    assert [f["violating"] for f in found] == [{late: Decimal("10")}]


def test_a_new_visit_starts_a_new_course(tmp_path):
    b = Batch()
    v1 = stay(b, psn_no="PX")
    v2 = b.visit(psn_no="PX", med_type="21", begntime="2026-04-01 08:00:00", endtime="2026-04-20 08:00:00")
    b.line(v1, A, time="2026-03-01 09:00:00")
    b.line(v2, A, time="2026-04-10 09:00:00")
    assert b.screen(tmp_path, RULES) == []


def test_partly_self_paid_line_claims_its_deductible(tmp_path):
    b = Batch()
    v = stay(b)
    b.line(v, A, time="2026-03-01 09:00:00")
    late = b.line(v, A, cnt="3", pric="25", time="2026-03-20 09:00:00", fulamt_ownpay_amt="20.25")
    found = b.screen(tmp_path, RULES)
    assert found[0]["violating"] == {late: Decimal("54.75")}
