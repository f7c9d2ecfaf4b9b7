"""Scope restrictions (超支付范围), one line at a time, `whole_line`: cases that must flag and
near misses that must not, with the claims to the cent and the evidence a clerk checks by hand.
"""

from __future__ import annotations

from decimal import Decimal as D

import pytest

from kit import Batch

UTERO = "002101030300000"  # 子宫造影, for women


def rule(type_: str, items: str, params: str = "", extra: str = "", rid: str = "R-1") -> str:
    out = f"""
- id: {rid}
  version: 1
  name: 测试规则
  type: {type_}
  items: {items}
"""
    if params:
        out += f"  params: {params}\n"
    return out + extra


def flagged(found) -> dict[str, D]:
    """{bkkp_sn: claim} over all findings."""
    out = {}
    for f in found:
        out.update(f["violating"])
    return out


GENDER = rule("restrict_gender", f'{{codes: ["{UTERO}"]}}', "{gender: 2}")


# ---------------------------------------------------------------------------- restrict_gender


def test_gender_flags_a_man_and_writes_checkable_evidence(tmp_path):
    b = Batch()
    v = b.visit(gend="1")
    sn = b.line(v, UTERO, hilist_name="子宫造影", pric="180")
    (f,) = b.screen(tmp_path, GENDER)
    assert f["violating"] == {sn: D("180")} and f["related"] == []
    assert (f["flagged_amt"], f["claimed_amt"], f["deduction_amt"]) == (D("180.00"), D("180.00"), D("180.00"))
    assert (
        f["evidence"]
        == "患者性别为男；项目【子宫造影】(002101030300000) 限女性使用，2026-03-02 收费 1 次，金额 180.00 元"
    )
    assert (f["rule_id"], f["mdtrt_id"], f["nature"], f["status"]) == ("R-1", v, "超支付范围", "pending_appeal")


@pytest.mark.parametrize("gend", ["2", "0", "9"])
def test_gender_never_flags_the_right_or_an_unknown_gender(tmp_path, gend):
    b = Batch()
    b.line(b.visit(gend=gend), UTERO)
    assert b.screen(tmp_path, GENDER) == []


def test_gender_refund_netting_to_zero_is_never_flagged(tmp_path):
    b = Batch()
    v = b.visit(gend="1")
    sn = b.line(v, UTERO, cnt="2", pric="90")
    b.refund(sn, cnt="-2", det_item_fee_sumamt="-180")
    partly = b.line(b.visit(gend="1"), UTERO, cnt="2", pric="90")
    b.refund(partly, cnt="-1", det_item_fee_sumamt="-90")
    assert flagged(b.screen(tmp_path, GENDER)) == {partly: D("90")}


@pytest.mark.parametrize("kw", [{"chrgitm_lv": "03"}, {"hosp_appr_flag": "2"}, {"fulamt_ownpay_amt": "180"}])
def test_gender_self_paid_line_is_never_flagged(tmp_path, kw):
    b = Batch()
    b.line(b.visit(gend="1"), UTERO, pric="180", **kw)
    assert b.screen(tmp_path, GENDER) == []


def test_gender_partly_self_paid_line_claims_only_the_funds_part(tmp_path):
    b = Batch()
    sn = b.line(b.visit(gend="1"), UTERO, pric="180", fulamt_ownpay_amt="45.55")
    (f,) = b.screen(tmp_path, GENDER)
    assert f["violating"] == {sn: D("134.45")}
    assert (f["flagged_amt"], f["deduction_amt"]) == (D("180.00"), D("134.45"))


def test_gender_per_item_table_and_prefix_items(tmp_path):
    rules = rule("restrict_gender", "{table: items.csv}") + rule(
        "restrict_gender", '{prefixes: ["XG03"]}', "{gender: 1}", rid="R-2"
    )
    table = f"code,name,gender\n{UTERO},子宫造影,2\n002603000010000,前列腺按摩,1\n"
    b = Batch()
    man, woman = b.visit(gend="1"), b.visit(gend="2")
    a = b.line(man, UTERO)
    b.line(man, "002603000010000")
    b.line(woman, UTERO)
    c = b.line(woman, "002603000010000", hilist_name=None)
    d = b.line(woman, "XG03BBA123A001010101234", hilist_name="十一酸睾酮软胶囊")
    b.line(woman, "XG04BBA123A001010101234")  # another prefix
    found = b.screen(tmp_path, rules, tables={"items.csv": table})
    assert {(f["rule_id"], sn) for f in found for sn in f["violating"]} == {("R-1", a), ("R-1", c), ("R-2", d)}
    by_rule = {f["rule_id"]: f for f in found if woman == f["mdtrt_id"]}
    assert "项目【前列腺按摩】(002603000010000) 限男性使用" in by_rule["R-1"]["evidence"]  # name from the table


