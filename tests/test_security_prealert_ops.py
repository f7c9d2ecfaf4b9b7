"""Attacks on the pre-alert service's newer parts: ``/metrics`` (hostile institution codes, keys
and paths never become labels; the series stay bounded however many distinct values arrive), the
overload path, and the writer's journal when a segment is damaged (a corrupt or foreign line, a
truncated file) before a restart. Reuses the service fixture of test_prealert_load."""

from __future__ import annotations

import datetime as dt
import re

from fastapi.testclient import TestClient

from medaudit.prealert.app import create_app
from medaudit.prealert.writer import ResultWriter
from test_prealert_api import KEY1, UTERUS, order, request
import test_prealert_load
from test_prealert_load import answer, stored

base = test_prealert_load.base  # the fixture of test_prealert_load

HOSTILE = 'H001"} 1\nmedaudit_fake{x="1'


def series(text: str) -> set[str]:
    return {line.rsplit(" ", 1)[0] for line in text.splitlines() if line and not line.startswith("#")}


def test_metrics_labels_come_from_the_key_not_the_request_and_stay_bounded(base, tmp_path):
    con, lib, keys = base
    app = create_app(con, {"default": lib}, keys, async_results=True, journal=str(tmp_path / "j"))
    with TestClient(app) as client:
        answer(client, 0)
        warm = series(client.get("/metrics").text)
        for i in range(60):
            # a hostile institution code in the body, a different unknown key each time, ids in the paths
            client.post(
                "/prealert/3101",
                json=request([order(f"RX{i}", UTERUS)], medins_id=f"{HOSTILE}{i}"),
                headers={"X-API-Key": KEY1},
            )
            client.post(
                "/prealert/3101",
                json=request([order(f"RX{i}", UTERUS)]),
                headers={"X-API-Key": f"{HOSTILE}-key-{i}-xxxxxxxxxxxx"},
            )
            client.get(f"/prealert/results/JR-{i}-secret", headers={"X-API-Key": KEY1})
            client.get(f"/prealert/{i}/../../etc/passwd-{i}")
            client.get(f"/nowhere-{i}-P-OPEN-1")
        text = client.get("/metrics").text
    assert "medaudit_fake" not in text and HOSTILE not in text and "secret" not in text and "passwd" not in text
    assert "P-OPEN-1" not in text and "nowhere" not in text
    for line in text.splitlines():
        assert line.startswith(("#", "medaudit_", "process_")) or not line, line
    # 300 distinct hostile values arrived; labels hold route templates and the keys' institutions only
    routes = set(re.findall(r'route="([^"]*)"', text))
    assert routes <= {
        "/prealert/3101",
        "/prealert/3103",
        "/prealert/results",
        "/prealert/results/{jr_id}",
        "/health",
        "/metrics",
        "other",
    }, routes
    grown = {x for x in series(text) - warm if "_bucket{" not in x}
    assert len(grown) < 30, sorted(grown)
    insts = set(re.findall(r'institution="([^"]*)"', text))
    assert insts <= {"H001", "H002", "none"}, insts


def test_an_overloaded_service_refuses_without_naming_anyone(base, tmp_path):
    con, lib, keys = base
    app = create_app(
        con, {"default": lib}, keys, async_results=True, journal=str(tmp_path / "j"), max_inflight=1, max_wait=0.0
    )
    adm = app.state.admission
    with TestClient(app) as client:
        adm.inflight = adm.limit  # every place taken
        r = client.post(
            "/prealert/3101", json=request([order("RX1", UTERUS)], psn="P-SECRET-9"), headers={"X-API-Key": KEY1}
        )
        assert r.status_code == 503 and "retry-after" in r.headers
        assert "P-SECRET-9" not in r.text and "RX1" not in r.text
        adm.inflight = 0
        text = client.get("/metrics").text
    assert 'medaudit_prealert_overload_total{route="/prealert/3101",reason="inflight"} 1' in text
    assert "P-SECRET-9" not in text


def _fb(jr: str) -> list[tuple]:
    return [(jr, "H001", "1", "2", None, dt.datetime(2026, 3, 2, 9, 30))]


