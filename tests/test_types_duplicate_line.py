"""duplicate_line: same code, time, quantity and price on one visit: every copy after the first."""

from __future__ import annotations

from decimal import Decimal

from kit import Batch

INJ = "001201000040000"
RULES = """
- id: R-DLN-001
  version: 1
  name: 同一时间重复计费
  type: duplicate_line
"""
T = "2026-03-02 08:00:00"


def test_copies_after_the_first(tmp_path):
    b = Batch()
    v = b.visit(mdtrt_id="VL1")
    first = b.line(v, INJ, time=T, bkkp_sn="A1", hilist_name="静脉注射")
    c2 = b.line(v, INJ, time=T, bkkp_sn="A2", hilist_name="静脉注射")
    c3 = b.line(v, INJ, time=T, bkkp_sn="A3", hilist_name="静脉注射")
    found = b.screen(tmp_path, RULES)
    assert len(found) == 1
    assert found[0]["violating"] == {c2: Decimal("10"), c3: Decimal("10")}
    assert found[0]["related"] == [first]
    assert found[0]["evidence"] == (
        f"项目【静脉注射】({INJ}) 2026-03-02 08:00:00 以相同数量 1、单价 10.00 元计费 3 条，首条 A1，此条 A2 为重复；"
        "2026-03-02 收费 1 次，金额 10.00 元；"
        f"项目【静脉注射】({INJ}) 2026-03-02 08:00:00 以相同数量 1、单价 10.00 元计费 3 条，首条 A1，此条 A3 为重复；"
        "2026-03-02 收费 1 次，金额 10.00 元"
    )


def test_near_misses(tmp_path):
    b = Batch()
    v = b.visit()
    b.line(v, INJ, time=T)
    b.line(v, INJ, time="2026-03-02 08:00:01")  # one second later
    b.line(v, INJ, time=T, pric="11")  # other price
    b.line(v, INJ, time=T, cnt="2")  # other quantity
    b.line(v, "001201000050000", time=T)  # other code
    b.line(b.visit(), INJ, time=T)  # other visit
    a = b.line(v, INJ, time="2026-03-02 09:00:00", cnt="2")
    b.refund(a, cnt="-1")  # net 1 now, but its time differs anyway
    x = b.line(v, INJ, time="2026-03-02 10:00:00", cnt="2")
    b.line(v, INJ, time="2026-03-02 10:00:00", cnt="2", bkkp_sn=x + "b")
    b.refund(x + "b", cnt="-1")  # net quantities now differ: 2 and 1
    y = b.line(v, INJ, time="2026-03-02 11:00:00")
    b.line(v, INJ, time="2026-03-02 11:00:00", bkkp_sn=y + "b")
    b.refund(y + "b")  # refunded in full: gone
    assert b.screen(tmp_path, RULES) == []


def test_wider_window(tmp_path):
    b = Batch()
    v = b.visit()
    b.line(v, INJ, time="2026-03-02 08:00:05", bkkp_sn="B1")
    second = b.line(v, INJ, time="2026-03-02 08:00:50", bkkp_sn="B2")
    b.line(v, INJ, time="2026-03-02 08:01:00", bkkp_sn="B3")
    found = b.screen(tmp_path, RULES + "  params: {window: same_minute}\n")
    assert [f["violating"] for f in found] == [{second: Decimal("10")}]
    assert "2026-03-02 08:00 以相同数量 1" in found[0]["evidence"]


def test_self_paid_copies(tmp_path):
    b = Batch()
    v = b.visit()
    b.line(v, INJ, time=T, bkkp_sn="C1")
    b.line(v, INJ, time=T, bkkp_sn="C2", hosp_appr_flag="2")  # a self-paid copy: nothing to deduct
    w = b.visit()
    b.line(w, INJ, time=T, bkkp_sn="D1", hosp_appr_flag="2")  # the first copy self-paid
    d2 = b.line(w, INJ, time=T, bkkp_sn="D2")  # the fund paid the copy: flagged
    found = b.screen(tmp_path, RULES)
    assert [(f["violating"], f["related"]) for f in found] == [({d2: Decimal("10")}, ["D1"])]
