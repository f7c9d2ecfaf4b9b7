"""not_in_catalog: codes the hilist catalogue does not hold on the fee date (only with a catalogue)."""

from __future__ import annotations

from decimal import Decimal

import pytest

from kit import Batch

RULES = """
- id: R-CAT-001
  version: 1
  name: 医保目录外
  type: not_in_catalog
"""
DRUGS_ONLY = RULES + "  items: {prefixes: [X, Z]}\n"
IN = "XA10BAE001A001010100001"
OUT = "XA10BAE001A001010199999"
OLD = "XJ01CAA040E001010100001"
SERVICE = "001102000010000"


def catalogue(b: Batch) -> None:
    b.add("hilist", hilist_code=IN, hilist_name="二甲双胍片", begndate="2026-01-01")
    b.add("hilist", hilist_code=OLD, begndate="2020-01-01", enddate="2026-03-01")


def test_without_a_catalogue_nothing_is_flagged(tmp_path):
    b = Batch()
    b.line(b.visit(), OUT)
    assert b.screen(tmp_path, RULES) == []


def test_code_absent_from_the_catalogue(tmp_path):
    b = Batch()
    catalogue(b)
    v = b.visit(mdtrt_id="VN1")
    b.line(v, IN)
    sn = b.line(v, OUT, cnt="2", pric="17.5", hilist_name="某片")
    found = b.screen(tmp_path, DRUGS_ONLY)
    assert len(found) == 1 and found[0]["violating"] == {sn: Decimal("35")}
    assert found[0]["evidence"] == f"药品【某片】({OUT}) 不在医保目录内；2026-03-02 收费 2 次，金额 35.00 元"


@pytest.mark.parametrize("day, flagged", [("2026-03-01", False), ("2026-03-02", True)])
def test_validity_end_is_inclusive(tmp_path, day, flagged):
    b = Batch()
    catalogue(b)
    v = b.visit(begntime=f"{day} 08:00:00", endtime=f"{day} 09:00:00")
    sn = b.line(v, OLD, hilist_name="阿莫西林胶囊")
    found = b.screen(tmp_path, DRUGS_ONLY)
    assert [f["violating"] for f in found] == ([{sn: Decimal("10")}] if flagged else [])
    if flagged:
        assert "医保目录有效期 2020-01-01 至 2026-03-01，收费日期不在有效期内；2026-03-02 收费" in found[0]["evidence"]


def test_before_validity_start(tmp_path):
    b = Batch()
    catalogue(b)
    v = b.visit(begntime="2025-12-31 08:00:00", endtime="2025-12-31 09:00:00")
    sn = b.line(v, IN)
    found = b.screen(tmp_path, DRUGS_ONLY)
    assert [f["violating"] for f in found] == [{sn: Decimal("10")}]
    assert "医保目录有效期 2026-01-01 至 ，收费日期不在有效期内" in found[0]["evidence"]


def test_items_limit_what_is_judged_and_self_paid_is_not_flagged(tmp_path):
    b = Batch()
    catalogue(b)
    v = b.visit()
    b.line(v, SERVICE)  # not a drug: outside this rule's items
    b.line(v, OUT, hosp_appr_flag="2")  # the patient paid it
    gone = b.line(v, OUT, time="2026-03-02 09:00:00")
    b.refund(gone)
    assert b.screen(tmp_path, DRUGS_ONLY) == []
    # without items every line is judged
    (tmp_path / "all").mkdir()
    found = b.screen(tmp_path / "all", RULES)
    assert [list(f["violating"].values()) for f in found] == [[Decimal("10")]]
