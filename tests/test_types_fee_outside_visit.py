"""fee_outside_visit: fee dates before the visit's start date or after its end date (+ tolerance)."""

from __future__ import annotations

from decimal import Decimal

from kit import Batch

RULES = """
- id: R-OUT-001
  version: 1
  name: 费用发生时间超出就诊期
  type: fee_outside_visit
"""
CT = "002103020010000"


def stay(b: Batch, **kw) -> str:
    return b.visit(
        mdtrt_id=kw.pop("mdtrt_id", None) or f"VS{len(b.rows['mdtrt_d'])}",
        med_type="21",
        begntime="2026-03-01 08:00:00",
        endtime="2026-03-05 10:00:00",
        **kw,
    )


def test_dates_not_times_decide(tmp_path):
    b = Batch()
    v = stay(b, mdtrt_id="VO1")
    b.line(v, CT, time="2026-03-01 07:00:00")  # before admission time, same date: fine
    b.line(v, CT, time="2026-03-05 23:00:00")  # after discharge time, same date: fine
    late = b.line(v, CT, pric="120", time="2026-03-08 09:00:00", hilist_name="X线计算机体层(CT)平扫")
    early = b.line(v, CT, pric="120", time="2026-02-28 09:00:00", hilist_name="X线计算机体层(CT)平扫")
    found = b.screen(tmp_path, RULES)
    assert len(found) == 1
    assert found[0]["violating"] == {late: Decimal("120"), early: Decimal("120")}
    assert found[0]["evidence"] == (
        "就诊期 2026-03-01 至 2026-03-05；"
        f"项目【X线计算机体层(CT)平扫】({CT}) 早于就诊开始 1 天，2026-02-28 收费 1 次，金额 120.00 元；"
        f"项目【X线计算机体层(CT)平扫】({CT}) 晚于就诊结束 3 天，2026-03-08 收费 1 次，金额 120.00 元"
    )


def test_tolerance_days(tmp_path):
    b = Batch()
    v = stay(b)
    b.line(v, CT, time="2026-03-06 09:00:00")
    b.line(v, CT, time="2026-02-28 09:00:00")
    late = b.line(v, CT, time="2026-03-07 09:00:00")
    found = b.screen(tmp_path, RULES + "  params: {tolerance_days: 1}\n")
    assert [f["violating"] for f in found] == [{late: Decimal("10")}]
    assert found[0]["evidence"].startswith("就诊期 2026-03-01 至 2026-03-05（允许前后 1 天）；")
    assert "晚于就诊结束 2 天" in found[0]["evidence"]


def test_open_stay_is_checked_against_its_start_only(tmp_path):
    b = Batch()
    v = b.visit(settled=False, med_type="21", begntime="2026-03-01 08:00:00", endtime="")
    b.line(v, CT, time="2026-03-20 09:00:00")
    early = b.line(v, CT, time="2026-02-27 09:00:00")
    found = b.screen(tmp_path, RULES, stage="in_process")
    assert [f["violating"] for f in found] == [{early: Decimal("10")}]
    assert found[0]["evidence"].startswith("就诊期 2026-03-01 至 （未结束）；")
    assert found[0]["deduction_amt"] == Decimal("0")  # in-process findings are warnings


def test_self_paid_and_refunded_lines_are_not_flagged(tmp_path):
    b = Batch()
    v = stay(b)
    b.line(v, CT, time="2026-03-09 09:00:00", chrgitm_lv="03")
    gone = b.line(v, CT, time="2026-03-09 10:00:00")
    b.refund(gone)
    assert b.screen(tmp_path, RULES) == []
