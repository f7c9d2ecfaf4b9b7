"""Attacks on the pre-alert service: another institution's visits, results and history, and
requests too large to be worth a check (the service's isolation and limits).

Each case runs on every path that can answer it: the SQL path, the fast path loading a visit's
context on first use, and the fast path with everything preloaded (``medaudit serve --preload``).
"""

from __future__ import annotations

import asyncio
import copy
import json

import orjson
import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from kit import Batch, loaded_db, write_rules
from medaudit.library import load_library
from medaudit.prealert import store
from medaudit.prealert.app import MAX_BODY, MAX_ORDERS, MAX_PATIENTS, MAX_WARNS, create_app
from test_prealert_api import BED, HBA1C, KEY1, KEY2, RULES, UTERUS, order, request

ENGINES = [("sql", False), ("fast", False), ("fast", True)]
IDS = ["sql", "fast-lazy", "fast-preload"]
KEYS = {store.key_hash(KEY1): "H001", store.key_hash(KEY2): "H002"}
SECRET_PRICE = "77.77"  # H002's prices: must never reach H001
PERIOD = f"""
  - {{id: R-PER-001, version: 1, name: 糖化血红蛋白15天限1次, type: period_limit, items: {{codes: ["{HBA1C}"]}},
     params: {{max_count: 1, period_days: 15}}}}
"""


def world(tmp_path):
    """H002's stored stays (one with a bed charged, one known only by its fee lines) and persons
    with HbA1c tests paid at H002 (and at H001) before H001 checks new orders."""
    b = Batch()
    stay = b.visit(
        mdtrt_id="V-B",
        psn_no="P-B",
        fixmedins_code="H002",
        med_type="21",
        begntime="2026-03-01 10:00:00",
        endtime=None,
        settled=False,
    )
    b.line(stay, BED, pric=SECRET_PRICE, time="2026-03-02 08:00:00", bkkp_sn="FEE-B-BED", hilist_name="乙院床位费")
    x = b.visit(
        mdtrt_id="V-XB",
        psn_no="P-X",
        fixmedins_code="H002",
        begntime="2026-03-01 08:00:00",
        endtime="2026-03-01 10:00:00",
    )
    b.line(x, HBA1C, pric=SECRET_PRICE, bkkp_sn="FEE-XB", hilist_name="乙院糖化血红蛋白")
    y = b.visit(
        mdtrt_id="V-YA",
        psn_no="P-Y",
        fixmedins_code="H001",
        begntime="2026-03-01 08:00:00",
        endtime="2026-03-01 10:00:00",
    )
    b.line(y, HBA1C, pric="45", bkkp_sn="FEE-YA")
    z = b.visit(
        mdtrt_id="V-ZB",
        psn_no="P-Z",
        fixmedins_code="H002",
        begntime="2026-03-10 08:00:00",
        endtime="2026-03-10 10:00:00",
    )
    b.line(z, HBA1C, pric=SECRET_PRICE, bkkp_sn="FEE-ZB", hilist_name="乙院糖化血红蛋白")
    con = loaded_db(b, tmp_path / "svc.duckdb")  # loaded once, copied for the next test
    # a stay of H002 the database knows only by fee lines uploaded before its visit record
    con.execute(
        """INSERT INTO fee_list_d (bkkp_sn, mdtrt_id, setl_id, psn_no, fixmedins_code, fee_ocur_time,
                   hilist_code, hilist_name, list_type, chrgitm_lv, cnt, pric, det_item_fee_sumamt)
                   VALUES ('FEE-B2-BED', 'V-B2', NULL, 'P-B2', 'H002', '2026-03-02 08:00:00', ?, '乙院床位费',
                           '201', '01', 1, ?, ?)""",
        [BED, SECRET_PRICE, SECRET_PRICE],
    )
    lib = load_library(write_rules(tmp_path / "rules", RULES + PERIOD))
    return con, lib


@pytest.fixture(params=ENGINES, ids=IDS)
def client(tmp_path, request):
    engine, preload = request.param
    con, lib = world(tmp_path)
    app = create_app(con, {"default": lib}, KEYS, engine=engine, preload=preload, async_results=True)
    with TestClient(app) as c:
        c.engine = engine
        yield c


def post(client, body, key=KEY1):
    return client.post("/prealert/3101", json=body, headers={"X-API-Key": key} if key else {})


def shown(res) -> str:
    return json.dumps(res, ensure_ascii=False)


def h001_results(client) -> list:
    return client.get("/prealert/results", headers={"X-API-Key": KEY1}).json()["result"]


# ---------------------------------------------------------------------------- another institution's visit


