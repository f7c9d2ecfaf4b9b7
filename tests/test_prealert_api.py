"""The pre-alert service: 3101/3103 shapes, bad payloads, API keys, and the doctor's answer
reaching the post-hoc finding."""

from __future__ import annotations

import asyncio
import copy
import csv
import json

import openpyxl
import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from kit import Batch, findings, loaded_db, write_rules
from medaudit import db
from medaudit.hospital_loop import appeals, report
from medaudit.cli import app as cli_app
from medaudit.engine import screen
from medaudit.library import RuleLibraryError, load_library
from medaudit.loader import load_batch
from medaudit.prealert import store
from medaudit.prealert.app import create_app

KEY1, KEY2 = "key-H001-aaaaaaaaaaaaaaaa", "key-H002-bbbbbbbbbbbbbbbb"
UTERUS, BED, EMERG_MON, EMERG_CONS = "002101030300000", "001109000010000", "001103000010000", "001102000030000"

RULES = f"""
rules:
  - id: R-SEX-001
    version: 1
    name: 限女性使用的检查项目
    type: restrict_gender
    basis: 国家医保局第一批 项目规则库（限定性别对象）
    items: {{codes: ["{UTERUS}"]}}
    params: {{gender: 2}}
  - id: R-FRQ-001
    version: 1
    name: 床位费每日限1次
    type: frequency_limit
    items: {{codes: ["{BED}"]}}
    params: {{max_per_day: 1}}
  - id: R-DUP-001
    version: 1
    name: 急诊监护费含诊查费
    type: duplicate_charge
    items:
      rows:
        - {{code: "{EMERG_CONS}", main_code: "{EMERG_MON}", window: same_day}}
  - id: R-SUS-001
    version: 1
    name: 可疑项目
    type: restrict_gender
    severity: suspect
    items: {{codes: ["002101030300001"]}}
    params: {{gender: 2}}
  - id: R-POST-ONLY
    version: 1
    name: 仅事后
    type: restrict_gender
    stages: [post_hoc]
    items: {{codes: ["002101030300002"]}}
    params: {{gender: 2}}
"""


def order(rx_id: str, code: str, when: str = "2026-03-02 09:00:00", cnt="1", pric="180", cur=1, **kw) -> dict:
    o = {
        "rx_id": rx_id,
        "rxno": "IP2026030200001",
        "grpno": "",
        "long_drord_flag": 0,
        "hilist_type": "201",
        "chrg_type": "05",
        "drord_bhvr": 0,
        "hilist_code": code,
        "hilist_name": f"项目{code[-4:]}",
        "hilist_lv": "1",
        "hosplist_code": "H" + code,
        "hosplist_name": "院内项目",
        "cnt": cnt,
        "pric": pric,
        "sumamt": str(float(cnt) * float(pric)),
        "selfpay_amt": 0,
        "ownpay_amt": 0,
        "spec": "",
        "spec_unt": "次",
        "drord_begn_date": when,
        "drord_stop_date": None,
        "drord_dept_codg": "D01",
        "drord_dept_name": "妇科",
        "drord_dr_codg": "DR01",
        "drord_dr_name": "医生01",
        "drord_dr_profttl": "231",
        "curr_drord_flag": cur,
    }
    o.update(kw)
    return o


def request(
    orders: list[dict],
    mdtrt_id: str = "V-OPEN-1",
    medins_id: str = "H001",
    gend: str = "1",
    psn: str = "P-OPEN-1",
    envelope: bool = True,
) -> dict:
    data = {
        "rule_ids": [],
        "trig_scen": "5",
        "syscode": "HIS",
        "patient_dtos": [
            {
                "patn_id": psn,
                "patn_name": "张三",
                "gend": gend,
                "brdy": "1970-05-05",
                "poolarea": "430100",
                "curr_mdtrt_id": mdtrt_id,
                "fsi_encounter_dtos": [
                    {
                        "mdtrt_id": mdtrt_id,
                        "medins_id": medins_id,
                        "medins_name": "测试医院",
                        "medins_admdvs": "430100",
                        "medins_type": "A",
                        "medins_lv": "05",
                        "wardarea_codg": "W1",
                        "wardno": "",
                        "bedno": "10床",
                        "setl_date": None,
                        "adm_date": "2026-03-01 10:00:00",
                        "dscg_date": None,
                        "dscg_main_dise_codg": "N39.000",
                        "dscg_main_dise_name": "泌尿道感染",
                        "dr_codg": "DR01",
                        "adm_dept_codg": "D01",
                        "med_mdtrt_type": "1",
                        "med_type": "21",
                        "matn_stas": "0",
                        "medfee_sumamt": 0,
                        "insutype": "310",
                        "reim_flag": 0,
                        "out_setl_flag": 0,
                        "fsi_diagnose_dtos": [
                            {
                                "dise_id": 1,
                                "inout_dise_type": "1",
                                "maindise_flag": 1,
                                "dias_srt_no": 1,
                                "dise_codg": "N39.000",
                                "dise_name": "泌尿道感染",
                                "dise_date": "2026-03-01 11:00:00",
                            }
                        ],
                        "fsi_operation_dtos": [],
                        "fsi_order_dtos": orders,
                    }
                ],
            }
        ],
    }
    if not envelope:
        return data
    return {
        "infno": "3101",
        "msgid": "H00120260302090000001",
        "mdtrtarea_admvs": "430100",
        "insuplc_admdvs": "430100",
        "recer_sys_code": "IMS",
        "infver": "V1.0",
        "opter_type": "1",
        "opter": "DR01",
        "opter_name": "医生01",
        "inf_time": "2026-03-02 09:00:01",
        "fixmedins_code": medins_id,
        "fixmedins_name": "测试医院",
        "input": {"data": data},
    }