@pytest.mark.parametrize(
    "validity, flags",
    [
        ("valid_from: 2026-03-02", True),  # in force from the fee date itself
        ("valid_from: 2026-03-03", False),
        ("valid_to: 2026-03-02", True),
        ("valid_to: 2026-03-01", False),
        ("valid_from: 2025-01-01\n  valid_to: 2026-12-31", True),
    ],
)
def test_validity_period_on_the_fee_date(tmp_path, validity, flags):
    b = Batch()
    b.line(b.visit(gend="1"), UTERO, time="2026-03-02 23:59:59")
    assert bool(b.screen(tmp_path, GENDER + f"  {validity}\n")) is flags


@pytest.mark.parametrize(
    "scope, flags",
    [
        ('{med_types: ["21"]}', False),
        ('{med_types: ["11", "21"]}', True),
        ("{hosp_levels: [3]}", False),
        ("{hosp_levels: [2, 3]}", True),
        ("{institutions: [H002]}", False),
        ("{institutions: [H001]}", True),
    ],
)
def test_scope_filters(tmp_path, scope, flags):
    b = Batch()
    b.line(b.visit(gend="1", med_type="11", hosp_lv="05", fixmedins_code="H001"), UTERO)
    assert bool(b.screen(tmp_path, GENDER + f"  scope: {scope}\n")) is flags


def test_one_finding_per_visit_with_all_its_lines(tmp_path):
    b = Batch()
    v = b.visit(gend="1", begntime="2026-03-01 08:00:00", endtime="2026-03-05 10:00:00", med_type="21")
    x = b.line(v, UTERO, time="2026-03-04 09:00:00", pric="180")
    y = b.line(v, UTERO, time="2026-03-01 09:00:00", pric="170")
    (f,) = b.screen(tmp_path, GENDER)
    assert f["violating"] == {x: D("180"), y: D("170")}
    assert f["deduction_amt"] == D("350.00")
    assert f["evidence"] == (
        "患者性别为男；项目【项目0000】(002101030300000) 限女性使用，2026-03-01 收费 1 次，金额 170.00 元；"
        "项目【项目0000】(002101030300000) 限女性使用，2026-03-04 收费 1 次，金额 180.00 元"
    )


# ---------------------------------------------------------------------------- restrict_age

CARIES = "001302000010000"  # 儿童龋齿预防保健


def age_rule(params: str) -> str:
    return rule("restrict_age", f'{{codes: ["{CARIES}"]}}', params)


@pytest.mark.parametrize(
    "brdy, flags",
    [
        ("2008-03-03", False),  # 17 on the fee date (18 tomorrow)
        ("2008-03-02", True),  # 18th birthday is the fee date: no longer a child
        ("1990-01-01", True),
    ],
)
def test_age_child_boundary(tmp_path, brdy, flags):
    b = Batch()
    b.line(b.visit(brdy=brdy), CARIES, time="2026-03-02 10:00:00")
    assert bool(b.screen(tmp_path, age_rule("{group: 儿童}"))) is flags


def test_age_child_evidence(tmp_path):
    b = Batch()
    sn = b.line(b.visit(brdy="2008-03-02"), CARIES, hilist_name="儿童龋齿预防保健", pric="25.5")
    (f,) = b.screen(tmp_path, age_rule("{group: 儿童}"))
    assert f["violating"] == {sn: D("25.5")}
    assert f["evidence"] == (
        "患者出生日期 2008-03-02；项目【儿童龋齿预防保健】(001302000010000) 限儿童（18岁以下）使用，"
        "收费时患者 18 岁；2026-03-02 收费 1 次，金额 25.50 元"
    )


@pytest.mark.parametrize("brdy, flags", [("2026-02-03", False), ("2026-02-02", True)])  # day 27 / day 28
def test_age_neonate_day_27_vs_28(tmp_path, brdy, flags):
    b = Batch()
    b.line(b.visit(brdy=brdy), CARIES, time="2026-03-02 10:00:00")
    found = b.screen(tmp_path, age_rule("{group: 新生儿}"))
    assert bool(found) is flags
    if flags:
        assert "限新生儿（出生28天内）使用，收费时患者 28 天；" in found[0]["evidence"]


@pytest.mark.parametrize("brdy, flags", [("2023-03-03", False), ("2023-03-02", True)])
def test_age_infant_boundary(tmp_path, brdy, flags):
    b = Batch()
    b.line(b.visit(brdy=brdy), CARIES, time="2026-03-02 10:00:00")
    assert bool(b.screen(tmp_path, age_rule("{group: 婴幼儿}"))) is flags