def test_a_stored_visit_of_another_institution_is_refused(client):
    bed = [order("B1", BED, "2026-03-02 18:00:00", pric="30")]
    for visit, psn in (("V-B", "P-B"), ("V-B2", "P-B2")):
        r = post(client, request(bed, mdtrt_id=visit, psn=psn))  # H001's key, H001 as the encounter's medins_id
        assert r.status_code == 403, r.text
        msg = r.json()["err_msg"]
        assert f"'{visit}'" in msg and "another institution" in msg and "H002" not in msg
        assert "FEE-B" not in r.text and SECRET_PRICE not in r.text
    assert h001_results(client) == []
    # the owner checks its stay as before: the bed already charged that day is the related item
    r = post(client, request(bed, mdtrt_id="V-B", medins_id="H002", psn="P-B"), key=KEY2)
    assert r.status_code == 200, r.text
    [res] = r.json()["output"]["result"]
    assert res["rule_id"] == "R-FRQ-001" and "FEE-B-BED" in shown(res)


def test_one_foreign_visit_refuses_the_whole_request_and_nothing_is_stored(client):
    body = request([order("RX1", UTERUS)], mdtrt_id="V-A-NEW", psn="P-A")
    patients = body["input"]["data"]["patient_dtos"]
    other = copy.deepcopy(patients[0])
    other.update(patn_id="P-B", curr_mdtrt_id="V-B")
    other["fsi_encounter_dtos"][0]["mdtrt_id"] = "V-B"
    patients.append(other)
    r = post(client, body)
    assert r.status_code == 403 and "patient_dtos.1.curr_mdtrt_id: visit 'V-B'" in r.json()["err_msg"]
    assert h001_results(client) == []  # the first patient's answer was not stored either


def test_the_messages_institution_must_be_the_keys(client):
    body = request([order("RX1", UTERUS)])
    body["fixmedins_code"] = "H002"  # the national envelope says H002, the encounter H001, the key H001
    r = post(client, body)
    assert r.status_code == 403 and "fixmedins_code 'H002'" in r.json()["err_msg"]
    body["fixmedins_code"] = "H001"
    assert post(client, body).status_code == 200


# ---------------------------------------------------------------------------- another institution's results


def test_feedback_and_results_of_another_institution_are_not_found(client):
    [res] = post(client, request([order("RX1", UTERUS)])).json()["output"]["result"]
    jr = res["jr_id"]
    [own] = post(
        client, request([order("RX9", UTERUS)], mdtrt_id="V-B9", medins_id="H002", psn="P-B9"), key=KEY2
    ).json()["output"]["result"]
    h2 = {"X-API-Key": KEY2}
    # H002 answers H001's result (alone, or next to one of its own): refused whole, nothing stored
    for warns in ([jr], [own["jr_id"], jr]):
        fb = {
            "warn_type": "1",
            "warns": [{"warn_rslt_id": w, "dspo_way": "1", "dspo_way_rea": "上级医师同意"} for w in warns],
        }
        r = client.post("/prealert/3103", json=fb, headers=h2)
        assert r.status_code == 404 and jr in r.json()["err_msg"], r.text
    assert client.get(f"/prealert/results/{jr}", headers=h2).status_code == 404
    assert [x["jr_id"] for x in client.get("/prealert/results", headers=h2).json()["result"]] == [own["jr_id"]]
    assert client.get("/prealert/results", headers=h2, params={"mdtrt_id": "V-OPEN-1"}).json()["result"] == []
    mine = client.get(f"/prealert/results/{jr}", headers={"X-API-Key": KEY1}).json()
    assert mine["feedback"] == []
    assert client.get(f"/prealert/results/{own['jr_id']}", headers=h2).json()["feedback"] == []


def test_wrong_or_missing_key(client):
    body = request([order("RX1", UTERUS)])
    for headers in ({}, {"X-API-Key": ""}, {"X-API-Key": KEY1 + "x"}, {"X-API-Key": KEY1.upper()}):
        assert client.post("/prealert/3101", json=body, headers=headers).status_code == 401
        assert (
            client.post(
                "/prealert/3103", headers=headers, json={"warns": [{"warn_rslt_id": "x", "dspo_way": "2"}]}
            ).status_code
            == 401
        )
        assert client.get("/prealert/results", headers=headers).status_code == 401
    assert h001_results(client) == []


# ---------------------------------------------------------------------------- history at other institutions