@pytest.fixture(params=["sync-results", "async-results"])
def service(tmp_path, request):
    """A database with one earlier visit per institution, and the service over it (results
    stored at once, or in the background as ``medaudit serve`` does by default)."""
    b = Batch()
    b.visit(mdtrt_id="V-HIST", psn_no="P-OPEN-1", med_type="11", fixmedins_code="H001")
    b.visit(mdtrt_id="V-H2", psn_no="P-H2", fixmedins_code="H002")
    con = loaded_db(b, tmp_path / "svc.duckdb")  # loaded once, copied for the next test
    lib = load_library(write_rules(tmp_path / "rules", RULES))
    app = create_app(
        con,
        {"default": lib},
        {store.key_hash(KEY1): "H001", store.key_hash(KEY2): "H002"},
        async_results=request.param == "async-results",
    )
    with TestClient(app) as client:
        client.con = con
        yield client


def r_text(res: dict) -> str:
    """A 3101 result as one text (to look for what it must not show)."""
    return json.dumps(res, ensure_ascii=False)


def post(client, body, key=KEY1, **params):
    return client.post("/prealert/3101", json=body, headers={"X-API-Key": key} if key else {}, params=params)


# ---------------------------------------------------------------------------- 3101


def test_gender_violation_answers_in_the_national_shape(service):
    r = post(service, request([order("RX1", UTERUS)]))
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["infcode"] == 0
    [res] = body["output"]["result"]
    assert res["rule_id"] == "R-SEX-001" and res["rule_name"] == "限女性使用的检查项目"
    assert res["sev_deg"] == "1" and res["vola_evid"].startswith("国家医保局第一批")
    assert (
        res["vola_cont"]
        == "患者性别为男；项目【项目0000】(002101030300000) 限女性使用，2026-03-02 收费 1 次，金额 180.00 元"
    )
    assert res["vola_amt"] == 180.0 and isinstance(res["vola_amt"], float)  # a number, as the national output
    assert res["patn_id"] == "P-OPEN-1" and res["mdtrt_id"] == "V-OPEN-1" and len(res["jr_id"]) == 32
    [d] = res["judge_result_detail_dtos"]
    assert d["rx_id"] == "RX1" and d["vola_item_type"] == "1" and d["vola_amt"] == 180.0
    assert isinstance(d["vola_amt"], float)
    assert d["jrd_id"].startswith(res["jr_id"])
    # stored for the institution
    got = service.get(f"/prealert/results/{res['jr_id']}", headers={"X-API-Key": KEY1}).json()
    assert got["rule_id"] == "R-SEX-001" and got["judge_result_detail_dtos"][0]["rx_id"] == "RX1"
    assert got["vola_amt"] == 180.0 and got["judge_result_detail_dtos"][0]["vola_amt"] == 180.0


def test_quotes_in_ids_are_data_not_sql(service):
    r = post(service, request([order("RX'1; DROP TABLE findings; --", UTERUS)], mdtrt_id="V'1", psn="P'1"))
    assert r.status_code == 200, r.text
    [res] = r.json()["output"]["result"]
    assert res["judge_result_detail_dtos"][0]["rx_id"] == "RX'1; DROP TABLE findings; --" and res["mdtrt_id"] == "V'1"


def test_bare_data_object_is_accepted_too_and_a_woman_is_not_flagged(service):
    assert post(service, request([order("RX1", UTERUS)], envelope=False)).json()["output"]["result"]
    assert post(service, request([order("RX1", UTERUS)], gend="2")).json()["output"]["result"] == []


def test_only_new_orders_are_judged_earlier_ones_are_context(service):
    # the uterus order is an earlier one (curr_drord_flag 0): already answered, not again
    r = post(service, request([order("RX0", UTERUS, cur=0), order("RX1", "001102000010000", cur=1)]))
    assert r.json()["output"]["result"] == []