@pytest.mark.parametrize(
    "brdy, flags",
    [
        ("2010-03-03", True),  # 15
        ("2010-03-02", False),  # 16 today: min_age is inclusive
        ("1966-03-02", False),  # 60 today: max_age is inclusive
        ("1965-03-02", True),  # 61
    ],
)
def test_age_min_max_inclusive(tmp_path, brdy, flags):
    b = Batch()
    b.line(b.visit(brdy=brdy), CARIES, time="2026-03-02 10:00:00")
    assert bool(b.screen(tmp_path, age_rule("{min_age: 16, max_age: 60}"))) is flags


def test_age_group_per_item_and_custom_threshold(tmp_path):
    rules = rule("restrict_age", "{table: t.csv}", "{child_years: 14}")
    b = Batch()
    v = b.visit(brdy="2011-03-02")  # 15
    a = b.line(v, CARIES)
    b.line(v, "001302000020000")  # max_age 15 inclusive
    found = b.screen(tmp_path, rules, tables={"t.csv": f"code,group,max_age\n{CARIES},儿童,\n001302000020000,,15\n"})
    assert flagged(found) == {a: D("10")}
    assert "限儿童（14岁以下）使用，收费时患者 15 岁" in found[0]["evidence"]


# ---------------------------------------------------------------------------- restrict_insutype

INSU = rule("restrict_insutype", '{codes: ["XA01"]}', '{allowed: ["410"]}')


def test_insutype(tmp_path):
    b = Batch()
    a = b.line(b.visit(insutype="310"), "XA01", hilist_name="工伤康复药", pric="12.34")
    b.line(b.visit(insutype="410"), "XA01")
    (f,) = b.screen(tmp_path, INSU)
    assert f["violating"] == {a: D("12.34")}
    assert f["evidence"] == (
        "患者险种为 310（职工基本医疗保险）；药品【工伤康复药】(XA01) 限 410（工伤保险） 支付，2026-03-02 收费 1 次，金额 12.34 元"
    )


def test_insutype_per_item_list_from_table(tmp_path):
    rules = rule("restrict_insutype", "{table: t.csv}")
    b = Batch()
    v = b.visit(insutype="510")
    b.line(v, "001")  # 410|510 allowed
    c = b.line(v, "002")  # 410 only
    found = b.screen(tmp_path, rules, tables={"t.csv": "code,allowed\n001,410|510\n002,410\n"})
    assert flagged(found) == {c: D("10")}


# ---------------------------------------------------------------------------- restrict_visit_type

VISIT = rule("restrict_visit_type", '{codes: ["XB05"]}', "{allowed: inpatient}")


@pytest.mark.parametrize("med_type, flags", [("11", True), ("13", True), ("21", False), ("24", False), ("28", False)])
def test_visit_type_inpatient_only(tmp_path, med_type, flags):
    b = Batch()
    b.line(b.visit(med_type=med_type), "XB05")
    assert bool(b.screen(tmp_path, VISIT)) is flags


def test_visit_type_extra_med_types_and_evidence(tmp_path):
    b = Batch()
    b.line(b.visit(med_type="14"), "XB05")
    a = b.line(b.visit(med_type="11"), "XB05", hilist_name="脂肪乳注射液", pric="88")
    (f,) = b.screen(tmp_path, VISIT.replace("{allowed: inpatient}", '{allowed: inpatient, med_types: ["14"]}'))
    assert f["violating"] == {a: D("88")}
    assert f["evidence"] == (
        "就诊类型为 11（普通门诊）；药品【脂肪乳注射液】(XB05) 限住院使用（另可用于 14），2026-03-02 收费 1 次，金额 88.00 元"
    )


def test_visit_type_outpatient_only(tmp_path):
    b = Batch()
    a = b.line(b.visit(med_type="21"), "001")
    b.line(b.visit(med_type="13"), "001")
    assert flagged(b.screen(tmp_path, rule("restrict_visit_type", '{codes: ["001"]}', "{allowed: outpatient}"))) == {
        a: D("10")
    }


# ---------------------------------------------------------------------------- restrict_hosp_level


@pytest.mark.parametrize(
    "hosp_lv, min_level, flags",
    [
        ("05", 3, True),
        ("01", 3, False),
        ("12", 3, False),
        ("13", 2, False),
        ("14", 2, True),
        ("11", 1, True),
        ("10", 1, False),
    ],
)
def test_hosp_level(tmp_path, hosp_lv, min_level, flags):
    b = Batch()
    b.line(b.visit(hosp_lv=hosp_lv), "001")
    assert (
        bool(b.screen(tmp_path, rule("restrict_hosp_level", '{codes: ["001"]}', f"{{min_level: {min_level}}}")))
        is flags
    )


