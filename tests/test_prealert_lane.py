"""The 3101 lane (:class:`medaudit.prealert.app.Lane3101`) answers exactly as the FastAPI route.

The same requests go, as raw ASGI calls (so headers, chunked bodies and disconnects are what the
test says), through a service with the lane and one without it (``create_app(lane=False)``), each
over its own copy of the same database: every answer must have the same status, the same header
list and the same body bytes (result and task ids, random by design, masked to a same-length
placeholder), and ``/metrics`` must count the same requests under the same route and institution
labels. The requests cover every way a 3101 call is answered: results with and without alerts, a
bad, missing, empty or repeated key, rule sets named, unknown, blank or twice, bad JSON, a bad
schema, too many patients or orders, another institution's visit or code, each 4xx the check
itself raises, bodies over the limit (declared or streamed), a bad Content-Length, the wrong
method, a trailing slash, a root path, a client gone mid-body, and 503 from admission and from
the database gate. Each runs on the path that checks from memory on the event loop and on the one
through the database gate and the thread pool.
"""

from __future__ import annotations

import asyncio
import copy
import json
import re
import threading

import pytest
from fastapi.testclient import TestClient

from kit import Batch, loaded_db, write_rules
from medaudit.library import load_library
from medaudit.prealert import store
from medaudit.prealert.app import create_app
from test_prealert_api import KEY1, KEY2, RULES, UTERUS, order, request

KEYS = {store.key_hash(KEY1): "H001", store.key_hash(KEY2): "H002"}
LIMITS = {"max_body": 8000, "max_patients": 2, "max_orders": 3}
#: (engine, results stored in the background): the check from memory on the event loop, or
#: through the database gate in the thread pool (the SQL path, results stored as answered)
PATHS = {"inline": ("fast", True), "thread-pool": ("sql", False)}
#: result ids (store.new_id) and task ids (uuid4): 32 hex digits, random in every answer
IDS = re.compile(rb"[0-9a-f]{32}")


def services(tmp_path, engine: str, async_results: bool, **kw):
    """Two services over copies of one database (a stored visit of each institution): with the
    lane and without it."""
    b = Batch()
    b.visit(mdtrt_id="V-HIST", psn_no="P-OPEN-1", med_type="11", fixmedins_code="H001")
    b.visit(mdtrt_id="V-H2", psn_no="P-H2", fixmedins_code="H002")
    lib = load_library(write_rules(tmp_path / "rules", RULES))
    out = {}
    for lane in (True, False):
        con = loaded_db(b, tmp_path / f"lane-{lane}.duckdb")
        out[lane] = create_app(
            con, {"default": lib}, KEYS, engine=engine, async_results=async_results, lane=lane, **{**LIMITS, **kw}
        )
    return out


async def call(
    app,
    method: str = "POST",
    path: str = "/prealert/3101",
    query: bytes = b"",
    headers: list[tuple[bytes, bytes]] | None = None,
    chunks: list[bytes] | None = None,
    disconnect: bool = False,
    root_path: str = "",
) -> dict:
    """One request as uvicorn hands it to the app: the answer's status, header list and body,
    the exception the app raised (if any), and whether FastAPI's router saw the request."""
    chunks = [b""] if chunks is None else chunks
    messages = [{"type": "http.request", "body": c, "more_body": i < len(chunks) - 1} for i, c in enumerate(chunks)]
    if disconnect:  # the client goes away before the body's end
        messages = [{**m, "more_body": True} for m in messages]
    out: dict = {"status": None, "headers": None, "body": b"", "raised": None}

    async def receive():
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    async def send(message):
        if message["type"] == "http.response.start":
            out["status"], out["headers"] = message["status"], list(message.get("headers", []))
        elif message["type"] == "http.response.body":
            out["body"] += message.get("body", b"")

    scope = {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.4"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": root_path + path,
        "raw_path": (root_path + path).encode(),
        "query_string": query,
        "root_path": root_path,
        "headers": [(b"host", b"testserver"), *(headers or [])],
        "client": ("127.0.0.1", 1234),
        "server": ("testserver", 80),
        "state": {},
    }
    try:
        await app(scope, receive, send)
    except Exception as e:  # noqa: BLE001 - what escapes the app (ServerErrorMiddleware re-raises) is compared
        out["raised"] = type(e).__name__
    out["routed"] = "route" in scope
    return out