def test_frequency_against_the_visits_earlier_orders(service):
    orders = [
        order("B1", BED, "2026-03-02 08:00:00", pric="30", cur=0),
        order("B2", BED, "2026-03-02 18:00:00", pric="30", cur=1),
    ]
    [res] = post(service, request(orders)).json()["output"]["result"]
    assert res["rule_id"] == "R-FRQ-001"
    items = {d["rx_id"]: (d["vola_item_type"], float(d["vola_amt"])) for d in res["judge_result_detail_dtos"]}
    assert items == {"B2": ("1", 30.0), "B1": ("2", 0.0)}
    # a bed on another day is fine
    orders[1]["drord_begn_date"] = "2026-03-03 08:00:00"
    assert post(service, request(orders)).json()["output"]["result"] == []


def test_main_item_ordered_after_the_included_one_flags_the_earlier_charge(service, tmp_path):
    # the consultation is already billed (in the database); the monitoring ordered now includes it
    con = service.con
    con.execute("""INSERT INTO mdtrt_d (mdtrt_id, psn_no, gend, brdy, insutype, fixmedins_code, hosp_lv, med_type, begntime)
                   VALUES ('V-OPEN-1', 'P-OPEN-1', '1', '1970-05-05', '310', 'H001', '05', '21', '2026-03-01 10:00:00')""")
    con.execute("""INSERT INTO fee_list_d (bkkp_sn, mdtrt_id, setl_id, psn_no, fixmedins_code, fee_ocur_time, hilist_code,
                   hilist_name, list_type, chrgitm_lv, cnt, pric, det_item_fee_sumamt)
                   VALUES ('FEE-9', 'V-OPEN-1', 'S-OPEN', 'P-OPEN-1', 'H001', '2026-03-02 08:00:00', '001102000030000',
                           '急诊诊查费', '201', '01', 1, 12, 12)""")
    [res] = post(service, request([order("M1", EMERG_MON, "2026-03-02 10:00:00", pric="60")])).json()["output"][
        "result"
    ]
    items = {d["rx_id"]: (d["vola_item_type"], float(d["vola_amt"])) for d in res["judge_result_detail_dtos"]}
    assert res["rule_id"] == "R-DUP-001"
    assert items == {"FEE-9": ("1", 12.0), "M1": ("2", 0.0)}
    assert "已包含在" in res["vola_cont"]


HBA1C = "002503020070000"
PERIOD_RULES = f"""
rules:
  - {{id: R-PER-001, version: 1, name: 糖化血红蛋白15天限1次, type: period_limit, items: {{codes: ["{HBA1C}"]}},
     params: {{max_count: 1, period_days: 15}}}}
"""


@pytest.mark.parametrize("engine, preload", [("sql", False), ("fast", False), ("fast", True)])
def test_period_limit_counts_the_persons_settled_visits_at_other_institutions(tmp_path, engine, preload):
    b = Batch()
    earlier = b.visit(
        mdtrt_id="V-EARLIER",
        psn_no="P-HBA",
        fixmedins_code="H002",
        begntime="2026-03-01 08:00:00",
        endtime="2026-03-01 10:00:00",
    )
    paid = b.line(earlier, HBA1C, pric="45", hilist_name="糖化血红蛋白测定")
    con = db.connect(tmp_path / "p.duckdb")
    load_batch(b.write(tmp_path / "batch"), con)
    lib = load_library(write_rules(tmp_path / "rules", PERIOD_RULES))
    app = create_app(con, {"default": lib}, {store.key_hash(KEY1): "H001"}, engine=engine, preload=preload)
    with TestClient(app) as client:
        soon = request([order("RX1", HBA1C, "2026-03-10 09:00:00", pric="45")], mdtrt_id="V-NOW", psn="P-HBA")
        [res] = post(client, soon).json()["output"]["result"]
        assert res["rule_id"] == "R-PER-001" and res["vola_amt"] == 45.0
        # the paid test elsewhere is said with its date only: not an item, no id, institution or visit
        # (batch screening's evidence names them: "2026-03-01 H002 就诊 V-EARLIER"; see test_security_prealert)
        assert [(d["rx_id"], d["vola_item_type"]) for d in res["judge_result_detail_dtos"]] == [("RX1", "1")]
        assert res["vola_cont"].endswith("此前 15 天内已支付：2026-03-01 其他机构")
        assert paid not in r_text(res) and "H002" not in r_text(res) and "V-EARLIER" not in r_text(res)
        # 15 days after the paid test: allowed
        later = request([order("RX2", HBA1C, "2026-03-16 09:00:00", pric="45")], mdtrt_id="V-NOW", psn="P-HBA")
        assert post(client, later).json()["output"]["result"] == []
        # another person's history does not count
        other = request([order("RX3", HBA1C, "2026-03-10 09:00:00", pric="45")], mdtrt_id="V-X", psn="P-OTHER")
        assert post(client, other).json()["output"]["result"] == []
    assert app.state.checker.answered[engine] == 3


