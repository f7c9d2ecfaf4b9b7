"""companion_required: an item's lines in a visit with none of its companions (suspect by default)."""

from __future__ import annotations

from decimal import Decimal

import pytest

from kit import Batch, write_rules
from medaudit.library import RuleLibraryError, load_library

MON = "001402000010000"  # 麻醉中监测
LOCAL = "001401000010000"
GENERAL = "001401000020000"
RULES = """
- id: R-CMP-001
  version: 1
  name: 麻醉中监测须有麻醉项目
  type: companion_required
  items: {table: companions.csv}
"""
TABLE = {"companions.csv": f"code,name,companions\n{MON},麻醉中监测,{LOCAL}|{GENERAL}\n"}


def test_item_without_companion_goes_to_review(tmp_path):
    b = Batch()
    b.add("hilist", hilist_code=LOCAL, hilist_name="局部浸润麻醉")
    v = b.visit(mdtrt_id="VM1")
    sn = b.line(v, MON, cnt="2", pric="30", hilist_name="麻醉中监测")
    other = b.visit(psn_no="PM")
    b.line(other, LOCAL)  # a companion in another visit does not count
    found = b.screen(tmp_path, RULES, tables=TABLE)
    assert len(found) == 1
    f = found[0]
    assert (f["severity"], f["status"]) == ("suspect", "pending_review")
    assert f["violating"] == {sn: Decimal("60")}
    assert f["claimed_amt"] == Decimal("60.00") and f["deduction_amt"] == Decimal("0.00")
    assert f["evidence"] == (
        f"项目【麻醉中监测】({MON}) 须与 【局部浸润麻醉】({LOCAL})、({GENERAL}) 之一同次就诊收费，本次就诊均未收费；"
        "2026-03-02 收费 2 次，金额 60.00 元"
    )


def test_any_companion_in_the_visit_even_self_paid_is_enough(tmp_path):
    b = Batch()
    v = b.visit()
    b.line(v, MON)
    b.line(v, GENERAL, time="2026-03-02 09:30:00", hosp_appr_flag="2")
    assert b.screen(tmp_path, RULES, tables=TABLE) == []


def test_refunded_companion_does_not_count_and_self_paid_item_is_not_flagged(tmp_path):
    b = Batch()
    v = b.visit()
    sn = b.line(v, MON)
    gone = b.line(v, LOCAL)
    b.refund(gone)
    w = b.visit()
    b.line(w, MON, chrgitm_lv="03")
    found = b.screen(tmp_path, RULES, tables=TABLE)
    assert [f["violating"] for f in found] == [{sn: Decimal("10")}]


def test_only_after_the_visit_is_settled(tmp_path):
    lib = write_rules(tmp_path / "r", RULES + "  stages: [in_process]\n", TABLE)
    with pytest.raises(RuleLibraryError, match="type companion_required cannot run at stage in_process"):
        load_library(lib)