def test_history_at_other_institutions_says_only_when_it_was_paid(client):
    hba = [order("RX1", HBA1C, "2026-03-10 09:00:00", pric="45")]
    [res] = post(client, request(hba, mdtrt_id="V-XA", psn="P-X")).json()["output"]["result"]
    assert res["rule_id"] == "R-PER-001" and res["vola_amt"] == 45.0 and res["mdtrt_id"] == "V-XA"
    assert res["vola_cont"] == (
        "项目【项目0000】(002503020070000) 每 15 天限 1 次；2026-03-10 收费 1 次，金额 45.00 元，"
        "超出 1；此前 15 天内已支付：2026-03-01 其他机构"
    )
    assert [(d["rx_id"], d["vola_item_type"]) for d in res["judge_result_detail_dtos"]] == [("RX1", "1")]
    for secret in ("FEE-XB", "V-XB", "H002", SECRET_PRICE, "乙院"):
        assert secret not in shown(res)
    # what was stored (and is read back) is the answer given
    assert (
        client.get(f"/prealert/results/{res['jr_id']}", headers={"X-API-Key": KEY1}).json()["vola_cont"]
        == res["vola_cont"]
    )
    # the institution's own history is shown as it is
    [res] = post(client, request(hba, mdtrt_id="V-YA2", psn="P-Y")).json()["output"]["result"]
    assert res["vola_cont"].endswith("此前 15 天内已支付：2026-03-01 H001 就诊 V-YA")
    assert [(d["rx_id"], d["vola_item_type"]) for d in res["judge_result_detail_dtos"]] == [
        ("FEE-YA", "2"),
        ("RX1", "1"),
    ]


def test_an_order_dated_before_a_unit_paid_elsewhere_does_not_show_that_unit(client):
    """An order dated before H002's paid test makes H002's test the excess one: the finding is
    H002's line, so H001 learns only that the item was paid elsewhere, and when."""
    early = [order("RX1", HBA1C, "2026-03-05 09:00:00", pric="45")]
    r = post(client, request(early, mdtrt_id="V-ZA", psn="P-Z"))
    assert r.status_code == 200, r.text
    for res in r.json()["output"]["result"]:
        for secret in ("FEE-ZB", "V-ZB", "H002", SECRET_PRICE, "乙院"):
            assert secret not in shown(res)
        assert res["mdtrt_id"] == "V-ZA" and res["vola_amt"] == 0.0
        assert res["vola_cont"] == "糖化血红蛋白15天限1次：涉及其他机构已结算的收费（2026-03-10）"
        assert all(d["vola_item_type"] == "2" and d["rx_id"] == "RX1" for d in res["judge_result_detail_dtos"])
    assert len(r.json()["output"]["result"]) == 1


# ---------------------------------------------------------------------------- limits


async def _call(app, headers: dict, chunks, path="/prealert/3101") -> tuple[int, dict, int]:
    """One request straight through the ASGI app: (status, JSON body, chunks the app read)."""
    pulled = 0
    it = iter(chunks)
    out: dict = {"body": b""}

    async def receive():
        nonlocal pulled
        try:
            chunk = next(it)
        except StopIteration:
            return {"type": "http.request", "body": b"", "more_body": False}
        pulled += 1
        return {"type": "http.request", "body": chunk, "more_body": True}

    async def send(message):
        if message["type"] == "http.response.start":
            out["status"] = message["status"]
        elif message["type"] == "http.response.body":
            out["body"] += message.get("body", b"")

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()],
        "client": ("127.0.0.1", 1234),
        "server": ("testserver", 80),
    }
    await app(scope, receive, send)
    return out["status"], orjson.loads(out["body"]), pulled


CHUNK = 64 * 1024


