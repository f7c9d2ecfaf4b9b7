"""Pre-alert: the path is chosen per rule type, and both paths' hits become alerts one way."""

from __future__ import annotations

from decimal import Decimal
from types import SimpleNamespace

from fastapi.testclient import TestClient

from kit import Batch, write_rules
from medaudit import db
from medaudit.library import load_library
from medaudit.loader import load_batch
from medaudit.prealert import store
from medaudit.prealert.alerts import TAG, Hit, LineInfo, alerts_of
from medaudit.prealert.app import create_app
from test_prealert_api import KEY1, RULES, UTERUS, order, request

# a type with an evaluator (restrict_gender, in RULES) and one without (gender_diagnosis_conflict)
MIXED = (
    RULES
    + """
  - id: R-GDX-001
    version: 1
    name: 患者性别与诊断不符
    type: gender_diagnosis_conflict
    stages: [pre_alert, post_hoc]
    params: {female_prefixes: [O00-O9A], male_prefixes: [N40-N53]}
"""
)


def _answers(tmp_path, engine: str):
    b = Batch()
    b.visit(mdtrt_id="V-HIST", psn_no="P-OPEN-1", med_type="11", fixmedins_code="H001")
    con = db.connect(tmp_path / f"{engine}.duckdb")
    load_batch(b.write(tmp_path / f"batch-{engine}"), con)
    lib = load_library(write_rules(tmp_path / f"rules-{engine}", MIXED))
    app = create_app(con, {"default": lib}, {store.key_hash(KEY1): "H001"}, engine=engine)
    body = request([order("RX1", UTERUS), order("RX2", "001109000010000")])
    dx = body["input"]["data"]["patient_dtos"][0]["fsi_encounter_dtos"][0]
    dx["dscg_main_dise_codg"] = "O80.000"  # a man with a childbirth diagnosis
    dx["fsi_diagnose_dtos"][0]["dise_codg"] = "O80.000"
    with TestClient(app) as client:
        r = client.post("/prealert/3101", json=body, headers={"X-API-Key": KEY1})
        assert r.status_code == 200, r.text
        results = sorted(
            (
                x["rule_id"],
                x["vola_cont"],
                x["vola_amt"],
                [(d["rx_id"], d["vola_item_type"], d["vola_amt"]) for d in x["judge_result_detail_dtos"]],
            )
            for x in r.json()["output"]["result"]
        )
        return r.headers["X-Medaudit-Engine"], results, dict(app.state.checker.answered)


def test_types_with_an_evaluator_answer_in_memory_the_others_by_sql_in_the_same_request(tmp_path):
    path, fast, answered = _answers(tmp_path, "fast")
    assert path == "fast+sql" and answered == {"fast": 0, "sql": 0, "fast+sql": 1}
    sql_path, sql, _ = _answers(tmp_path, "sql")
    assert sql_path == "sql"
    assert [r[0] for r in fast] == ["R-GDX-001", "R-SEX-001"]  # one alert from each path
    assert fast == sql  # the same whole answer as the SQL path alone


def _rule(rid: str):
    return SimpleNamespace(id=rid, version="1", name=rid, type="t", severity="violation", nature="n", basis="b")


def test_hits_of_a_line_are_one_item_and_only_a_newly_violating_line_is_violating():
    new, old, ctx = "RX9" + TAG + "0", "L1", "L2"
    hits = [
        # two hits of the new order in one finding: one item, the largest claim, both evidence lines
        Hit(0, "V1", "V1", new, "violating", Decimal("5.004"), "头", "甲"),
        Hit(0, "V1", "V1", new, "violating", Decimal("7.005"), None, "乙"),
        # a line violating before the new order, with the same claim: not an item
        Hit(0, "V1", "V1", old, "violating", Decimal("3"), None, "丙"),
        Hit(0, "V1", "V1", ctx, "related", Decimal("0"), None, None),
        # a finding no new order takes part in: not reported
        Hit(0, "V2", "V2", "L7", "violating", Decimal("1"), "", "丁"),
    ]
    line = {sn: LineInfo(None, "P1", "C", "H001", "V1", None) for sn in (new, old, ctx)}
    [(req_no, a)] = alerts_of([_rule("R1")], hits, line, {(0, old): Decimal("3.00")}, {new}, {new})
    assert req_no == 0 and a.rule_id == "R1" and a.finding_key == "V1"
    assert [(i.bkkp_sn, i.role, i.claim, i.is_new) for i in a.items] == [
        ("L2", "related", Decimal("0"), False),
        ("RX9", "violating", Decimal("7.01"), True),
    ]
    assert a.amount == Decimal("7.01") and a.evidence == "头；甲；乙" and a.psn_no == "P1"


def test_a_duplicate_charge_names_its_main_item_from_the_item_table_on_both_paths(tmp_path):
    """The main order carries no name: both paths take 主项名称 from the rule's item table, as batch does."""
    from test_prealert_api import EMERG_CONS, EMERG_MON

    rules = """
rules:
  - id: R-DUP-001
    version: 1
    name: 急诊监护费含诊查费
    type: duplicate_charge
    items: {table: pairs.csv}
"""
    table = f"code,name,main_code,main_name,window\n{EMERG_CONS},急诊诊查费,{EMERG_MON},急诊监护费,same_day\n"
    answers = {}
    for engine in ("fast", "sql"):
        b = Batch()
        b.visit(mdtrt_id="V-HIST", psn_no="P-OPEN-1", med_type="11", fixmedins_code="H001")
        con = db.connect(tmp_path / f"{engine}.duckdb")
        load_batch(b.write(tmp_path / f"batch-{engine}"), con)
        lib = load_library(write_rules(tmp_path / f"rules-{engine}", rules, {"pairs.csv": table}))
        app = create_app(con, {"default": lib}, {store.key_hash(KEY1): "H001"}, engine=engine)
        body = request(
            [
                order("RX1", EMERG_MON, cur=0, hilist_name="", when="2026-03-02 08:00:00"),
                order("RX2", EMERG_CONS, pric="12", when="2026-03-02 09:30:00"),
            ]
        )
        with TestClient(app) as client:
            r = client.post("/prealert/3101", json=body, headers={"X-API-Key": KEY1})
            assert r.status_code == 200, r.text
            answers[engine] = [x["vola_cont"] for x in r.json()["output"]["result"]]
    assert answers["fast"] == answers["sql"] and len(answers["fast"]) == 1, answers
    assert "已包含在 项目【急诊监护费】(001103000010000)" in answers["fast"][0], answers