def test_suspect_rules_answer_sev_deg_2_and_post_hoc_only_rules_stay_silent(service):
    res = post(service, request([order("RX1", "002101030300001"), order("RX2", "002101030300002")])).json()
    assert [(x["rule_id"], x["sev_deg"]) for x in res["output"]["result"]] == [("R-SUS-001", "2")]


def test_rule_ids_narrow_the_check(service):
    body = request([order("RX1", UTERUS)])
    body["input"]["data"]["rule_ids"] = ["R-FRQ-001"]
    assert post(service, body).json()["output"]["result"] == []
    body["input"]["data"]["rule_ids"] = ["R-SEX-001"]
    assert len(post(service, body).json()["output"]["result"]) == 1


# ---------------------------------------------------------------------------- bad requests


@pytest.mark.parametrize(
    "change, status, field",
    [
        (
            lambda d: d["patient_dtos"][0]["fsi_encounter_dtos"][0]["fsi_order_dtos"][0].pop("cnt"),
            422,
            "patient_dtos.0.fsi_encounter_dtos.0.fsi_order_dtos.0.cnt",
        ),
        (
            lambda d: d["patient_dtos"][0]["fsi_encounter_dtos"][0]["fsi_order_dtos"][0].update(cnt="-1"),
            422,
            "patient_dtos.0.fsi_encounter_dtos.0.fsi_order_dtos.0.cnt",
        ),
        (
            lambda d: d["patient_dtos"][0]["fsi_encounter_dtos"][0]["fsi_order_dtos"][0].update(
                drord_begn_date="2026-13-40"
            ),
            422,
            "patient_dtos.0.fsi_encounter_dtos.0.fsi_order_dtos.0.drord_begn_date",
        ),
        (lambda d: d["patient_dtos"][0].update(brdy="yesterday"), 422, "patient_dtos.0.brdy"),
        (lambda d: d["patient_dtos"][0].update(curr_mdtrt_id="NOPE"), 422, "patient_dtos.0"),
        (lambda d: d.update(patient_dtos=[]), 422, "patient_dtos"),
        (lambda d: d.pop("trig_scen"), 422, "trig_scen"),
        (
            lambda d: d["patient_dtos"][0]["fsi_encounter_dtos"][0].update(fsi_order_dtos=[]),
            400,
            "fsi_order_dtos is empty",
        ),
        (
            lambda d: d["patient_dtos"][0]["fsi_encounter_dtos"][0]["fsi_order_dtos"].append(
                d["patient_dtos"][0]["fsi_encounter_dtos"][0]["fsi_order_dtos"][0]
            ),
            422,
            "RX1 given more than once",
        ),
        (lambda d: d.update(rule_ids=["R-NOPE"]), 422, "R-NOPE"),
        (
            lambda d: d["patient_dtos"][0]["fsi_encounter_dtos"][0]["fsi_order_dtos"][0].update(cnt="1e30"),
            422,
            "fsi_order_dtos.0.cnt",
        ),
        (
            lambda d: d["patient_dtos"][0]["fsi_encounter_dtos"][0]["fsi_order_dtos"][0].update(pric="0.123456"),
            422,
            "fsi_order_dtos.0.pric",
        ),
        (
            lambda d: d["patient_dtos"][0]["fsi_encounter_dtos"][0]["fsi_order_dtos"][0].update(rx_id="R\x00X"),
            422,
            "fsi_order_dtos.0.rx_id",
        ),
        (lambda d: d["patient_dtos"][0].update(patn_id="O'Brien\x1f"), 422, "patient_dtos.0.patn_id"),
    ],
)
def test_bad_requests_get_a_4xx_naming_the_field(service, change, status, field):
    data = request([order("RX1", UTERUS)], envelope=False)
    change(data)
    r = post(service, data)
    assert r.status_code == status, r.text
    body = r.json()
    assert body["infcode"] == -1 and field in body["err_msg"], body


def test_control_characters_are_refused_in_words(service):
    r = post(service, request([order("R\x07X", UTERUS, hilist_name="造\x1b影")], envelope=False))
    assert r.status_code == 422
    msg = r.json()["err_msg"]
    assert "fsi_order_dtos.0.rx_id: must not contain control characters" in msg
    assert "fsi_order_dtos.0.hilist_name: must not contain control characters" in msg
    # white space at the ends is stripped, not refused
    assert post(service, request([order(" RX1\t", UTERUS)])).status_code == 200


def test_unknown_rule_set_and_garbage_bodies(service):
    r = post(service, request([order("RX1", UTERUS)]), rule_set="provincial")
    assert r.status_code == 404 and "unknown rule set 'provincial'" in r.json()["err_msg"]
    r = service.post(
        "/prealert/3101", content=b"{not json", headers={"X-API-Key": KEY1, "Content-Type": "application/json"}
    )
    assert r.status_code == 422
    r = service.post("/prealert/3101", json=[1, 2], headers={"X-API-Key": KEY1})
    assert r.status_code == 422


