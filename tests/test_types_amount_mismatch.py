"""amount_mismatch: a line whose amount is not cnt × pric (抬高收费), judged on the line as billed."""

from __future__ import annotations

from decimal import Decimal

import pytest

from kit import Batch, write_rules
from medaudit.library import RuleLibraryError, load_library

CBC = "002503010010000"
RULES = """
- id: R-AMT-001
  version: 1
  name: 明细金额与数量单价不符
  type: amount_mismatch
"""


def test_amount_above_cnt_times_pric_is_flagged_with_the_excess(tmp_path):
    b = Batch()
    v = b.visit(mdtrt_id="VA1")
    sn = b.line(v, CBC, cnt="2", pric="45", det_item_fee_sumamt="120", hilist_name="血常规")
    ok = b.line(v, CBC, cnt="3", pric="45", time="2026-03-02 09:00:00")  # 135.00: right
    found = b.screen(tmp_path, RULES)
    assert len(found) == 1
    f = found[0]
    assert f["violating"] == {sn: Decimal("30")} and ok not in f["violating"]
    assert f["rule_type"] == "amount_mismatch" and f["severity"] == "suspect" and f["status"] == "pending_review"
    assert f["nature"] == "超支付标准"
    assert f["claimed_amt"] == Decimal("30.00") and f["flagged_amt"] == Decimal("120.00")
    assert f["deduction_amt"] == Decimal("0.00")  # a suspect claims nothing until a reviewer confirms it
    assert f["evidence"] == (
        f"项目【血常规】({CBC}) 2026-03-02 数量 2 × 单价 45.00 = 90.00 元，明细金额 120.00 元，多计 30.00 元"
    )


def test_a_difference_of_exactly_the_tolerance_is_fine_one_cent_more_is_not(tmp_path):
    b = Batch()
    b.line(b.visit(), CBC, cnt="2", pric="45", det_item_fee_sumamt="90.01")  # 0.01: fine
    b.line(b.visit(), CBC, cnt="2", pric="45", det_item_fee_sumamt="89.99")  # -0.01: fine
    over = b.line(b.visit(), CBC, cnt="2", pric="45", det_item_fee_sumamt="90.02")
    found = b.screen(tmp_path, RULES)
    assert [f["violating"] for f in found] == [{over: Decimal("0.02")}]
    assert found[0]["evidence"].endswith("明细金额 90.02 元，多计 0.02 元")


def test_billed_below_cnt_times_pric_is_flagged_only_when_asked_and_claims_nothing(tmp_path):
    b = Batch()
    sn = b.line(b.visit(), CBC, cnt="2", pric="45", det_item_fee_sumamt="80", hilist_name="血常规")
    (tmp_path / "default").mkdir(), (tmp_path / "asked").mkdir()
    assert b.screen(tmp_path / "default", RULES) == []  # not 抬高收费
    found = b.screen(
        tmp_path / "asked",
        RULES.replace("type: amount_mismatch", "type: amount_mismatch\n  params: {undercharge: true}"),
    )
    assert found[0]["violating"] == {sn: Decimal("0")} and found[0]["claimed_amt"] == Decimal("0.00")
    assert found[0]["evidence"].endswith("数量 2 × 单价 45.00 = 90.00 元，明细金额 80.00 元，少计 10.00 元")


def test_self_paid_lines_are_not_flagged_and_a_partly_self_paid_one_claims_the_fund_share(tmp_path):
    b = Batch()
    b.line(b.visit(), CBC, cnt="2", pric="45", det_item_fee_sumamt="120", hosp_appr_flag="2")  # switched to self-pay
    b.line(b.visit(), CBC, cnt="2", pric="45", det_item_fee_sumamt="120", chrgitm_lv="03")  # class C
    part = b.line(b.visit(), CBC, cnt="2", pric="45", det_item_fee_sumamt="120", fulamt_ownpay_amt="24")
    third = b.line(b.visit(), CBC, cnt="2", pric="45", det_item_fee_sumamt="100", fulamt_ownpay_amt="70")
    found = b.screen(tmp_path, RULES)
    # 30 x 96/120 = 24; 10 x 30/100 = 3; 10 x 40/120 would be a repeating decimal: exact (xdiv), 12 places
    assert [f["violating"] for f in found] == [{part: Decimal("24")}, {third: Decimal("3")}]


