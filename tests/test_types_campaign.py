"""The campaign detectors (专项治理): outpatient_as_inpatient, bed_only_stay, overtreatment,
identity_misuse. Each case is written from the spec text (rule-semantics.md, "Campaign
detectors"): a must-flag case and the near misses at each boundary."""

from __future__ import annotations

from decimal import Decimal

import pytest

from kit import Batch
from medaudit.library import RuleLibraryError, load_library

BED, NURSE, CONSULT = "001109000010000", "001201000040000", "001102000050000"
LAB, EXAM, INFUSION = "002503010010000", "002101010010000", "001204000050000"
DRUG = "X0000000000000000000001"


def sub(tmp_path, name):
    (tmp_path / name).mkdir()
    return tmp_path / name


def by_visit(found, rule=None):
    return {f["mdtrt_id"]: f for f in found if rule is None or f["rule_id"] == rule}


def stay(b, vid, begin, end, psn=None, inst="H001", **kw):
    return b.visit(
        mdtrt_id=vid,
        psn_no=psn or f"P-{vid}",
        med_type=kw.pop("med_type", "21"),
        fixmedins_code=inst,
        begntime=begin if " " in begin else f"{begin} 09:00:00",
        endtime=(end if " " in end else f"{end} 10:00:00") if end else "",
        **kw,
    )


def line(b, vid, code, cls, time, **kw):
    return b.line(vid, code, time=time if " " in time else f"{time} 11:00:00", med_chrgitm_type=cls, **kw)


# ---------------------------------------------------------------------------- outpatient_as_inpatient

OAI = """
- id: R-OAI
  version: 1
  name: 门诊转住院
  type: outpatient_as_inpatient
"""


def oai_stay(b, vid, begin="2026-03-02", end="2026-03-05", classes=("01", "04", "07", "09"), **kw):
    v = stay(b, vid, begin, end, **kw)
    codes = {
        "01": BED,
        "04": LAB,
        "07": NURSE,
        "09": DRUG,
        "05": INFUSION,
        "06": "003303000120000",
        "08": "C" + "0" * 26,
        "02": CONSULT,
        "03": EXAM,
        None: CONSULT,
    }
    for k, c in enumerate(classes):
        line(b, vid, codes[c], c, f"{begin} {10 + k}:00:00", pric="20", bkkp_sn=f"{vid}-{k}")
    return v


def test_outpatient_as_inpatient_flags_a_short_stay_of_allowed_classes_only(tmp_path):
    b = Batch()
    oai_stay(b, "A")  # LOS 3 = max_los: flagged
    oai_stay(b, "B", end="2026-03-06")  # LOS 4 = max_los + 1
    oai_stay(b, "C", classes=("01", "04", "05"))  # a treatment line (05)
    oai_stay(b, "D", classes=("01", "04", "08"))  # a materials line (08)
    oai_stay(b, "E", classes=("01", "04", None))  # a line without a class is never allowed
    oai_stay(b, "F")
    b.add("setl_list_oprn_d", mdtrt_id="F", oprn_oprt_code="13.4100x001")  # an operation recorded
    oai_stay(b, "G", med_type="11")  # outpatient
    oai_stay(b, "H", end="2026-03-08", ipt_days="3")  # ipt_days wins over the dates
    oai_stay(b, "I", end="2026-03-02", ipt_days="0")  # same day: LOS 1
    found = by_visit(b.screen(tmp_path, OAI))
    assert set(found) == {"A", "H", "I"}
    f = found["A"]
    assert f["severity"] == "suspect" and f["status"] == "pending_review"
    assert f["violating"] == {f"A-{k}": Decimal("20") for k in range(4)}  # whole visit at risk
    assert f["evidence"] == (
        "本次住院 A 2026-03-02 入院，住院 3 天（不超过 3 天），无手术操作记录，费用 4 条全部属于"
        "化验费(04)、床位费(01)、护理费(07)、西药费(09)".replace("化验费(04)、床位费(01)", "床位费(01)、化验费(04)")
        + "，无允许类别以外的费用；本次就诊费用 4 条，金额合计 80.00 元，其中医保支付范围内 80.00 元"
    )


