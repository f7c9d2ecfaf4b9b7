"""The pre-alert service takes what hospital systems actually send (tests/fixtures/his/): compact
dates, "" for absent fields, single objects where lists are expected, unknown fields, operations.
Each fixture states the alerts it must get; both engines answer every one."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from kit import Batch, write_rules
from medaudit import db
from medaudit.library import load_library
from medaudit.loader import load_batch
from medaudit.prealert import store
from medaudit.prealert.app import create_app
from medaudit.prealert.schemas import Request3101
from test_prealert_api import KEY1, RULES, order, request

FIXTURES = sorted((Path(__file__).parent / "fixtures" / "his").glob("*.json"))
ANAES = "003302000010000"

SURGERY = f"""
rules:
  - id: R-OPR-001
    version: 1
    name: 全身麻醉费无手术操作
    type: sql
    nature: 不合理收费
    params:
      query: |
        SELECT l.bkkp_sn, '本次就诊无手术操作记录' AS evidence FROM lines l
        WHERE l.hilist_code = '{ANAES}'
          AND NOT EXISTS (SELECT 1 FROM setl_list_oprn_d o WHERE o.mdtrt_id = l.mdtrt_id)
"""


@pytest.fixture(scope="module", params=["fast", "sql"])
def his(tmp_path_factory, request):
    tmp = tmp_path_factory.mktemp("his")
    b = Batch()
    b.visit(mdtrt_id="V-HIST", psn_no="P-OPEN-1", med_type="11", fixmedins_code="H001")
    con = db.connect(tmp / "svc.duckdb")
    load_batch(b.write(tmp / "batch"), con)
    libs = {
        "default": load_library(write_rules(tmp / "rules", RULES)),
        "surgery": load_library(write_rules(tmp / "surgery", SURGERY)),
    }
    app = create_app(con, libs, {store.key_hash(KEY1): "H001"}, engine=request.param)
    with TestClient(app) as client:
        client.engine = request.param
        yield client


def post(client, body, **params):
    return client.post("/prealert/3101", json=body, headers={"X-API-Key": KEY1}, params=params)


@pytest.mark.parametrize("path", FIXTURES, ids=[p.stem for p in FIXTURES])
def test_each_vendors_request_gets_its_alerts(his, path):
    case = json.loads(path.read_text(encoding="utf-8"))
    r = post(his, case["request"], rule_set=case["rule_set"])
    assert r.status_code == 200, r.text
    got = r.json()["output"]["result"]
    assert len(got) == len(case["expect"]), got
    for res, want in zip(sorted(got, key=lambda x: x["rule_id"]), case["expect"]):
        assert res["rule_id"] == want["rule_id"]
        assert [d["rx_id"] for d in res["judge_result_detail_dtos"] if d["vola_item_type"] == "1"] == want["violating"]
        assert float(res["vola_amt"]) == want["vola_amt"]
        assert want["vola_cont_has"] in res["vola_cont"], res["vola_cont"]


def test_fixtures_cover_the_shapes_vendors_send():
    text = "".join(p.read_text(encoding="utf-8") for p in FIXTURES)
    for shape in (
        '"patient_dtos": {',
        '"fsi_encounter_dtos": {',
        '"fsi_order_dtos": {',
        '"fsi_diagnose_dtos": {',
        '"fsi_operation_dtos": {',
        '"insutype": ""',
        '"drord_stop_date": ""',
        '"20261201142552"',
    ):
        assert shape in text, shape


def test_compact_dates_are_read_as_dates_and_local_time():
    data = request([order("RX1", "X", when="20261201142552")], envelope=False)
    enc = data["patient_dtos"][0]["fsi_encounter_dtos"][0]
    enc["adm_date"] = "20261201"
    data["patient_dtos"][0]["brdy"] = "19700505"
    p = Request3101.model_validate(data).patient_dtos[0]
    e = p.current()
    assert str(e.fsi_order_dtos[0].drord_begn_date) == "2026-12-01 14:25:52"
    assert str(e.adm_date) == "2026-12-01 00:00:00" and str(p.brdy) == "1970-05-05"


@pytest.mark.parametrize("value", [1764599152, "1764599152", 20261201142552.0, "2026120114", True])
def test_a_number_is_never_read_as_a_unix_timestamp(his, value):
    data = request([order("RX1", "002101030300000", drord_begn_date=value)], envelope=False)
    r = post(his, data)
    assert r.status_code == 422, r.text
    msg = r.json()["err_msg"]
    assert "fsi_order_dtos.0.drord_begn_date" in msg and "not" in msg, msg


def test_absent_required_date_is_still_refused(his):
    data = request([order("RX1", "002101030300000", drord_begn_date="")], envelope=False)
    r = post(his, data)
    assert r.status_code == 422 and "fsi_order_dtos.0.drord_begn_date" in r.json()["err_msg"]


def test_operations_reach_the_sql_path_context(his):
    base = request([order("RX1", ANAES, pric="800")], envelope=False)
    assert [x["rule_id"] for x in post(his, base, rule_set="surgery").json()["output"]["result"]] == ["R-OPR-001"]
    base["patient_dtos"][0]["fsi_encounter_dtos"][0]["fsi_operation_dtos"] = [
        {"oprn_oprt_code": "47.0100x001", "oprn_oprt_name": "阑尾切除术", "oprn_oprt_date": "2026-03-02 10:00:00"}
    ]
    r = post(his, base, rule_set="surgery")
    assert r.status_code == 200 and r.json()["output"]["result"] == []


TWICE = (
    RULES
    + """
  - id: NHSA-B1-ITEM-GENDER
    version: 1
    name: 限定性别的诊疗项目（国家第一批）
    type: restrict_gender
    basis: 国家医保局 第一批智能监管规则 限性别
    items: {codes: ["002101030300000"]}
    params: {gender: 2}