def test_repeating_fund_share_is_exact_and_rounded_only_at_the_end(tmp_path):
    b = Batch()
    sn = b.line(b.visit(), CBC, cnt="2", pric="55", det_item_fee_sumamt="120", fulamt_ownpay_amt="80")
    found = b.screen(tmp_path, RULES)
    assert found[0]["violating"] == {sn: Decimal("3.333333333333")}  # 10 x 40/120
    assert found[0]["claimed_amt"] == Decimal("3.33")


def test_refunds_the_billed_line_is_judged_and_the_claim_is_what_the_net_line_still_overcharges(tmp_path):
    b = Batch()
    full = b.line(b.visit(), CBC, cnt="2", pric="45", det_item_fee_sumamt="120")
    b.refund(full, cnt="-2", det_item_fee_sumamt="-120")  # fully refunded: never flagged
    ok = b.line(b.visit(), CBC, cnt="2", pric="45")
    b.refund(ok, cnt="-1", det_item_fee_sumamt="-60")  # the refund line itself is off: refund lines are not flagged
    v3 = b.visit(mdtrt_id="VA3")
    at_price = b.line(v3, CBC, cnt="2", pric="45", det_item_fee_sumamt="120", hilist_name="血常规")
    b.refund(at_price, cnt="-1", det_item_fee_sumamt="-45")  # 1 unit back at its price: 30 still overcharged
    pro_rata = b.line(b.visit(), CBC, cnt="2", pric="45", det_item_fee_sumamt="120")
    b.refund(pro_rata, cnt="-1", det_item_fee_sumamt="-60")  # half the overcharge went back: 15 left
    v5 = b.visit()
    unlinked = b.line(v5, CBC, cnt="2", pric="45", det_item_fee_sumamt="120")
    b.line(v5, CBC, cnt="-1", pric="45", time="2026-03-02 09:00:00")  # same visit, code and day
    all_back = b.line(b.visit(), CBC, cnt="2", pric="45", det_item_fee_sumamt="120")
    b.refund(all_back, cnt="-1", det_item_fee_sumamt="-75")  # net 1 x 45 = 45: the overcharge is gone
    found = b.screen(tmp_path, RULES)
    got = {sn: c for f in found for sn, c in f["violating"].items()}
    assert got == {at_price: Decimal("30"), pro_rata: Decimal("15"), unlinked: Decimal("30"), all_back: Decimal("0")}
    ev = next(f["evidence"] for f in found if f["mdtrt_id"] == "VA3")
    assert ev == (
        f"项目【血常规】({CBC}) 2026-03-02 数量 2 × 单价 45.00 = 90.00 元，明细金额 120.00 元，多计 30.00 元；"
        "退费后数量 1 × 单价 45.00 = 45.00 元，净金额 75.00 元，多计 30.00 元"
    )
    ev_all_back = next(f["evidence"] for f in found if all_back in f["violating"])
    assert ev_all_back.endswith("退费后数量 1 × 单价 45.00 = 45.00 元，净金额 45.00 元，相符")


def test_refunded_settlement_is_not_screened(tmp_path):
    b = Batch()
    b.line(b.visit(refunded=True), CBC, cnt="2", pric="45", det_item_fee_sumamt="120")
    assert b.screen(tmp_path, RULES) == []


def test_tolerance_per_rule_and_per_item_and_items_restrict_the_lines(tmp_path):
    rules = f"""
    - id: R-AMT-002
      version: 1
      name: 检验金额不符（容差 1 元）
      type: amount_mismatch
      items:
        rows:
          - {{code: "{CBC}"}}
          - {{code: "002503020070000", tolerance: 5}}
      params: {{tolerance: 1}}
    """
    b = Batch()
    b.line(b.visit(), CBC, cnt="2", pric="45", det_item_fee_sumamt="91")  # exactly 1: fine
    over = b.line(b.visit(), CBC, cnt="2", pric="45", det_item_fee_sumamt="91.01")
    b.line(b.visit(), "002503020070000", cnt="1", pric="40", det_item_fee_sumamt="45")  # 5: fine for this item
    over5 = b.line(b.visit(), "002503020070000", cnt="1", pric="40", det_item_fee_sumamt="45.5")
    b.line(b.visit(), "001102000010000", cnt="1", pric="10", det_item_fee_sumamt="50")  # not an item of the rule
    found = b.screen(tmp_path, rules)
    assert [f["violating"] for f in found] == [{over: Decimal("1.01")}, {over5: Decimal("5.5")}]