def test_a_damaged_journal_segment_is_set_aside_not_retried_forever(base, tmp_path):
    """A segment with a corrupt line in its middle (a disk error, an edit, a foreign file) made
    every store fail: the writer retried it forever, nothing answered later was stored, and every
    read that flushes first (/prealert/results, 3103) answered 500. Now its readable lines are
    stored, the file is set aside as ``*.corrupt`` for the operator, /health says so, and the
    writer goes on."""
    con, _lib, _keys = base
    folder = tmp_path / "journal"
    w = ResultWriter(con, folder, start=False)
    w.add_feedback(_fb("J1"))
    w.add_feedback(_fb("J2"))
    w._seg.close()
    lines = w._seg.path.read_bytes().splitlines()
    bad = w._seg.path
    bad.write_bytes(
        lines[0]
        + b'\n{"f": [["J9", "H0\n'
        + b'{"f": [["JX"]]}\n'
        + b'["not", "an", "entry"]\n'
        + b'{"f": [["J3", "H001", "1", "2", null, "not a time"]]}\n'
        + lines[1]
        + b"\n"
    )
    w2 = ResultWriter(con, folder, start=False)
    w2.flush()  # no exception: the damaged segment is set aside
    assert sorted(r[0] for r in con.execute("SELECT jr_id FROM prealert_feedback").fetchall()) == ["J1", "J2"]
    assert not list(folder.glob("*.jsonl"))
    aside = list(folder.glob("*.corrupt"))
    assert len(aside) == 1 and b"J9" in aside[0].read_bytes()  # kept whole for the operator
    st = w2.status()
    assert "set aside" in st["status"] and st["quarantined_segments"] == 1 and "line 2" in st["last_error"]
    # later answers are stored as usual
    w2.add_feedback(_fb("J4"))
    w2.flush()
    assert ("J4",) in con.execute("SELECT jr_id FROM prealert_feedback").fetchall()
    # and a writer started again does not trip over the set-aside file
    ResultWriter(con, folder, start=False).flush()
    w2.close()


def test_a_segment_of_rows_no_table_takes_is_set_aside(base, tmp_path):
    con, _lib, _keys = base
    folder = tmp_path / "journal"
    folder.mkdir()
    (folder / "00000000000000000001-1-000001.jsonl").write_bytes(
        b'{"f": [["J5", "H001", "1", "2", null, "2026-03-02T09:30:00"]]}\n{"r": [[1, 2, 3]]}\n'
    )
    w = ResultWriter(con, folder, start=False)
    w.flush()
    assert ("J5",) in con.execute("SELECT jr_id FROM prealert_feedback").fetchall()
    assert len(list(folder.glob("*.corrupt"))) == 1 and not list(folder.glob("*.jsonl"))
    # right number of values, a number where a code goes: the whole segment is set aside
    (folder / "00000000000000000002-1-000001.jsonl").write_bytes(
        b'{"f": [["J7", "H001", "1", "2", null, "2026-03-02T09:30:00"]]}\n'
        b'{"f": [["J8", "H001", 5, "2", null, "2026-03-02T09:30:00"]]}\n'
    )
    w2 = ResultWriter(con, folder, start=False)
    w2.flush()
    assert len(list(folder.glob("*.corrupt"))) == 2 and not list(folder.glob("*.jsonl"))
    assert "rows no table takes" in w2.status()["last_error"]
    assert con.execute("SELECT count(*) FROM prealert_feedback WHERE jr_id IN ('J7', 'J8')").fetchall() == [(0,)]
    # a list where a value goes: that line is left out, the others stored
    (folder / "00000000000000000003-1-000001.jsonl").write_bytes(
        b'{"f": [["J10", "H001", "1", "2", null, "2026-03-02T09:30:00"]]}\n'
        b'{"f": [["J11", "H001", ["1"], "2", null, "2026-03-02T09:30:00"]]}\n'
    )
    w3 = ResultWriter(con, folder, start=False)
    w3.flush()
    assert len(list(folder.glob("*.corrupt"))) == 3 and "line 2" in w3.status()["last_error"]
    assert [
        r[0] for r in con.execute("SELECT jr_id FROM prealert_feedback WHERE jr_id IN ('J10', 'J11')").fetchall()
    ] == ["J10"]
    for x in (w, w2, w3):
        x.close()


def test_a_truncated_or_empty_segment_on_restart(base, tmp_path):
    con, _lib, _keys = base
    folder = tmp_path / "journal"
    w = ResultWriter(con, folder, start=False)
    w.add_feedback(_fb("J6"))
    w._seg.close()
    data = w._seg.path.read_bytes()
    w._seg.path.write_bytes(data[: len(data) // 2])  # cut in the middle of its only line
    (folder / "00000000000000000002-1-000001.jsonl").write_bytes(b"")
    ResultWriter(con, folder, start=False).flush()
    assert con.execute("SELECT count(*) FROM prealert_feedback").fetchall() == [(0,)]  # never answered whole
    assert not list(folder.glob("*.jsonl")) and not list(folder.glob("*.corrupt"))
    assert stored(con)[0] == set()