def test_outpatient_as_inpatient_nets_refunds_and_reads_the_main_diagnosis(tmp_path):
    b = Batch()
    oai_stay(b, "A", classes=("01", "04", "05"))
    b.refund("A-2")  # the treatment line refunded in full
    oai_stay(b, "B", dscg_maindiag_code="J06.900")
    oai_stay(b, "C")
    b.diag("C", "j06.100")  # main diagnosis from the settlement list
    oai_stay(b, "D", dscg_maindiag_code="J18.900")
    oai_stay(b, "E")  # no main diagnosis
    rules = OAI + "  params: {diag_prefixes: [J06]}\n"
    found = by_visit(b.screen(tmp_path, rules))
    assert set(found) == {"B", "C"}
    found = by_visit(b.screen(sub(tmp_path, "all"), OAI))
    assert {"A", "B", "C", "D", "E"} <= set(found)
    assert "A-2" not in found["A"]["violating"]


def test_outpatient_as_inpatient_allowed_classes_and_in_process_stay_so_far(tmp_path):
    b = Batch()
    oai_stay(b, "A", classes=("01", "04", "07"))
    # an open stay, not settled: LOS so far to its latest fee date (03-02 .. 03-04: 2 days)
    v = stay(b, "O", "2026-03-02", "", settled=False)
    for k, d in enumerate(("2026-03-02", "2026-03-03", "2026-03-04")):
        line(b, v, BED, "01", d, setl_id="", bkkp_sn=f"O-{k}")
    v = stay(b, "Q", "2026-03-02", "", settled=False)  # open, latest fee 4 days after admission
    for k, d in enumerate(("2026-03-02", "2026-03-06")):
        line(b, v, BED, "01", d, setl_id="", bkkp_sn=f"Q-{k}")
    rules = OAI + "  params: {allowed_classes: ['01', '04', '09']}\n"
    assert set(by_visit(b.screen(tmp_path, rules))) == set()  # 07 no longer allowed
    found = by_visit(b.screen(sub(tmp_path, "ip"), OAI, stage="in_process"))
    assert set(found) == {"O"}
    assert found["O"]["status"] == "warning"
    assert "尚未出院，截至 2026-03-04 住院 2 天" in found["O"]["evidence"]


def test_outpatient_as_inpatient_params_are_checked(tmp_path):
    from kit import write_rules

    for bad, msg in (
        ("{allowed_classes: ['15']}", "item classes 01 to 14"),
        ("{diag_prefixes: []}", "at least one prefix"),
        ("{max_los: 0}", "at least 1"),
    ):
        with pytest.raises(RuleLibraryError, match=msg):
            load_library(write_rules(tmp_path / bad.replace(" ", "")[:20], OAI + f"  params: {bad}\n"))
    with pytest.raises(RuleLibraryError, match="cannot run at stage pre_alert"):
        load_library(write_rules(sub(tmp_path, "pa"), OAI + "  stages: [pre_alert]\n"))


# ---------------------------------------------------------------------------- bed_only_stay

BOS = """
- id: R-BOS
  version: 1
  name: 挂床住院
  type: bed_only_stay
"""


def bos_stay(b, vid, empty_days, begin="2026-03-01", end="2026-03-10", **kw):
    """A stay with a bed line every day from admission to the day before discharge and a
    nursing line on each day but ``empty_days`` (offsets from admission)."""
    v = stay(b, vid, begin, end, **kw)
    import datetime as dt

    d0 = dt.date.fromisoformat(begin)
    n = (dt.date.fromisoformat(end) - d0).days if end else 9
    for k in range(n):
        d = (d0 + dt.timedelta(days=k)).isoformat()
        line(b, v, BED, "01", d, pric="40", bkkp_sn=f"{vid}-B{k}")
        if k not in empty_days:
            line(b, v, NURSE, "07", d, pric="20", bkkp_sn=f"{vid}-N{k}")
    return v


