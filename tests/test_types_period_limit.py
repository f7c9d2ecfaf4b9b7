"""period_limit: per person and code, across visits, a unit is excess when max_count earlier
PAID units lie fewer than period_days calendar days before it."""

from __future__ import annotations

from datetime import date, timedelta
from decimal import Decimal

import pytest

from kit import Batch, write_rules
from medaudit.library import RuleLibraryError, load_library

HBA1C = "002503020070000"
RULES = f"""
- id: R-PER-001
  version: 1
  name: 糖化血红蛋白测定15天内限1次
  type: period_limit
  items: {{codes: ["{HBA1C}"]}}
  params: {{max_count: 1, period_days: 15}}
"""


def hba1c_on(b: Batch, psn: str, days: list[str], inst: str = "H001", **line_kw) -> list[str]:
    """One outpatient visit per day, each with one HbA1c line; returns the line ids."""
    out = []
    for d in days:
        v = b.visit(
            mdtrt_id=f"V{psn}{d}{inst}",
            psn_no=psn,
            fixmedins_code=inst,
            begntime=f"{d} 08:00:00",
            endtime=f"{d} 10:00:00",
        )
        out.append(b.line(v, HBA1C, pric="45", hilist_name="糖化血红蛋白测定", bkkp_sn=f"F{psn}{d}{inst}", **line_kw))
    return out


def test_days_1_10_20_flag_day_10_only_because_unpaid_units_do_not_count(tmp_path):
    b = Batch()
    d1, d10, d20 = hba1c_on(b, "PA", ["2026-03-01", "2026-03-10", "2026-03-20"])
    found = b.screen(tmp_path, RULES)
    assert len(found) == 1
    f = found[0]
    assert f["mdtrt_id"] == "VPA2026-03-10H001" and f["psn_no"] == "PA"
    assert f["violating"] == {d10: Decimal("45")}
    assert f["related"] == [d1]
    assert f["claimed_amt"] == Decimal("45.00") and f["deduction_amt"] == Decimal("45.00")
    assert f["evidence"] == (
        f"项目【糖化血红蛋白测定】({HBA1C}) 每 15 天限 1 次；2026-03-10 收费 1 次，金额 45.00 元，超出 1；"
        "此前 15 天内已支付：2026-03-01 H001 就诊 VPA2026-03-01H001"
    )


def test_across_visits_and_institutions(tmp_path):
    b = Batch()
    (first,) = hba1c_on(b, "PB", ["2026-03-01"], inst="H002")
    (second,) = hba1c_on(b, "PB", ["2026-03-05"], inst="H001")
    found = b.screen(tmp_path, RULES)
    assert [(f["mdtrt_id"], f["fixmedins_code"]) for f in found] == [("VPB2026-03-05H001", "H001")]
    assert found[0]["violating"] == {second: Decimal("45")}
    assert found[0]["related"] == [first]
    assert "已支付：2026-03-01 H002 就诊 VPB2026-03-01H002" in found[0]["evidence"]


@pytest.mark.parametrize(
    "later, flagged",
    [
        ("2026-03-15 00:01:00", True),  # 14 calendar days after 03-01 23:59: inside the period
        ("2026-03-16 00:01:00", False),  # 15 days: the period is over
    ],
)
def test_period_boundary_counts_calendar_days(tmp_path, later, flagged):
    b = Batch()
    v1 = b.visit(psn_no="PC", begntime="2026-03-01 23:00:00", endtime="2026-03-01 23:59:59")
    v2 = b.visit(psn_no="PC", begntime=later, endtime=later)
    b.line(v1, HBA1C, pric="45", time="2026-03-01 23:59:00")
    sn = b.line(v2, HBA1C, pric="45")
    found = b.screen(tmp_path, RULES)
    assert [f["violating"] for f in found] == ([{sn: Decimal("45")}] if flagged else [])