def test_hosp_level_evidence(tmp_path):
    b = Batch()
    b.line(b.visit(hosp_lv="08"), "001", hilist_name="经皮冠状动脉支架置入术", pric="3000")
    (f,) = b.screen(tmp_path, rule("restrict_hosp_level", '{codes: ["001"]}', "{min_level: 3}"))
    assert f["evidence"] == (
        "机构等级为一级（hosp_lv 08）；项目【经皮冠状动脉支架置入术】(001) 限三级及以上医疗机构使用，"
        "2026-03-02 收费 1 次，金额 3000.00 元"
    )


# ---------------------------------------------------------------------------- restrict_indication

AIDI = "ZC01AAA0042010105549"
INDIC = rule("restrict_indication", f'{{codes: ["{AIDI}"]}}', '{diag_prefixes: ["C", "D03"]}')


def test_indication_flags_without_a_matching_diagnosis(tmp_path):
    b = Batch()
    v = b.visit()
    b.diag(v, "J18.900")
    b.diag(v, "I10.x00", main=False)
    a = b.line(v, AIDI, hilist_name="艾迪注射液", pric="45.6")
    (f,) = b.screen(tmp_path, INDIC)
    assert f["violating"] == {a: D("45.6")}
    assert f["evidence"] == (
        "本次就诊诊断：I10.x00、J18.900；药品【艾迪注射液】(ZC01AAA0042010105549) 限诊断 C、D03 开头的患者使用，"
        "2026-03-02 收费 1 次，金额 45.60 元"
    )


def test_indication_any_diagnosis_counts_main_other_or_discharge_main(tmp_path):
    b = Batch()
    other = b.visit()
    b.diag(other, "J18.900")
    b.diag(other, "C34.900", main=False)  # an other diagnosis is enough
    b.line(other, AIDI)
    dscg = b.visit(dscg_maindiag_code="D03.100")  # only in mdtrt_d
    b.line(dscg, AIDI)
    none = b.visit()
    n = b.line(none, AIDI)
    near = b.visit()
    b.diag(near, "D04.100")  # D04 is not D03
    m = b.line(near, AIDI)
    found = b.screen(tmp_path, INDIC)
    assert flagged(found) == {n: D("10"), m: D("10")}
    assert next(f for f in found if f["mdtrt_id"] == none)["evidence"].startswith("本次就诊诊断：无；")


# ---------------------------------------------------------------------------- after_death

DEATH = """
- id: R-DTH-001
  version: 1
  name: 死亡后发生费用
  type: after_death
"""


def test_after_death_from_psn_death(tmp_path):
    b = Batch()
    v = b.visit(psn_no="P-D", begntime="2026-02-27 08:00:00", endtime="2026-03-03 10:00:00", med_type="21")
    b.line(v, "001", time="2026-03-01 23:00:00")  # the day of death: not flagged
    a = b.line(v, "002503010010000", hilist_name="血常规", pric="20", time="2026-03-02 00:00:00")
    b.add("psn_death", psn_no="P-D", die_date="2026-03-01")
    (f,) = b.screen(tmp_path, DEATH)
    assert f["violating"] == {a: D("20")}
    assert (
        f["evidence"] == "参保人 2026-03-01 死亡；项目【血常规】(002503010010000) 2026-03-02 收费 1 次，金额 20.00 元"
    )
    assert f["nature"] == "虚构服务"


def test_after_death_from_another_visits_die_date(tmp_path):
    b = Batch()
    b.visit(
        psn_no="P-D",
        med_type="21",
        begntime="2026-02-20 08:00:00",
        endtime="2026-02-25 08:00:00",
        dscg_way="5",
        die_date="2026-02-25",
    )
    later = b.visit(psn_no="P-D", begntime="2026-03-02 08:00:00")
    a = b.line(later, "001")
    b.line(b.visit(psn_no="P-ALIVE"), "001")
    assert flagged(b.screen(tmp_path, DEATH)) == {a: D("10")}


def test_after_death_earliest_date_wins_and_items_narrow_it(tmp_path):
    b = Batch()
    v = b.visit(psn_no="P-D", begntime="2026-03-02 08:00:00", die_date="2026-03-05")
    a = b.line(v, "001")
    b.line(v, "002")
    b.add("psn_death", psn_no="P-D", die_date="2026-03-01")
    found = b.screen(tmp_path, DEATH + '  items: {codes: ["001"]}\n')
    assert flagged(found) == {a: D("10")}
    assert found[0]["evidence"].startswith("参保人 2026-03-01 死亡；")