def test_bed_only_stay_flags_more_than_the_limit_and_lists_the_days(tmp_path):
    b = Batch()
    bos_stay(b, "A", {3, 4, 5})  # 3 bed-only days > 2
    bos_stay(b, "B", {3, 4})  # exactly the limit: not flagged
    bos_stay(b, "C", {3, 4, 5})
    line(b, "C", CONSULT, "02", "2026-03-05")  # consultation (02) is not care: still bed-only
    line(b, "C", LAB, "04", "2026-03-06")  # a lab on day 5: only 2 left
    bos_stay(b, "D", {3, 4, 5})
    line(b, "D", DRUG, None, "2026-03-06")  # a line without a class never counts as care
    bos_stay(b, "E", {3, 4, 5}, med_type="11")  # not inpatient
    found = by_visit(b.screen(tmp_path, BOS))
    assert set(found) == {"A", "D"}
    f = found["A"]
    assert f["evidence"].startswith(
        "本次住院 A 2026-03-01 入院，2026-03-10 出院，其中 3 天只有床位费、无检查费(03)、化验费(04)、治疗费(05)、"
        "手术费(06)、护理费(07)、西药费(09)、中药饮片费(10)、中成药费(11)：2026-03-04、2026-03-05、2026-03-06，超过 2 天；"
    )
    assert len(f["violating"]) == 9 + 6 and f["violating"]["A-B0"] == Decimal("40")


def test_bed_only_stay_refunds_days_outside_the_stay_and_open_stays(tmp_path):
    b = Batch()
    bos_stay(b, "A", {3, 4})
    sn = line(b, "A", DRUG, "09", "2026-03-03")
    line(b, "A", NURSE, "07", "2026-03-03")  # day 2 has care: the refund below is for another day
    bed_only = bos_stay(b, "R", {3, 4, 5})
    drug = line(b, bed_only, DRUG, "09", "2026-03-06")  # day 5 cared for by a drug ...
    b.refund(drug)  # ... refunded in full: bed-only again
    bos_stay(b, "S", {3, 4, 5})
    b.refund(line(b, "S", DRUG, "09", "2026-03-06", cnt="2"))  # half refunded: day 5 still cared for
    bos_stay(b, "X", {3, 4})
    line(b, "X", BED, "01", "2026-03-12")  # a bed line after discharge: not a day of the stay
    # an open stay, not settled: its days run to its latest fee date
    v = stay(b, "O", "2026-03-01", "", settled=False)
    for k, d in enumerate(("2026-03-01", "2026-03-02", "2026-03-03", "2026-03-04")):
        line(b, v, BED, "01", d, setl_id="", bkkp_sn=f"O-{k}")
    line(b, v, NURSE, "07", "2026-03-01", setl_id="")
    assert sn
    found = by_visit(b.screen(tmp_path, BOS))
    assert set(found) == {"R"}
    assert "2026-03-04、2026-03-05、2026-03-06" in found["R"]["evidence"]
    ip = by_visit(b.screen(sub(tmp_path, "ip"), BOS, stage="in_process"))
    assert set(ip) == {"O"} and ip["O"]["status"] == "warning"
    assert "尚未出院，其中 3 天只有床位费" in ip["O"]["evidence"]
    # an open stay's days for the share: admission to its latest fee date (03-01 .. 03-04: 4 days)
    shared = BOS + "  params: {max_bed_only_days: 10, max_bed_only_share: 0.5}\n"
    ip = by_visit(b.screen(sub(tmp_path, "ips"), shared, stage="in_process"))
    assert set(ip) == {"O"} and "超过住院 4 天的 50%" in ip["O"]["evidence"]
    # the limit and the care classes are parameters
    more = by_visit(b.screen(sub(tmp_path, "p"), BOS + "  params: {max_bed_only_days: 1, care_classes: ['05']}\n"))
    assert {"A", "R", "S", "X"} <= set(more)
    # off by default, a share of the stay's days (03-01 .. 03-10: 10 days): 2 bed-only days are above 0.15
    share = by_visit(b.screen(sub(tmp_path, "s"), BOS + "  params: {max_bed_only_share: 0.15}\n"))
    assert {"A", "R", "S", "X"} <= set(share) and "超过住院 10 天的 15%" in share["A"]["evidence"]
    # and exactly the share (0.2 x 10 = 2 days) is not above it
    assert set(by_visit(b.screen(sub(tmp_path, "t"), BOS + "  params: {max_bed_only_share: 0.2}\n"))) == {"R"}