# ---------------------------------------------------------------------------- keys


def test_each_institution_sees_only_its_own(service):
    assert post(service, request([order("RX1", UTERUS)]), key=None).status_code == 401
    assert post(service, request([order("RX1", UTERUS)]), key="not-a-key-at-all-xx").status_code == 401
    # H002's key cannot check (or learn about) H001's patients
    r = post(service, request([order("RX1", UTERUS)]), key=KEY2)
    assert r.status_code == 403 and "medins_id 'H001'" in r.json()["err_msg"]
    [res] = post(service, request([order("RX1", UTERUS)])).json()["output"]["result"]
    jr = res["jr_id"]
    assert service.get(f"/prealert/results/{jr}", headers={"X-API-Key": KEY2}).status_code == 404
    assert service.get("/prealert/results", headers={"X-API-Key": KEY2}).json()["result"] == []
    assert [x["jr_id"] for x in service.get("/prealert/results", headers={"X-API-Key": KEY1}).json()["result"]] == [jr]
    fb = {"warn_type": "1", "warns": [{"warn_rslt_id": jr, "dspo_way": "2"}]}
    r = service.post("/prealert/3103", json=fb, headers={"X-API-Key": KEY2})
    assert r.status_code == 404 and jr in r.json()["err_msg"]
    # H002 checks its own patients
    r = post(service, request([order("RX9", UTERUS)], mdtrt_id="V-H2-OPEN", medins_id="H002", psn="P-H2"), key=KEY2)
    assert r.status_code == 200 and len(r.json()["output"]["result"]) == 1


def test_keys_from_the_database_and_keys_file_problems(service, tmp_path):
    key = store.add_key(service.con, "H001")
    assert post(service, request([order("RX1", UTERUS)]), key=key).status_code == 200
    f = tmp_path / "keys.yaml"
    f.write_text("H001: short\n")
    with pytest.raises(ValueError, match="at least 16"):
        store.load_keys_file(f)
    f.write_text("H001: same-key-0123456789\nH002: same-key-0123456789\n")
    with pytest.raises(ValueError, match="two institutions"):
        store.load_keys_file(f)
    f.write_text("H001: [k1-0123456789abcdef, k2-0123456789abcdef]\n")
    assert sorted(store.load_keys_file(f).values()) == ["H001", "H001"]


# ---------------------------------------------------------------------------- 3103


def test_feedback_shapes(service):
    [res] = post(service, request([order("RX1", UTERUS)])).json()["output"]["result"]
    jr = res["jr_id"]
    h = {"X-API-Key": KEY1}
    r = service.post(
        "/prealert/3103", json={"warn_type": "1", "warns": [{"warn_rslt_id": jr, "dspo_way": "1"}]}, headers=h
    )
    assert (
        r.status_code == 422 and "warns.0" in r.json()["err_msg"] and "dspo_way_rea is required" in r.json()["err_msg"]
    )
    r = service.post(
        "/prealert/3103", json={"warn_type": "1", "warns": [{"warn_rslt_id": jr, "dspo_way": "3"}]}, headers=h
    )
    assert r.status_code == 422 and "warns.0.dspo_way" in r.json()["err_msg"]
    r = service.post("/prealert/3103", json={"warn_type": "1", "warns": []}, headers=h)
    assert r.status_code == 422
    r = service.post(
        "/prealert/3103", json={"warn_type": "1", "warns": [{"warn_rslt_id": "nope", "dspo_way": "2"}]}, headers=h
    )
    assert r.status_code == 404
    envelope = {
        "infno": "3103",
        "input": {
            "data": {
                "warn_type": "1",
                "warns": [
                    {"warn_rslt_id": jr, "dspo_way": "1", "dspo_way_rea": "患者确为女性变性术后，已经上级医师审核"}
                ],
            }
        },
    }
    r = service.post("/prealert/3103", json=envelope, headers=h)
    assert r.status_code == 200 and r.json()["output"] == {"accepted": 1}
    fb = service.get(f"/prealert/results/{jr}", headers=h).json()["feedback"]
    assert [(x["dspo_way"], x["dspo_way_rea"]) for x in fb] == [("1", "患者确为女性变性术后，已经上级医师审核")]


def test_openapi_is_served(service):
    spec = service.get("/openapi.json").json()
    assert {"/prealert/3101", "/prealert/3103", "/prealert/results/{jr_id}"} <= set(spec["paths"])
    assert "OrderDto" in json.dumps(spec["components"])
    assert service.get("/docs").status_code == 200
    # amounts of the answer are numbers, in the schema as in the answer
    comps = spec["components"]["schemas"]
    assert comps["Result3101"]["properties"]["vola_amt"]["type"] == "number"
    assert comps["JudgeResultDetailDto"]["properties"]["vola_amt"]["type"] == "number"