def sixty_mb():
    """60 MB of JSON-ish bytes, made a chunk at a time as they are read (never all at once)."""
    yield b'{"trig_scen": "5", "patient_dtos": [' + b" " * (CHUNK - 36)
    for _ in range(60 * 1024 * 1024 // CHUNK):
        yield b" " * CHUNK


@pytest.mark.parametrize("path", ["/prealert/3101", "/prealert/3103"])
def test_a_60_mb_body_is_refused_before_it_is_read(client, path):
    app = client.app
    key = {"X-API-Key": KEY1, "Content-Type": "application/json"}
    # by its Content-Length: answered at once, nothing read
    status, body, pulled = asyncio.run(_call(app, {**key, "Content-Length": str(60 * 1024 * 1024)}, sixty_mb(), path))
    assert (status, pulled) == (413, 0) and f"{MAX_BODY:,} bytes" in body["err_msg"]
    # streamed without a length, or with a false one: cut off once the limit is passed
    for headers in (key, {**key, "Content-Length": "100"}):
        status, body, pulled = asyncio.run(_call(app, headers, sixty_mb(), path))
        assert status == 413 and body["infcode"] == -1, body
        assert pulled * CHUNK <= MAX_BODY + CHUNK
    # a bad Content-Length is a 400, not a 500
    status, body, pulled = asyncio.run(_call(app, {**key, "Content-Length": "lots"}, [b"{}"], path))
    assert status == 400 and pulled == 0


def test_limits_are_the_services_to_choose(tmp_path):
    con, lib = world(tmp_path)
    app = create_app(con, {"default": lib}, KEYS, max_body=4000, max_patients=2, max_orders=3, max_warns=1)
    body = request([order(f"RX{i}", UTERUS) for i in range(3)])
    with TestClient(app) as c:
        assert len(json.dumps(body)) < 4000 and post(c, body).status_code == 200
        body["input"]["data"]["patient_dtos"][0]["fsi_encounter_dtos"][0]["fsi_order_dtos"].append(order("RX3", UTERUS))
        r = post(c, body)
        assert r.status_code == 422 and r.json()["err_msg"].startswith(
            "patient_dtos.0.fsi_encounter_dtos.0.fsi_order_dtos: 4 orders in this request; at most 3"
        )
        big = request([order("RX1", UTERUS, hilist_name="长" * 2000)])
        assert post(c, big).status_code == 413
        fb = {"warns": [{"warn_rslt_id": "a", "dspo_way": "2"}, {"warn_rslt_id": "b", "dspo_way": "2"}]}
        r = c.post("/prealert/3103", json=fb, headers={"X-API-Key": KEY1})
        assert r.status_code == 422 and r.json()["err_msg"].startswith("warns: 2 answers in this request; at most 1")
    with pytest.raises(ValueError, match="max_orders must be a positive whole number"):
        create_app(con, {"default": lib}, KEYS, max_orders=0)


def many_patients(n: int, code: str = UTERUS) -> dict:
    body = request([order("RX1", code)])
    [p] = body["input"]["data"]["patient_dtos"]
    patients = []
    for i in range(n):
        q = copy.deepcopy(p)
        q.update(patn_id=f"P-MANY-{i}", curr_mdtrt_id=f"V-MANY-{i}")
        q["fsi_encounter_dtos"][0]["mdtrt_id"] = f"V-MANY-{i}"
        patients.append(q)
    body["input"]["data"]["patient_dtos"] = patients
    return body


def test_200_patients_are_refused_naming_the_field(client):
    r = post(client, many_patients(200))
    assert r.status_code == 422, r.text[:300]
    assert r.json()["err_msg"] == (
        f"patient_dtos: 200 patients in this request; at most {MAX_PATIENTS} "
        "(the service's limit, medaudit serve --max-patients)"
    )
    assert r.json()["detail"][0]["field"] == "patient_dtos"
    assert h001_results(client) == []
    assert post(client, many_patients(MAX_PATIENTS, "001102000010000")).status_code == 200  # no rule cares: quick


def test_too_many_orders_are_refused_naming_the_field(client):
    orders = [order(f"RX{i}", "001102000010000", cur=0) for i in range(MAX_ORDERS)] + [order("RXN", UTERUS)]
    r = post(client, request(orders))
    assert r.status_code == 422
    assert r.json()["err_msg"].startswith(
        f"patient_dtos.0.fsi_encounter_dtos.0.fsi_order_dtos: {MAX_ORDERS + 1:,} orders in this request; "
        f"at most {MAX_ORDERS:,}"
    )
    # spread over patients: the request's total counts
    body = many_patients(MAX_PATIENTS)
    per = MAX_ORDERS // MAX_PATIENTS + 1
    for p in body["input"]["data"]["patient_dtos"]:
        p["fsi_encounter_dtos"][0]["fsi_order_dtos"] = [order(f"RX{i}", "001102000010000") for i in range(per)]
    r = post(client, body)
    assert (
        r.status_code == 422 and r.json()["detail"][0]["field"] == "patient_dtos.*.fsi_encounter_dtos.*.fsi_order_dtos"
    )
    assert h001_results(client) == []


def test_serve_passes_its_limits_to_the_service(tmp_path, monkeypatch):
    import uvicorn

    from medaudit.cli import app as cli_app
    from medaudit.prealert import app as app_module

    con, _lib = world(tmp_path)
    con.close()
    got = {}
    real = app_module.create_app

    def spy(*args, **kw):
        got.update(kw)
        return real(*args, **kw)

    monkeypatch.setattr(app_module, "create_app", spy)
    monkeypatch.setattr(uvicorn, "run", lambda *a, **kw: None)
    rules = str(tmp_path / "rules")
    args = ["serve", "--db", str(tmp_path / "svc.duckdb"), "--rules", rules]
    out = CliRunner().invoke(cli_app, args)
    assert out.exit_code == 0, out.output
    assert (got["max_body"], got["max_patients"], got["max_orders"], got["max_warns"]) == (
        MAX_BODY,
        MAX_PATIENTS,
        MAX_ORDERS,
        MAX_WARNS,
    )
    out = CliRunner().invoke(
        cli_app, args + ["--max-body", "1000", "--max-patients", "1", "--max-orders", "5", "--max-warns", "7"]
    )
    assert out.exit_code == 0, out.output
    assert (got["max_body"], got["max_patients"], got["max_orders"], got["max_warns"]) == (1000, 1, 5, 7)
    out = CliRunner().invoke(cli_app, args + ["--max-orders", "0"])
    assert out.exit_code == 2