# ---------------------------------------------------------------------------- overtreatment

OVT = """
- id: R-OVT
  version: 1
  name: 过度检查
  type: overtreatment
  params: {percentile: 95, min_peers: 5}
"""


def peer(b, vid, labs, begin="2026-03-02 08:00:00", diag="J06.900", inst="H001", hosp_lv="05", **kw):
    v = b.visit(
        mdtrt_id=vid,
        psn_no=f"P-{vid}",
        begntime=begin,
        endtime=begin[:11] + "10:00:00",
        dscg_maindiag_code=diag,
        fixmedins_code=inst,
        hosp_lv=hosp_lv,
        **kw,
    )
    line(b, v, CONSULT, "02", begin, pric="10", bkkp_sn=f"{vid}-C")
    if labs:
        line(b, v, LAB, "04", begin, cnt=str(labs), pric="20", bkkp_sn=f"{vid}-L")
    return v


def test_overtreatment_above_the_interpolated_percentile_of_the_peers(tmp_path):
    b = Batch()
    # 5 peers (the flagged visit included): 1, 1, 2, 2, 9 -> p95 at position 3.8: 2 + 0.8 x 7 = 7.6
    for k, q in enumerate((1, 1, 2, 2, 9)):
        peer(b, f"A{k}", q)
    found = by_visit(b.screen(tmp_path, OVT))
    assert set(found) == {"A4"}
    f = found["A4"]
    assert f["violating"] == {"A4-L": Decimal("180")} and f["related"] == []  # the lines of the classes only
    assert f["evidence"] == (
        "本次门诊 A4 检查费(03)、化验费(04) 数量 9，高于同类就诊第 95 百分位 7.6（2026-03 开始的门诊，"
        "二级机构，主诊断 J06；同类 5 人次，含本次）；项目【项目0000】(002503010010000) 2026-03-02 收费 9 次，"
        "金额 180.00 元"
    )


def test_overtreatment_equal_to_the_percentile_and_too_few_peers_are_not_flagged(tmp_path):
    b = Batch()
    # 6 peers 0, 0, 0, 0, 4, 4 at percentile 80: position 4 exactly -> 4; the visits with 4 equal it
    for k, q in enumerate((0, 0, 0, 0, 4, 4)):
        peer(b, f"E{k}", q)
    # 4 peers only (min_peers 5): not judged
    for k, q in enumerate((0, 0, 0, 9)):
        peer(b, f"F{k}", q, diag="K29.700")
    # other month, kind, level and diagnosis group: each its own group of one
    peer(b, "G1", 30, begin="2026-04-02 08:00:00")
    peer(b, "G2", 30, hosp_lv="01")
    peer(b, "G3", 30, diag="J18.900")
    peer(b, "G4", 30, med_type="21")
    rules = OVT.replace("percentile: 95", "percentile: 80")
    assert by_visit(b.screen(tmp_path, rules)) == {}
    # one more peer at 0 makes 7: position 4.8 -> 0 + 0.8 x 4 = 3.2 < 4: both flagged
    peer(b, "E6", 0)
    assert set(by_visit(b.screen(sub(tmp_path, "b"), rules))) == {"E4", "E5"}


def test_overtreatment_peer_key_is_normalised_and_refunds_are_netted(tmp_path):
    b = Batch()
    for k, q in enumerate((1, 1, 1, 1)):
        peer(b, f"N{k}", q, diag=["J06.900", "j06.1", "J06", "J06.000x001"][k])
    v = peer(b, "N4", 0, diag=None)
    b.diag(v, "J06.200")  # main diagnosis from the settlement list
    line(b, v, EXAM, "03", "2026-03-02 08:30:00", cnt="6", pric="50", bkkp_sn="N4-X")
    b.refund("N4-X", cnt="-2")  # net 4
    found = by_visit(b.screen(tmp_path, OVT))
    assert set(found) == {"N4"}
    assert found["N4"]["violating"] == {"N4-X": Decimal("200")}
    assert "数量 4，" in found["N4"]["evidence"] and "同类 5 人次" in found["N4"]["evidence"]
    b.refund("N4-X", cnt="-3")  # net 1: equal to every peer
    assert by_visit(b.screen(sub(tmp_path, "b"), OVT)) == {}