def answer(result: dict) -> tuple:
    """What the client sees, result and task ids masked."""
    return result["status"], result["headers"], IDS.sub(b"x" * 32, result["body"]), result["raised"]


def js(data) -> list[bytes]:
    return [json.dumps(data).encode()]


def key(k: str = KEY1) -> list[tuple[bytes, bytes]]:
    return [(b"content-type", b"application/json"), (b"x-api-key", k.encode())]


def cases() -> dict[str, dict]:
    """Name -> the keyword arguments of :func:`call` (all but the app)."""
    ok = request([order("RX1", UTERUS)])
    quiet = request([order("RX1", UTERUS)], gend="2")
    four = request([order(f"RX{i}", UTERUS) for i in range(4)])
    three_patients = request([order("RX1", UTERUS)])
    [p] = three_patients["input"]["data"]["patient_dtos"]
    three_patients["input"]["data"]["patient_dtos"] = [copy.deepcopy(p) for _ in range(3)]
    no_cnt = request([order("RX1", UTERUS)], envelope=False)
    no_cnt["patient_dtos"][0]["fsi_encounter_dtos"][0]["fsi_order_dtos"][0].pop("cnt")
    no_orders = request([], envelope=False)
    twice = request([order("RX1", UTERUS), order("RX1", UTERUS)])
    unknown_rule = request([order("RX1", UTERUS)], envelope=False)
    unknown_rule["rule_ids"] = ["R-NOPE"]
    other_code = request([order("RX1", UTERUS)])
    other_code["fixmedins_code"] = "H002"
    big = js(request([order("RX1", UTERUS, hilist_name="长" * 3000)]))[0]
    return {
        "alert": {"headers": key(), "chunks": js(ok)},
        "alert, body in chunks": {"headers": key(), "chunks": [js(ok)[0][:100], b"", js(ok)[0][100:]]},
        "no alert": {"headers": key(), "chunks": js(quiet)},
        "rule_set named": {"query": b"rule_set=default", "headers": key(), "chunks": js(ok)},
        "rule_set twice, the last counts": {
            "query": b"rule_set=nope&rule_set=default",
            "headers": key(),
            "chunks": js(ok),
        },
        "rule_set twice, the last unknown": {
            "query": b"rule_set=default&rule_set=nope",
            "headers": key(),
            "chunks": js(ok),
        },
        "rule_set blank": {"query": b"rule_set=", "headers": key(), "chunks": js(ok)},
        "rule_set unknown": {"query": b"rule_set=provincial&x=1", "headers": key(), "chunks": js(ok)},
        "rule_set escaped": {"query": b"rule_set=%E7%9C%81%ff+x", "headers": key(), "chunks": js(ok)},
        "other query only": {"query": b"ruleset=nope", "headers": key(), "chunks": js(ok)},
        "bad key": {"headers": key("not-a-key-at-all-xx"), "chunks": js(ok)},
        "missing key": {"headers": [(b"content-type", b"application/json")], "chunks": js(ok)},
        "empty key": {"headers": key(""), "chunks": js(ok)},
        "two keys, the first bad": {"headers": [*key("not-a-key-at-all-xx"), *key()[1:]], "chunks": js(ok)},
        "two keys, the first good": {"headers": [*key(), *key("not-a-key-at-all-xx")[1:]], "chunks": js(ok)},
        "bad key and unknown rule set": {
            "query": b"rule_set=x",
            "headers": key("nope-nope-nope-nope"),
            "chunks": js(ok),
        },
        "invalid JSON": {"headers": key(), "chunks": [b"{not json"]},
        "empty body": {"headers": key()},
        "a JSON list": {"headers": key(), "chunks": [b"[1, 2]"]},
        "schema-invalid": {"headers": key(), "chunks": js(no_cnt)},
        "too many orders": {"headers": key(), "chunks": js(four)},
        "too many patients": {"headers": key(), "chunks": js(three_patients)},
        "no orders (400)": {"headers": key(), "chunks": js(no_orders)},
        "rx_id twice (422 of the check)": {"headers": key(), "chunks": js(twice)},
        "unknown rule id (422 of _analyse)": {"headers": key(), "chunks": js(unknown_rule)},
        "foreign visit (403 of _analyse)": {
            "headers": key(),
            "chunks": js(request([order("RX1", UTERUS)], mdtrt_id="V-H2", psn="P-H2")),
        },
        "another institution's patient (403)": {"headers": key(KEY2), "chunks": js(ok)},
        "another fixmedins_code (403)": {"headers": key(), "chunks": js(other_code)},
        "other institution's own patient": {
            "headers": key(KEY2),
            "chunks": js(request([order("RX9", UTERUS)], mdtrt_id="V-H2-OPEN", medins_id="H002", psn="P-H2")),
        },
        "oversized, declared": {"headers": [*key(), (b"content-length", str(len(big)).encode())], "chunks": [big]},
        "oversized, streamed": {"headers": key(), "chunks": [big[:4000], big[4000:]]},
        "oversized, streamed, bad key": {"headers": key("x" * 20), "chunks": [big[:4000], big[4000:]]},
        "bad Content-Length": {"headers": [*key(), (b"content-length", b"lots")], "chunks": js(ok)},
        "client gone mid-body": {"headers": key(), "chunks": [js(ok)[0][:50]], "disconnect": True},
        "GET": {"method": "GET", "headers": key()},
        "HEAD": {"method": "HEAD", "headers": key()},
        "PUT": {"method": "PUT", "headers": key(), "chunks": js(ok)},
        "trailing slash": {"path": "/prealert/3101/", "headers": key(), "chunks": js(ok)},
        "under a root path": {"root_path": "/api", "headers": key(), "chunks": js(ok)},
        "a root path in the lane's path": {
            "root_path": "/prealert",
            "path": "/3101",
            "headers": key(),
            "chunks": js(ok),
        },
        "3103, not the lane's": {"path": "/prealert/3103", "headers": key(), "chunks": [b'{"warns": []}']},
        "a result, not the lane's": {"method": "GET", "path": "/prealert/results/nope", "headers": key()},
    }