"""
)


@pytest.mark.parametrize("engine", ["fast", "sql"])
def test_identical_alerts_of_several_rules_are_one_listing_every_rule(tmp_path, engine):
    con = db.connect(tmp_path / "svc.duckdb")
    b = Batch()
    b.visit(mdtrt_id="V-HIST", psn_no="P-OPEN-1", med_type="11", fixmedins_code="H001")
    load_batch(b.write(tmp_path / "batch"), con)
    app = create_app(
        con,
        {"default": load_library(write_rules(tmp_path / "rules", TWICE))},
        {store.key_hash(KEY1): "H001"},
        engine=engine,
    )
    with TestClient(app) as client:
        r = post(
            client,
            request(
                [order("RX1", "002101030300000"), order("RX2", "001109000010000"), order("RX3", "001109000010000")]
            ),
        )
        assert r.status_code == 200 and r.headers["X-Medaudit-Engine"] == engine
        got = r.json()["output"]["result"]
        assert sorted(x["rule_id"] for x in got) == ["R-FRQ-001", "R-SEX-001"]  # the bed fee stays its own
        [sex] = [x for x in got if x["rule_id"] == "R-SEX-001"]
        assert [x["rule_id"] for x in sex["rules"]] == ["R-SEX-001", "NHSA-B1-ITEM-GENDER"]
        assert "国家医保局第一批" in sex["vola_evid"] and "第一批智能监管规则 限性别" in sex["vola_evid"]
        assert sex["rule_name"] == "限女性使用的检查项目；限定性别的诊疗项目（国家第一批）"
        assert [d["rx_id"] for d in sex["judge_result_detail_dtos"]] == ["RX1"] and sex["vola_amt"] == 180.0
        stored = client.get(f"/prealert/results/{sex['jr_id']}", headers={"X-API-Key": KEY1}).json()
        assert stored["rule_ids"] == ["R-SEX-001", "NHSA-B1-ITEM-GENDER"]
        fb = client.post(
            "/prealert/3103",
            json={"warns": [{"warn_rslt_id": sex["jr_id"], "dspo_way": "2"}]},
            headers={"X-API-Key": KEY1},
        )
        assert fb.status_code == 200, fb.text


@pytest.mark.parametrize("mode", ["durable", "python"])
def test_event_layer_answers_the_same_without_durable_rules(tmp_path, monkeypatch, mode):
    from medaudit.prealert import events

    if mode == "durable" and not events.DURABLE:
        pytest.skip("durable-rules does not import on this Python: the plain-Python rules are the only ones")
    monkeypatch.setenv("MEDAUDIT_EVENTS", "python" if mode == "python" else "")
    lib = load_library(write_rules(tmp_path / "rules", RULES))
    seen = []
    hub = events.EventHub(
        {"default": events.Router([r for r in lib.rules if "pre_alert" in r.stages])},
        on_feedback=lambda d: seen.append(d) or d,
    )
    assert hub.durable is (mode == "durable")
    assert hub.route("default", ["002101030300000"]) == ["restrict_gender"]
    assert hub.route("default", ["001103000010000"]) == ["duplicate_charge"]  # a main_code named as a parameter
    assert hub.route("default", ["NOT-A-RULE-ITEM"]) == []
    assert hub.route("default", []) == []
    assert (
        hub.feedback("J1", "1", "病情需要，上级医师已审核", "1", "H001")["dspo_way_rea"] == "病情需要，上级医师已审核"
    )
    assert hub.feedback("J2", "1", "", "1", "H001") is None  # continue without a reason: no rule takes it
    assert hub.feedback("J3", "2", None, "2", "H001") == {
        "jr_id": "J3",
        "dspo_way": "2",
        "dspo_way_rea": None,
        "warn_type": "2",
        "fixmedins_code": "H001",
    }
    assert hub.feedback("J4", "3", "x", "1", "H001") is None
    assert [d["jr_id"] for d in seen] == ["J1", "J3"]


def test_one_answer_to_a_collapsed_alert_reaches_each_rules_post_hoc_finding(tmp_path):
    from medaudit.engine import screen

    lib = load_library(write_rules(tmp_path / "rules", TWICE))
    con = db.connect(tmp_path / "m.duckdb")
    b0 = Batch()
    b0.visit(mdtrt_id="V-HIST", psn_no="P-OPEN-1", fixmedins_code="H001")
    load_batch(b0.write(tmp_path / "b0"), con)
    with TestClient(create_app(con, {"default": lib}, {store.key_hash(KEY1): "H001"})) as client:
        [res] = post(client, request([order("RX1", "002101030300000")])).json()["output"]["result"]
        assert len(res["rules"]) == 2
        assert (
            client.post(
                "/prealert/3103",
                headers={"X-API-Key": KEY1},
                json={
                    "warns": [
                        {"warn_rslt_id": res["jr_id"], "dspo_way": "1", "dspo_way_rea": "病情需要，已经上级医师审核"}
                    ]
                },
            ).status_code
            == 200
        )
    b = Batch()
    v = b.visit(
        mdtrt_id="V-OPEN-1",
        psn_no="P-OPEN-1",
        fixmedins_code="H001",
        med_type="21",
        begntime="2026-03-01 10:00:00",
        endtime="2026-03-05 10:00:00",
    )
    b.line(v, "002101030300000", pric="180", time="2026-03-02 09:30:00")
    load_batch(b.write(tmp_path / "b1"), con)
    screen(con, lib, stage="post_hoc")
    ev = store.evidence_for(con)
    ids = dict(con.execute("SELECT rule_id, finding_id FROM findings WHERE mdtrt_id = 'V-OPEN-1'").fetchall())
    assert set(ids) == {"R-SEX-001", "NHSA-B1-ITEM-GENDER"}
    for rule_id, fid in ids.items():
        assert ev[fid].endswith("医生选择继续执行，理由：病情需要，已经上级医师审核"), rule_id


def test_an_impossible_compact_date_is_refused_naming_the_field(his):
    data = request([order("RX1", "002101030300000", drord_begn_date="20261301142552")], envelope=False)
    data["patient_dtos"][0]["brdy"] = "19700230"
    r = post(his, data)
    assert r.status_code == 422, r.text
    msg = r.json()["err_msg"]
    assert "fsi_order_dtos.0.drord_begn_date" in msg and "month" in msg and "patient_dtos.0.brdy" in msg, msg