# ---------------------------------------------------------------------------- identity_misuse

IDM = """
- id: R-IDM
  version: 1
  name: 冒名就诊
  type: identity_misuse
"""


def opt(b, vid, psn, inst, begin, **kw):
    v = b.visit(mdtrt_id=vid, psn_no=psn, fixmedins_code=inst, begntime=begin, endtime=begin[:11] + "23:59:00", **kw)
    line(b, v, CONSULT, "02", begin, pric="10", bkkp_sn=f"{vid}-C")
    return v


def test_identity_misuse_flags_the_later_visit_within_the_gap(tmp_path):
    b = Batch()
    opt(b, "A1", "PA", "H001", "2026-03-02 08:00:00")
    opt(b, "A2", "PA", "H002", "2026-03-02 08:59:59")  # 59 min 59 s: flagged
    opt(b, "B1", "PB", "H001", "2026-03-02 08:00:00")
    opt(b, "B2", "PB", "H002", "2026-03-02 09:00:00")  # exactly 60 minutes: not flagged
    opt(b, "C1", "PC", "H001", "2026-03-02 08:00:00")
    opt(b, "C2", "PC", "H001", "2026-03-02 08:10:00")  # same institution: never a pair
    opt(b, "D2", "PD", "H002", "2026-03-02 08:00:00")
    opt(b, "D1", "PD", "H001", "2026-03-02 08:00:00")  # equal times: the larger mdtrt_id (D2)
    opt(b, "E1", "PE", "H001", "2026-03-02 08:00:00")
    opt(b, "E2", "PE", "H002", "2026-03-02 08:20:00", med_type="21")  # an inpatient visit: not outpatient
    opt(b, "F1", "PF", "H001", "2026-03-02 23:50:00")
    opt(b, "F2", "PF", "H002", "2026-03-03 00:20:00")  # across midnight: 30 minutes
    found = by_visit(b.screen(tmp_path, IDM))
    assert set(found) == {"A2", "D2", "F2"}
    assert found["A2"]["violating"] == {"A2-C": Decimal("10")}
    assert found["A2"]["evidence"].startswith(
        "本次普通门诊 A2（机构 H002）2026-03-02 08:59:59 开始，距同一参保人在机构 H001 的普通门诊 A1"
        "（2026-03-02 08:00:00 开始）仅 59 分钟 59 秒，不足 60 分钟；本次就诊费用 1 条"
    )
    assert "与同一参保人在机构 H001 的普通门诊 D1（2026-03-02 08:00:00 开始）同时开始" in found["D2"]["evidence"]
    # the parameter
    assert set(by_visit(b.screen(sub(tmp_path, "p"), IDM + "  params: {min_gap_minutes: 61}\n"))) == {
        "A2",
        "B2",
        "D2",
        "F2",
    }


def test_identity_misuse_names_the_closest_visit_and_ignores_cancelled_ones(tmp_path):
    b = Batch()
    opt(b, "A1", "PA", "H001", "2026-03-02 08:00:00")
    opt(b, "A2", "PA", "H003", "2026-03-02 08:30:00")
    opt(b, "A3", "PA", "H002", "2026-03-02 08:45:00")  # within 60 of both: names A2 (15 minutes)
    opt(b, "B1", "PB", "H001", "2026-03-02 08:00:00", refunded=True)  # cancelled visit
    opt(b, "B2", "PB", "H002", "2026-03-02 08:10:00")
    found = by_visit(b.screen(tmp_path, IDM))
    assert set(found) == {"A2", "A3"}
    assert "机构 H003 的普通门诊 A2（2026-03-02 08:30:00 开始）仅 15 分钟" in found["A3"]["evidence"]