@pytest.mark.parametrize("path", PATHS)
def test_the_lane_answers_every_3101_request_as_the_route_does(tmp_path, path):
    apps = services(tmp_path, *PATHS[path])
    got: dict[bool, dict[str, dict]] = {}
    for lane, app in apps.items():
        with TestClient(app) as client:  # the app's lifespan runs; requests go in its event loop
            got[lane] = {name: client.portal.call(lambda kw=kw: call(app, **kw)) for name, kw in cases().items()}
    for name in got[True]:
        assert answer(got[True][name]) == answer(got[False][name]), name
    lane, route = got[True], got[False]
    # the cases do reach what they are about (the same on both: compared above)
    assert lane["alert"]["status"] == 200 and b'"rule_id":"R-SEX-001"' in lane["alert"]["body"]
    assert dict(lane["alert"]["headers"])[b"x-medaudit-engine"] == PATHS[path][0].encode()
    assert lane["no alert"]["body"] == b'{"infcode":0,"err_msg":"","output":{"result":[]}}'
    assert lane["rule_set twice, the last counts"]["status"] == 200
    assert lane["other institution's own patient"]["status"] == 200
    expected = {
        "bad key": 401,
        "missing key": 401,
        "empty key": 401,
        "two keys, the first bad": 401,
        "two keys, the first good": 200,
        "bad key and unknown rule set": 401,
        "oversized, streamed, bad key": 401,
        "rule_set unknown": 404,
        "rule_set blank": 404,
        "rule_set escaped": 404,
        "rule_set twice, the last unknown": 404,
        "other query only": 200,
        "invalid JSON": 422,
        "empty body": 422,
        "a JSON list": 422,
        "schema-invalid": 422,
        "too many orders": 422,
        "too many patients": 422,
        "no orders (400)": 400,
        "rx_id twice (422 of the check)": 422,
        "unknown rule id (422 of _analyse)": 422,
        "foreign visit (403 of _analyse)": 403,
        "another institution's patient (403)": 403,
        "another fixmedins_code (403)": 403,
        "oversized, declared": 413,
        "oversized, streamed": 413,
        "bad Content-Length": 400,
        "client gone mid-body": 500,
        "GET": 405,
        "HEAD": 405,
        "PUT": 405,
        "trailing slash": 307,
        "under a root path": 200,
        "a root path in the lane's path": 404,  # FastAPI matches /3101: no such route
    }
    assert {name: lane[name]["status"] for name in expected} == expected
    assert dict(lane["bad key"]["headers"])[b"www-authenticate"] == b"APIKey"
    assert lane["client gone mid-body"]["raised"] == "ClientDisconnect"
    # which one answered: the lane, without FastAPI's router, every POST /prealert/3101 at the
    # root (the trailing slash, the root path, the other methods and routes are FastAPI's)
    for name, kw in cases().items():
        exact = kw.get("method", "POST") == "POST" and kw.get("path", "/prealert/3101") == "/prealert/3101"
        if exact and "root_path" not in kw and lane[name]["status"] not in (400, 413):  # BodyLimit's own
            assert not lane[name]["routed"] and route[name]["routed"], name
    assert lane["under a root path"]["routed"] and lane["GET"]["routed"] and lane["PUT"]["routed"]
    assert dict(lane["trailing slash"]["headers"])[b"location"] == b"http://testserver/prealert/3101"
    # the metrics: the same requests under the same labels (the key's institution included)
    m = {flag: app.state.metrics for flag, app in apps.items()}
    assert m[True].requests == m[False].requests
    assert m[True].errors == m[False].errors and m[True].overload == m[False].overload
    assert {r: h[-2] for r, h in m[True].hist.items()} == {r: h[-2] for r, h in m[False].hist.items()}
    assert m[True].requests[("/prealert/3101", "H001", "200")] >= 5
    assert m[True].requests[("/prealert/3101", "H002", "200")] == 1
    assert m[True].requests[("/prealert/3101", "none", "401")] == 6