def test_greedy_walk_with_two_per_period(tmp_path):
    # 2 per 7 days on days 1,2,3,4,8,9: 3 and 4 are excess; 8 is 7 days after 1 (paid) -> paid;
    # 9 is 7 days after 2 -> paid. A naive "count of any units in the last 7 days" would flag 8 and 9.
    rules = RULES.replace("max_count: 1, period_days: 15", "max_count: 2, period_days: 7")
    b = Batch()
    sns = hba1c_on(b, "PD", [f"2026-03-0{d}" for d in (1, 2, 3, 4, 8, 9)])
    found = b.screen(tmp_path, rules)
    assert sorted(sn for f in found for sn in f["violating"]) == sorted([sns[2], sns[3]])
    day3 = next(f for f in found if sns[2] in f["violating"])
    assert sorted(day3["related"]) == sorted([sns[0], sns[1]])
    assert "已支付：2026-03-01 H001 就诊 VPD2026-03-01H001、2026-03-02 H001 就诊 VPD2026-03-02H001" in day3["evidence"]


def test_units_of_one_line_count_one_by_one(tmp_path):
    b = Batch()
    v = b.visit(psn_no="PE")
    sn = b.line(v, HBA1C, cnt="3", pric="45")
    found = b.screen(tmp_path, RULES)
    assert found[0]["violating"] == {sn: Decimal("90")}
    assert found[0]["related"] == []
    assert found[0]["evidence"].endswith("收费 3 次，金额 135.00 元，超出 2；此前 15 天内已支付：本条前 1 次")


def test_same_day_second_line_is_excess_latest_first(tmp_path):
    b = Batch()
    v = b.visit(psn_no="PF")
    a = b.line(v, HBA1C, pric="45", time="2026-03-02 08:00:00", bkkp_sn="FA")
    c = b.line(v, HBA1C, pric="45", time="2026-03-02 09:00:00", bkkp_sn="FB")
    found = b.screen(tmp_path, RULES)
    assert found[0]["violating"] == {c: Decimal("45")} and found[0]["related"] == [a]


@pytest.mark.parametrize("kw", [{"hosp_appr_flag": "2"}, {"chrgitm_lv": "03"}])
def test_self_paid_units_neither_count_nor_get_flagged(tmp_path, kw):
    b = Batch()
    v1 = b.visit(psn_no="PG", begntime="2026-03-01 08:00:00", endtime="2026-03-01 09:00:00")
    v2 = b.visit(psn_no="PG", begntime="2026-03-05 08:00:00", endtime="2026-03-05 09:00:00")
    b.line(v1, HBA1C, pric="45", **kw)
    b.line(v2, HBA1C, pric="45")
    b.line(v2, HBA1C, pric="45", time="2026-03-05 09:00:00", **kw)  # self-paid repeat: not flagged
    assert b.screen(tmp_path, RULES) == []


def test_refunds(tmp_path):
    b = Batch()
    v1 = b.visit(psn_no="PH", begntime="2026-03-01 08:00:00", endtime="2026-03-01 09:00:00")
    v2 = b.visit(psn_no="PH", begntime="2026-03-05 08:00:00", endtime="2026-03-05 09:00:00")
    gone = b.line(v1, HBA1C, pric="45")
    b.refund(gone)  # refunded in full: takes no part
    later = b.line(v2, HBA1C, cnt="2", pric="45")
    b.refund(later, cnt="-1")  # net 1 unit left: the first paid unit, nothing excess
    assert b.screen(tmp_path, RULES) == []


def test_claim_uses_fund_share(tmp_path):
    b = Batch()
    hba1c_on(b, "PI", ["2026-03-01"])
    v = b.visit(psn_no="PI", begntime="2026-03-03 08:00:00", endtime="2026-03-03 09:00:00")
    sn = b.line(v, HBA1C, cnt="1", pric="45", fulamt_ownpay_amt="15.5")  # deductible 29.50
    found = b.screen(tmp_path, RULES)
    assert found[0]["violating"] == {sn: Decimal("29.5")}
    assert found[0]["deduction_amt"] == Decimal("29.50")