def test_docs_work_offline(service):
    """/docs names no script, style or icon outside the host (a hospital intranet has no CDN), and
    every file it names is served."""
    import re

    page = service.get("/docs")
    assert page.status_code == 200 and "swagger" in page.text.lower()
    urls = re.findall(r"""(?:src|href)\s*=\s*["']([^"']+)["']""", page.text)
    urls += re.findall(r"""url:\s*['"]([^'"]+)['"]""", page.text)
    assert not [u for u in re.findall(r"https?://[^\s'\"]+", page.text)], page.text
    assert any(u.endswith(".js") for u in urls) and any(u.endswith(".css") for u in urls), urls
    for u in urls:
        assert service.get(u).status_code == 200, u
    assert service.get("/redoc").status_code == 404  # ReDoc's page would load from a CDN: not served


# ---------------------------------------------------------------------------- into the post-hoc finding


def test_override_reason_becomes_evidence_of_the_post_hoc_finding(tmp_path):
    """Pre-alert on an open stay, the doctor continues with a reason; the stay is later billed,
    settled and screened: the finding on that line shows the answer (and `medaudit findings` too)."""
    rules = write_rules(tmp_path / "rules", RULES)
    lib = load_library(rules)
    dbfile = tmp_path / "m.duckdb"
    con = db.connect(dbfile)
    b0 = Batch()
    b0.visit(mdtrt_id="V-HIST", psn_no="P-OPEN-1", fixmedins_code="H001")
    load_batch(b0.write(tmp_path / "b0"), con)
    with TestClient(create_app(con, {"default": lib}, {store.key_hash(KEY1): "H001"})) as client:
        [res] = post(client, request([order("RX1", UTERUS)])).json()["output"]["result"]
        [res2] = post(
            client, request([order("RX2", BED, pric="30", cur=0), order("RX3", BED, "2026-03-02 20:00:00", pric="30")])
        ).json()["output"]["result"]
        h = {"X-API-Key": KEY1}
        assert (
            client.post(
                "/prealert/3103",
                headers=h,
                json={
                    "warns": [
                        {"warn_rslt_id": res["jr_id"], "dspo_way": "1", "dspo_way_rea": "病情需要，已经上级医师审核"},
                        {"warn_rslt_id": res2["jr_id"], "dspo_way": "2"},
                    ]
                },
            ).status_code
            == 200
        )
    # the stay is billed and settled; the bureau screens it
    b = Batch()
    v = b.visit(
        mdtrt_id="V-OPEN-1",
        psn_no="P-OPEN-1",
        fixmedins_code="H001",
        med_type="21",
        begntime="2026-03-01 10:00:00",
        endtime="2026-03-05 10:00:00",
    )
    sn = b.line(v, UTERUS, pric="180", time="2026-03-02 09:30:00")
    b.line(v, BED, pric="30", time="2026-03-02 08:00:00")
    b.line(v, BED, pric="30", time="2026-03-02 20:00:00", bkkp_sn="BED-LATE")
    other = b.visit(mdtrt_id="V-OTHER", psn_no="P-OTHER", fixmedins_code="H001")
    b.line(other, UTERUS, pric="180")
    load_batch(b.write(tmp_path / "b1"), con)
    screen(con, lib, stage="post_hoc")
    fs = {(f["rule_id"], f["mdtrt_id"]): f for f in findings(con)}
    ev = store.evidence_for(con)
    sex = fs[("R-SEX-001", "V-OPEN-1")]
    assert sex["violating"] == {sn: pytest.approx(180)}
    assert ev[sex["finding_id"]].endswith("医生选择继续执行，理由：病情需要，已经上级医师审核")
    assert "医嘱 RX1" in ev[sex["finding_id"]]
    # the doctor changed the bed order: that answer is shown on the frequency finding
    assert ev[fs[("R-FRQ-001", "V-OPEN-1")]["finding_id"]].endswith("医生选择返回修改医嘱")
    # another visit with the same code had no pre-alert: nothing
    assert fs[("R-SEX-001", "V-OTHER")]["finding_id"] not in ev
    assert store.evidence_for(con, [sex["finding_id"]]) == {sex["finding_id"]: ev[sex["finding_id"]]}
    # the hospital's appeal workbook has the answer in its own column, the deduction report in the evidence
    exported = appeals.export_workbook(con, "H001", "2026-03", tmp_path / "appeal.xlsx")
    sheet = openpyxl.load_workbook(exported.path)["申诉"]
    header = [c.value for c in sheet[1]]
    by_id = {r[0]: dict(zip(header, r)) for r in sheet.iter_rows(min_row=2, values_only=True)}
    assert by_id[sex["finding_id"]][appeals.COL_PREALERT] == ev[sex["finding_id"]]
    assert by_id[fs[("R-SEX-001", "V-OTHER")]["finding_id"]][appeals.COL_PREALERT] in ("", None)
    details = {x["finding_id"]: x for x in report.gather(con, "H001", "2026-03").details}
    assert details[sex["finding_id"]]["evidence"].endswith("\n" + ev[sex["finding_id"]])
    assert "事前提醒" not in details[fs[("R-SEX-001", "V-OTHER")]["finding_id"]]["evidence"]
    con.close()
    out = CliRunner().invoke(cli_app, ["findings", "--db", str(dbfile), "--visit", "V-OPEN-1"], terminal_width=400)
    assert out.exit_code == 0, out.output
    assert "病情需要，已经上级医师审核" in out.output.replace("\n", "").replace(" ", "").replace("│", "")
    # and in `findings --export`, column prealert
    out = CliRunner().invoke(
        cli_app, ["findings", "--db", str(dbfile), "--visit", "V-OPEN-1", "--export", str(tmp_path / "f.csv")]
    )
    assert out.exit_code == 0, out.output
    with open(tmp_path / "f.csv", encoding="utf-8-sig", newline="") as fh:
        exported = {r["finding_id"]: r["prealert"] for r in csv.DictReader(fh)}
    assert exported[sex["finding_id"]] == ev[sex["finding_id"]]