def test_fractional_prices_are_shown_as_billed(tmp_path):
    b = Batch()
    sn = b.line(b.visit(), "X001", cnt="3", pric="0.045", det_item_fee_sumamt="0.20", hilist_name="维生素C片")
    found = b.screen(tmp_path, RULES)
    assert found[0]["violating"] == {sn: Decimal("0.065")}
    assert (
        found[0]["evidence"]
        == "药品【维生素C片】(X001) 2026-03-02 数量 3 × 单价 0.045 = 0.135 元，明细金额 0.20 元，多计 0.065 元"
    )


def test_in_process_open_stay_is_a_warning(tmp_path):
    b = Batch()
    v = b.visit(settled=False, med_type="21", endtime="")
    sn = b.line(v, CBC, cnt="2", pric="45", det_item_fee_sumamt="120")
    found = b.screen(tmp_path, RULES, stage="in_process")
    assert [f["violating"] for f in found] == [{sn: Decimal("30")}]
    assert found[0]["status"] == "warning" and found[0]["stage"] == "in_process"


def test_pre_alert_is_refused_at_load_time(tmp_path):
    lib = write_rules(tmp_path / "r", RULES + "  stages: [pre_alert, post_hoc]\n")
    with pytest.raises(RuleLibraryError) as e:
        load_library(lib)
    assert (
        "rule R-AMT-001: type amount_mismatch cannot run at stage pre_alert (it runs at: in_process, post_hoc)"
        in str(e.value)
    )
    rules = load_library(write_rules(tmp_path / "ok", RULES)).rules
    assert rules[0].stages == ["in_process", "post_hoc"] and rules[0].severity == "suspect"


def test_sample_injector_flags_its_key_and_not_its_near_misses(tmp_path):
    """The generator's injector alone: the sample rule flags exactly the key's lines, and the
    near misses are in the batch (0.01 over, an overcharged self-paid line, an overcharged line
    fully refunded) without being flagged."""
    from pathlib import Path

    from medaudit import db
    from medaudit.engine import screen
    from medaudit.loader import load_batch
    from medaudit.sample import generate

    generate(tmp_path / "batch", visits=300, seed=4, types=["amount_mismatch"])
    con = db.connect(tmp_path / "t.duckdb")
    load_batch(tmp_path / "batch", con)
    screen(con, load_library(Path(__file__).resolve().parents[1] / "rules" / "amount_mismatch.yaml"))
    key = {
        tuple(r)
        for r in con.execute(
            "SELECT mdtrt_id, bkkp_sn FROM read_csv(?, all_varchar = true)",
            [str(tmp_path / "batch" / "answer_key.csv")],
        ).fetchall()
    }
    flagged = {
        tuple(r)
        for r in con.execute(
            """SELECT f.mdtrt_id, l.bkkp_sn FROM findings f JOIN finding_lines l USING (finding_id)
           WHERE l.role = 'violating'"""
        ).fetchall()
    }
    assert len(key) >= 4 and flagged == key
    off = con.execute(
        """SELECT bkkp_sn, det_item_fee_sumamt - cnt * pric AS d, hosp_appr_flag, init_feedetl_sn,
                  bkkp_sn IN (SELECT init_feedetl_sn FROM fee_list_d WHERE init_feedetl_sn IS NOT NULL) AS refunded
           FROM fee_list_d WHERE det_item_fee_sumamt <> cnt * pric"""
    ).fetchall()
    keyed = {sn for _, sn in key}
    near = [r for r in off if r[0] not in keyed and r[3] is None]
    assert {r[1] for r in near if r[2] != "2" and not r[4] and r[1] > 0} == {Decimal("0.01")}  # exactly the tolerance
    assert any(r[2] == "2" and r[1] > Decimal("0.01") for r in near)  # self-paid
    assert any(r[4] and r[1] > Decimal("0.01") for r in near)  # refunded
    assert any(r[1] < Decimal("-0.01") for r in near)  # billed below: a near miss by default