def test_other_person_or_code_is_independent(tmp_path):
    b = Batch()
    hba1c_on(b, "PJ", ["2026-03-01"])
    hba1c_on(b, "PK", ["2026-03-02"])
    v = b.visit(psn_no="PJ", begntime="2026-03-03 08:00:00", endtime="2026-03-03 09:00:00")
    b.line(v, "002503020080000", pric="45")
    assert b.screen(tmp_path, RULES) == []


def test_units_before_validity_take_no_part(tmp_path):
    rules = RULES + "  valid_from: 2026-03-05\n"
    b = Batch()
    hba1c_on(b, "PL", ["2026-03-01", "2026-03-10", "2026-03-12"])
    found = b.screen(tmp_path, rules)
    assert [list(f["violating"]) for f in found] == [["FPL2026-03-12H001"]]


def test_long_chains_in_one_query(tmp_path):
    # 40 daily tests, 1 per 15 days: days 1, 16, 31 paid, the other 37 excess
    b = Batch()
    days = [str(date(2026, 3, 1) + timedelta(days=i)) for i in range(40)]
    sns = hba1c_on(b, "PM", days)
    found = b.screen(tmp_path, RULES)
    flagged = {sn for f in found for sn in f["violating"]}
    paid = {sns[0], sns[15], sns[30]}
    assert flagged == set(sns) - paid


def test_cannot_run_before_the_claim_is_settled(tmp_path):
    lib = write_rules(tmp_path / "r", RULES + "  stages: [in_process]\n")
    with pytest.raises(RuleLibraryError, match="type period_limit cannot run at stage in_process"):
        load_library(lib)


def test_share_keeps_twelve_decimals_until_the_end(tmp_path):
    b = Batch()
    v = b.visit(psn_no="PN")
    sn = b.line(v, HBA1C, cnt="3", pric="45", fulamt_ownpay_amt="35")  # deductible 100 of 135; 2 units excess
    found = b.screen(tmp_path, RULES)
    assert found[0]["violating"] == {sn: Decimal("66.666666666666")}
    assert found[0]["deduction_amt"] == Decimal("66.67")


def reference_excess(units: list[tuple], max_count: int, period_days: int) -> dict[str, int]:
    """The rule read literally, one unit at a time: units are (date, time, sn) in time order."""
    paid: list[date] = []
    out: dict[str, int] = {}
    for d, _t, sn in units:
        if sum(1 for p in paid if (d - p).days < period_days) >= max_count:
            out[sn] = out.get(sn, 0) + 1
        else:
            paid.append(d)
    return out


@pytest.mark.parametrize("seed", range(6))
def test_matches_a_literal_reading_on_random_histories(tmp_path, seed):
    import random

    rng = random.Random(seed)
    max_count, period_days = rng.randint(1, 3), rng.randint(1, 20)
    rules = RULES.replace("max_count: 1, period_days: 15", f"max_count: {max_count}, period_days: {period_days}")
    b = Batch()
    expected: dict[str, int] = {}
    for psn in ("R1", "R2", "R3"):
        units = []
        for i in range(rng.randint(5, 25)):
            d = date(2026, 1, 1) + timedelta(days=rng.randint(0, 60))
            t = f"{d} {rng.randint(0, 23):02d}:00:00"
            cnt = rng.choice([1, 1, 1, 2, 3])
            v = b.visit(psn_no=psn, fixmedins_code=rng.choice(["H001", "H002"]), begntime=t, endtime=t)
            self_paid = rng.random() < 0.1
            sn = b.line(
                v,
                HBA1C,
                cnt=str(cnt),
                pric="45",
                bkkp_sn=f"S{psn}{i:02d}",
                **({"hosp_appr_flag": "2"} if self_paid else {}),
            )
            if not self_paid:
                units += [(d, t, sn)] * cnt
        units.sort(key=lambda u: (u[1], u[2]))
        expected.update(reference_excess(units, max_count, period_days))
    found = b.screen(tmp_path, rules)
    got = {sn: claim / 45 for f in found for sn, claim in f["violating"].items()}
    assert got == expected