# ---------------------------------------------------------------------------- in-process warnings


def test_in_process_warnings_are_stored_apart_and_claim_no_money(tmp_path):
    b = Batch()
    open_v = b.visit(settled=False, gend="1", med_type="21", begntime="2026-03-01 08:00:00", endtime="")
    b.line(open_v, UTERUS, pric="180")
    done = b.visit(gend="1")
    b.line(done, UTERUS, pric="180")
    con = db.connect(tmp_path / "t.duckdb")
    load_batch(b.write(tmp_path / "batch"), con)
    lib = load_library(write_rules(tmp_path / "rules", RULES))
    screen(con, lib, stage="in_process")
    warn = [f for f in findings(con) if f["rule_id"] == "R-SEX-001"]
    assert [(f["mdtrt_id"], f["stage"], f["status"]) for f in warn] == [(open_v, "in_process", "warning")]
    assert warn[0]["deduction_amt"] == 0 and all(c == 0 for c in warn[0]["carried"].values())
    screen(con, lib, stage="post_hoc")
    fs = {(f["stage"], f["mdtrt_id"]): f for f in findings(con) if f["rule_id"] == "R-SEX-001"}
    assert set(fs) == {("in_process", open_v), ("post_hoc", done)}
    assert fs[("post_hoc", done)]["deduction_amt"] == 180 and fs[("post_hoc", done)]["status"] == "pending_appeal"
    assert fs[("in_process", open_v)]["deduction_amt"] == 0 and fs[("in_process", open_v)]["status"] == "warning"
    # the hospital's appeal queue holds post-hoc findings only
    n_states = con.execute(
        "SELECT count(*) FROM finding_state s JOIN findings f USING (finding_id) "
        "WHERE f.stage = 'in_process' AND s.deadline IS NOT NULL"
    ).fetchall()[0][0]
    assert n_states == 0


def test_types_that_cannot_judge_one_order_are_refused_for_pre_alert(tmp_path):
    bad = """
    rules:
      - id: R-BED-9
        version: 1
        name: 床位天数
        type: bed_days_over_los
        stages: [pre_alert]
        items: {codes: ["001109000010000"]}
    """
    with pytest.raises(RuleLibraryError, match="cannot run at stage pre_alert"):
        load_library(write_rules(tmp_path / "r", bad))


def test_checks_from_memory_run_on_the_event_loop_and_the_others_in_threads(service):
    """A check that would wait on the database must not hold up every other request."""
    checker = service.app.state.checker
    seen, check = [], checker.check

    def spy(req, rule_set="default"):
        try:
            asyncio.get_running_loop()
            seen.append("event loop")
        except RuntimeError:
            seen.append("thread")
        return check(req, rule_set)

    checker.check = spy
    assert post(service, request([order("RX1", UTERUS)])).status_code == 200  # the visit's context is loaded
    assert post(service, request([order("RX2", UTERUS)])).status_code == 200  # now in memory
    # results stored as answered (--sync-results) are an INSERT: that too waits in a thread
    assert seen == ["thread", "event loop" if checker.writer is not None else "thread"]
    assert checker.fast.cache.loads == 1


def test_routing_skips_orders_no_rule_cares_about(service):
    checker = service.app.state.checker
    assert checker.hub.route("default", ["001102000010000"]) == []
    assert checker.hub.route("default", [EMERG_MON]) == ["duplicate_charge"]  # a pair's main code routes too
    assert checker.hub.route("default", [BED, UTERUS]) == ["frequency_limit", "restrict_gender"]
    assert copy.deepcopy(post(service, request([order("RX1", "001102000010000")])).json()["output"]["result"]) == []


