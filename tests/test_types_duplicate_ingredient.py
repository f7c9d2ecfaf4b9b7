"""duplicate_ingredient: two codes of one group key on one day of a visit: the cheaper code's lines."""

from __future__ import annotations

from decimal import Decimal

from kit import Batch

AMOX_A = "XJ01CAA040E001010200002"
AMOX_B = "XJ01CAA040E001010100001"  # same first 10 characters XJ01CAA040
OTHER = "XJ01CAA041E001010100001"
RULES = """
- id: R-ING-001
  version: 1
  name: 同通用名药品同日重复使用
  type: duplicate_ingredient
"""


def test_cheaper_code_is_flagged_for_review(tmp_path):
    b = Batch()
    v = b.visit(mdtrt_id="VI1")
    kept = b.line(v, AMOX_A, cnt="2", pric="15", hilist_name="阿莫西林胶囊(甲厂)")
    cheap = b.line(v, AMOX_B, cnt="1", pric="12", time="2026-03-02 12:00:00", hilist_name="阿莫西林胶囊(乙厂)")
    found = b.screen(tmp_path, RULES)
    assert len(found) == 1
    f = found[0]
    assert (f["severity"], f["deduction_amt"], f["claimed_amt"]) == ("suspect", Decimal("0.00"), Decimal("12.00"))
    assert f["violating"] == {cheap: Decimal("12")} and f["related"] == [kept]
    assert f["evidence"] == (
        f"药品【阿莫西林胶囊(乙厂)】({AMOX_B}) 与 药品【阿莫西林胶囊(甲厂)】({AMOX_A}) 属同一成分组（XJ01CAA040），"
        "2026-03-02 同日使用，保留当日金额较高者（30.00 元）；2026-03-02 收费 1 次，金额 12.00 元"
    )


def test_near_misses(tmp_path):
    b = Batch()
    v = b.visit(med_type="21", begntime="2026-03-01 08:00:00", endtime="2026-03-05 08:00:00")
    b.line(v, AMOX_A, time="2026-03-01 09:00:00")
    b.line(v, AMOX_B, time="2026-03-02 09:00:00")  # another day
    b.line(v, OTHER, time="2026-03-01 10:00:00")  # another group key
    b.line(v, AMOX_A, time="2026-03-03 09:00:00")
    b.line(v, AMOX_A, time="2026-03-03 10:00:00")  # the same code twice: not two drugs
    b.line(b.visit(), AMOX_B, time="2026-03-01 09:00:00")  # another visit
    b.line(v, "001102000010000", time="2026-03-04 09:00:00")  # services are not drugs: not judged
    b.line(v, "001102000010001", time="2026-03-04 09:00:00")
    gone = b.line(v, AMOX_B, time="2026-03-01 11:00:00")
    b.refund(gone)  # refunded in full: the day has one code
    assert b.screen(tmp_path, RULES) == []


def test_ties_keep_the_lower_code_and_self_paid_lines_still_count(tmp_path):
    b = Batch()
    v = b.visit()
    b.line(v, AMOX_B, pric="10", hosp_appr_flag="2")  # self-paid, lower code: kept, not flagged
    sn = b.line(v, AMOX_A, pric="10")
    found = b.screen(tmp_path, RULES)
    assert [f["violating"] for f in found] == [{sn: Decimal("10")}]
    w = b.visit()
    b.line(w, AMOX_A, pric="10")
    b.line(w, AMOX_B, pric="5", hosp_appr_flag="2")  # the cheaper one was self-paid: nothing at risk
    (tmp_path / "2").mkdir()
    assert [f["mdtrt_id"] for f in b.screen(tmp_path / "2", RULES)] == [v]


def test_key_len_and_items(tmp_path):
    b = Batch()
    v = b.visit()
    b.line(v, AMOX_A, pric="20")
    sn = b.line(v, OTHER, pric="10")
    found = b.screen(tmp_path, RULES + "  params: {key_len: 9}\n")
    assert [f["violating"] for f in found] == [{sn: Decimal("10")}]
    (tmp_path / "2").mkdir()
    only = RULES + '  items: {codes: ["%s", "%s"]}\n' % (AMOX_A, AMOX_B)
    assert b.screen(tmp_path / "2", only.replace("R-ING-001", "R-ING-002") + "  params: {key_len: 9}\n") == []
