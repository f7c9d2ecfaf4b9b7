"""Pre-alert never writes a request's values into SQL text (attack test).

The SQL path fills per-request context tables from the request (visit, person,
order ids, names, doctors). Those values reach DuckDB as registered Arrow tables, never as
text: here DuckDB's own query log shows every statement any cursor ran during the check, and
none may contain a value the request carried, hostile or not.
"""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from kit import Batch, write_rules
from medaudit import db
from medaudit.library import load_library
from medaudit.loader import load_batch
from medaudit.prealert import store
from medaudit.prealert.app import create_app
from test_prealert_api import KEY1, UTERUS, order, request
from test_prealert_paths import MIXED

#: a value a naive quoting would break out of, marked so it can be found in any SQL text
EVIL = "MARKx'); DROP TABLE fee_list_d; --"


@pytest.mark.parametrize("engine, answered_by", [("sql", "sql"), ("fast", "fast+sql")])
def test_no_request_value_is_written_into_sql_text(tmp_path, engine, answered_by):
    b = Batch()
    b.visit(mdtrt_id="V-HIST", psn_no="P-MARK-1", med_type="11", fixmedins_code="H001")
    con = db.connect(tmp_path / "a.duckdb")
    load_batch(b.write(tmp_path / "batch"), con)
    lib = load_library(write_rules(tmp_path / "rules", MIXED))
    app = create_app(con, {"default": lib}, {store.key_hash(KEY1): "H001"}, engine=engine)
    o1 = order("RX-MARK-1", UTERUS, hilist_name=EVIL, drord_dr_codg="DR-MARK", drord_dept_codg="D-MARK")
    o2 = order("RX-MARK'2", "001109000010000")
    body = request([o1, o2], mdtrt_id="V-MARK-1", psn="P-MARK-1")
    dx = body["input"]["data"]["patient_dtos"][0]["fsi_encounter_dtos"][0]
    dx["dscg_main_dise_codg"] = "O80.000"
    dx["fsi_diagnose_dtos"][0]["dise_codg"] = "O80.000"
    dx["fsi_diagnose_dtos"][0]["dise_name"] = EVIL
    with TestClient(app) as client:
        con.execute("CALL enable_logging('QueryLog')")
        r = client.post("/prealert/3101", json=body, headers={"X-API-Key": KEY1})
        assert r.status_code == 200, r.text
        assert r.headers["X-Medaudit-Engine"] == answered_by
        answer = r.json()["output"]["result"]
        logged = [m for (m,) in con.execute("SELECT message FROM duckdb_logs WHERE type = 'QueryLog'").fetchall()]
        con.execute("CALL disable_logging()")
    # the check ran (the context was filled and read) and found the man's uterus order
    assert any("INSERT INTO request_fee_list_d" in m or "INSERT INTO fee_list_d" in m for m in logged), logged[:5]
    assert {x["rule_id"] for x in answer} >= {"R-SEX-001", "R-GDX-001"}, answer
    # the hostile item name came back as data, in the alert's evidence
    assert any(EVIL in str(x) for x in answer), answer
    leaked = [m for m in logged if "MARK" in m]
    assert not leaked, f"request values written into SQL text: {leaked[:3]}"