@pytest.mark.parametrize("full", ["admission", "database gate"])
def test_503_at_capacity_is_the_same_on_the_lane(tmp_path, full):
    """A check held in the thread pool fills the one place; the next request is refused at once,
    by Instrument's admission (``max_inflight``) or by the route's database gate (``max_db_checks``)."""
    limits = {"max_inflight": 1} if full == "admission" else {"max_db_checks": 1}
    apps = services(tmp_path, "sql", False, max_wait=0, **limits)
    got = {}
    for lane, app in apps.items():
        checker = app.state.checker
        entered, release, check = threading.Event(), threading.Event(), checker.check

        def held(req, rule_set="default", entered=entered, release=release, check=check):
            entered.set()
            assert release.wait(30)
            return check(req, rule_set)

        checker.check = held
        kw = {"headers": key(), "chunks": js(request([order("RX1", UTERUS)]))}

        async def pair(app=app, entered=entered, release=release):
            first = asyncio.ensure_future(call(app, **kw))
            assert await asyncio.to_thread(entered.wait, 30)
            second = await call(app, **kw)
            release.set()
            return await first, second

        with TestClient(app) as client:
            got[lane] = client.portal.call(pair)
    for (first, second), (first_r, second_r) in [(got[True], got[False])]:
        assert answer(first) == answer(first_r) and first["status"] == 200
        assert answer(second) == answer(second_r) and second["status"] == 503
        assert dict(second["headers"])[b"retry-after"] == b"1"
    reason = "inflight" if full == "admission" else "database"
    assert apps[True].state.metrics.overload == apps[False].state.metrics.overload == {("/prealert/3101", reason): 1}
    assert apps[True].state.metrics.requests == apps[False].state.metrics.requests