def test_serve_key_and_serve_refusals(tmp_path):
    dbfile = tmp_path / "k.duckdb"
    db.connect(dbfile).close()
    runner = CliRunner()
    out = runner.invoke(cli_app, ["serve-key", "H009", "--db", str(dbfile)])
    assert out.exit_code == 0, out.output
    key = out.output.strip()
    con = db.connect(dbfile)
    assert store.KeyRing(con).institution(key) == "H009"
    assert store.KeyRing(con).institution(key + "x") is None
    con.close()
    out = runner.invoke(cli_app, ["serve", "--db", str(dbfile), "--rules", str(tmp_path / "nope")])
    assert out.exit_code == 2 and "nosuchrulelibrary" in "".join(out.output.split())
    rules = write_rules(tmp_path / "rules", RULES)
    out = runner.invoke(cli_app, ["serve", "--db", str(dbfile), "--rules", str(rules), "--rule-set", "oops"])
    assert out.exit_code == 2 and "NAME=PATH" in "".join(out.output.split())
    out = runner.invoke(cli_app, ["serve", "--db", str(tmp_path / "missing.duckdb"), "--rules", str(rules)])
    assert out.exit_code == 2 and "nosuchdatabase" in "".join(out.output.split())


WATCHED_RULES = (
    RULES
    + f"""
  - id: R-WATCH-001
    version: 1
    name: 重点监控医生：急诊监护限女性（测试用的更严规则）
    type: restrict_gender
    items: {{codes: ["{EMERG_MON}"]}}
    params: {{gender: 2}}
"""
)


def test_orders_of_a_watched_doctor_are_checked_with_the_watched_rule_set(tmp_path):
    """重点监控: `serve --watched-rule-set` checks the orders of doctors on the watchlist with a
    stricter rule set, whatever rule set the request asks for; other doctors, and the same doctor
    code at another institution, keep the one asked for."""
    import datetime as dt

    from medaudit.supervision import watch

    b = Batch()
    v = b.visit(mdtrt_id="V-HIST", psn_no="P-OPEN-1", med_type="11", fixmedins_code="H001", chfpdr_code="DR01")
    b.line(v, BED, bilg_dr_code="DR01")
    b.visit(mdtrt_id="V-H2", psn_no="P-H2", fixmedins_code="H002", chfpdr_code="DR01")
    con = loaded_db(b, tmp_path / "w.duckdb")
    watch.add(con, "H001/DR01", dt.date(2026, 3, 1), "王芳", "申诉驳回三次")
    libs = {
        "default": load_library(write_rules(tmp_path / "rules", RULES)),
        "strict": load_library(write_rules(tmp_path / "strict", WATCHED_RULES)),
    }
    with pytest.raises(ValueError, match="not one of the rule sets"):
        create_app(con, libs, {}, watched_rule_set="nope")
    app = create_app(con, libs, {store.key_hash(KEY1): "H001", store.key_hash(KEY2): "H002"}, watched_rule_set="strict")

    def rules_of(client, dr: str, key=KEY1, medins="H001", mdtrt="V-OPEN-1") -> set[str]:
        r = post(
            client, request([order("RX1", EMERG_MON, drord_dr_codg=dr)], medins_id=medins, mdtrt_id=mdtrt), key=key
        )
        assert r.status_code == 200, r.text
        return {x["rule_id"] for x in r.json()["output"]["result"]}

    with TestClient(app) as client:
        assert "R-WATCH-001" in rules_of(client, "DR01")  # watched: the strict set
        assert "R-WATCH-001" not in rules_of(client, "DR02")  # another doctor: the default set
        assert "R-WATCH-001" not in rules_of(client, "DR01", KEY2, "H002", "V-OPEN-2")  # DR01 of another hospital
    # the answers are stored (the writer is flushed when the service stops) with the rule set used
    assert con.execute("SELECT DISTINCT rule_set FROM prealert_results WHERE rule_id = 'R-WATCH-001'").fetchall() == [
        ("strict",)
    ]


def test_serve_refuses_an_unknown_watched_rule_set(tmp_path):
    b = Batch()
    b.visit(mdtrt_id="V1")
    db_path = tmp_path / "s.duckdb"
    loaded_db(b, db_path).close()
    r = CliRunner().invoke(
        cli_app,
        [
            "serve",
            "--db",
            str(db_path),
            "--rules",
            str(write_rules(tmp_path / "r", RULES)),
            "--watched-rule-set",
            "strict",
        ],
    )
    assert r.exit_code == 2 and "--watched-rule-set 'strict' is not a rule set" in " ".join(r.output.split()), r.output