def test_after_death_self_paid_and_refunded_lines_not_flagged(tmp_path):
    b = Batch()
    v = b.visit(psn_no="P-D", begntime="2026-03-02 08:00:00")
    b.line(v, "001", chrgitm_lv="03")
    r = b.line(v, "002")
    b.refund(r)
    b.add("psn_death", psn_no="P-D", die_date="2026-03-01")
    assert b.screen(tmp_path, DEATH) == []


# ---------------------------------------------------------------------------- every scope type alike

# (rule, visit fields) that flag a line of code 001 billed at 2026-03-02 08:00
FLAGGING = {
    "restrict_gender": (rule("restrict_gender", '{codes: ["001"]}', "{gender: 2}"), {"gend": "1"}),
    "restrict_age": (rule("restrict_age", '{codes: ["001"]}', "{group: 儿童}"), {"brdy": "1980-01-01"}),
    "restrict_insutype": (rule("restrict_insutype", '{codes: ["001"]}', '{allowed: ["510"]}'), {"insutype": "310"}),
    "restrict_visit_type": (
        rule("restrict_visit_type", '{codes: ["001"]}', "{allowed: inpatient}"),
        {"med_type": "11"},
    ),
    "restrict_hosp_level": (rule("restrict_hosp_level", '{codes: ["001"]}', "{min_level: 3}"), {"hosp_lv": "05"}),
    "restrict_indication": (rule("restrict_indication", '{codes: ["001"]}', '{diag_prefixes: ["C"]}'), {}),
    "after_death": (DEATH + '  items: {codes: ["001"]}\n', {"psn_no": "P-DEAD"}),
}


def _scope_batch(type_: str, **line_kw) -> tuple[Batch, str, str]:
    rules, visit_kw = FLAGGING[type_]
    b = Batch()
    v = b.visit(**visit_kw)
    if type_ == "after_death":
        b.add("psn_death", psn_no="P-DEAD", die_date="2026-03-01")
    sn = b.line(v, "001", **{"pric": "10", **line_kw})
    return b, sn, rules


@pytest.mark.parametrize("type_", sorted(FLAGGING))
def test_every_scope_type_flags_the_whole_deductible(tmp_path, type_):
    b, sn, rules = _scope_batch(type_, cnt="3", fulamt_ownpay_amt="7.5")
    (f,) = b.screen(tmp_path, rules)
    assert f["violating"] == {sn: D("22.5")} and f["deduction_amt"] == D("22.50") and f["flagged_amt"] == D("30.00")
    assert "(001)" in f["evidence"] and "2026-03-02 收费 3 次，金额 30.00 元" in f["evidence"]


@pytest.mark.parametrize("type_", sorted(FLAGGING))
@pytest.mark.parametrize("kw", [{"chrgitm_lv": "03"}, {"hosp_appr_flag": "2"}, {"fulamt_ownpay_amt": "10"}])
def test_every_scope_type_ignores_self_paid_lines(tmp_path, type_, kw):
    b, _sn, rules = _scope_batch(type_, **kw)
    assert b.screen(tmp_path, rules) == []


@pytest.mark.parametrize("type_", sorted(FLAGGING))
def test_every_scope_type_ignores_lines_refunded_to_zero(tmp_path, type_):
    b, sn, rules = _scope_batch(type_, cnt="2")
    b.refund(sn, cnt="-1", det_item_fee_sumamt="-10")
    b.line(b.rows["fee_list_d"][0]["mdtrt_id"], "001", cnt="-1", pric="10")  # the other unit, unlinked
    assert b.screen(tmp_path, rules) == []


@pytest.mark.parametrize("type_", sorted(FLAGGING))
def test_every_scope_type_skips_refunded_settlements_and_other_codes(tmp_path, type_):
    rules, visit_kw = FLAGGING[type_]
    b = Batch()
    b.add("psn_death", psn_no="P-DEAD", die_date="2026-03-01")
    b.line(b.visit(refunded=True, **visit_kw), "001")
    b.line(b.visit(**visit_kw), "0011")  # a code that only starts like the item
    assert b.screen(tmp_path, rules) == []


def test_indication_prefixes_ignore_case(tmp_path):
    rules = rule("restrict_indication", f'{{codes: ["{AIDI}"]}}', '{diag_prefixes: ["c34"]}')
    b = Batch()
    v = b.visit()
    b.diag(v, "C34.900")
    b.line(v, AIDI)
    assert b.screen(tmp_path, rules) == []
