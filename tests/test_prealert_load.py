"""The pre-alert service under load: the result writer (bounded queue, journal, restart), overload
answers (503 + Retry-After, no waiting past the bound), /metrics, bounded memory settings.

No timed assertions: what is checked is behaviour (what was stored, what was refused, what
the counters say), never how long something took."""

from __future__ import annotations

import os
import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from fastapi.testclient import TestClient

from kit import Batch, loaded_db, write_rules
from medaudit import db
from medaudit.library import load_library
from medaudit.loader import load_batch
from medaudit.prealert import store
from medaudit.prealert.app import create_app
from medaudit.prealert.writer import ResultWriter
from test_prealert_api import KEY1, KEY2, RULES, UTERUS, order, request


@pytest.fixture
def base(tmp_path):
    b = Batch()
    b.visit(mdtrt_id="V-HIST", psn_no="P-OPEN-1", med_type="11", fixmedins_code="H001")
    b.visit(mdtrt_id="V-H2", psn_no="P-H2", fixmedins_code="H002")
    con = loaded_db(b, tmp_path / "svc.duckdb")  # loaded once, copied for the next test
    lib = load_library(write_rules(tmp_path / "rules", RULES))
    keys = {store.key_hash(KEY1): "H001", store.key_hash(KEY2): "H002"}
    return con, lib, keys


def stored(con) -> tuple[set, int, int]:
    ids = {r[0] for r in con.execute("SELECT jr_id FROM prealert_results").fetchall()}
    items = con.execute("SELECT count(*) FROM prealert_result_items").fetchall()[0][0]
    fb = con.execute("SELECT count(*) FROM prealert_feedback").fetchall()[0][0]
    return ids, items, fb


def answer(client, i: int, key=KEY1) -> dict:
    r = client.post("/prealert/3101", json=request([order(f"RX{i}", UTERUS)]), headers={"X-API-Key": key})
    assert r.status_code == 200, r.text
    [res] = r.json()["output"]["result"]
    return res


# ---------------------------------------------------------------------------- the writer


def test_full_queue_keeps_answering_says_so_and_loses_nothing(base, tmp_path):
    con, lib, keys = base
    app = create_app(
        con, {"default": lib}, keys, async_results=True, journal=str(tmp_path / "journal"), max_queue_rows=3
    )
    writer = app.state.checker.writer
    # the writer's thread is held: nothing is stored while the answers come
    writer._write_lock.acquire()
    try:
        with TestClient(app) as client:
            jr = [answer(client, i)["jr_id"] for i in range(8)]  # 2 rows each: the queue holds 3
            health = client.get("/health").json()
            assert health["status"] == "degraded"
            assert health["results"]["status"].startswith("queue full")
            assert health["results"]["queued_rows"] <= 3 and health["results"]["overflowed_answers"] >= 6
            assert stored(con)[0] == set()
            writer._write_lock.release()
            # a read flushes first: every answer is there, once, with its item
            got = client.get("/prealert/results", params={"limit": 100}, headers={"X-API-Key": KEY1}).json()
            assert {r["jr_id"] for r in got["result"]} == set(jr)
            assert client.get("/health").json()["results"]["status"] == "ok"
    finally:
        if writer._write_lock.locked():
            writer._write_lock.release()
    ids, items, _fb = stored(con)
    assert ids == set(jr) and items == len(jr)
    assert not list((tmp_path / "journal").glob("*.jsonl"))  # stored: the journal is empty


def test_no_result_lost_across_a_writer_restart(base, tmp_path):
    """A writer that ends without storing (the process killed) leaves its journal; the next one
    stores it, and a segment stored twice (killed between storing and deleting it) is stored once."""
    con, lib, keys = base
    folder = tmp_path / "journal"
    app = create_app(con, {"default": lib}, keys, async_results=True, journal=str(folder), max_queue_rows=5)
    writer = app.state.checker.writer
    writer._stop = True  # the thread ends at its next wake-up without storing
    writer._wake.set()
    writer._thread.join(10)
    with TestClient(app) as client:  # (its shutdown would store: the lifespan is not the crash here)
        jr = [answer(client, i)["jr_id"] for i in range(6)]
        fb_id = jr[0]
        writer._seg.close()  # "killed": the journal is all there is
        assert stored(con)[0] == set()
        segments = sorted(folder.glob("*.jsonl"))
        assert segments and sum(len(p.read_bytes().splitlines()) for p in segments) == 6
        # a segment already stored once (as if the process died before deleting it)
        twice = folder / "00000000000000000000-0-000000.jsonl"
        twice.write_bytes(segments[0].read_bytes())
        app.state.checker.writer = None  # the dead writer stores nothing more at the lifespan's end
    # a new writer over the same journal, as at the service's next start
    w2 = ResultWriter(con, folder, start=False)
    w2.flush()
    ids, items, _fb = stored(con)
    assert ids == set(jr) and items == 6
    assert not list(folder.glob("*.jsonl"))
    # feedback through the writer, restart again before it is stored
    w2.add_feedback([(fb_id, "H001", "1", "2", None, __import__("datetime").datetime(2026, 3, 2, 9, 30))])
    w2._seg.close()
    w3 = ResultWriter(con, folder, start=False)
    w3.flush()
    w3.flush()
    assert stored(con)[2] == 1
    w3.close()


def test_a_cut_short_last_journal_line_is_skipped_not_fatal(base, tmp_path):
    con, _lib, _keys = base
    folder = tmp_path / "journal"
    w = ResultWriter(con, folder, start=False)
    w.add_feedback([("J1", "H001", "1", "2", None, __import__("datetime").datetime(2026, 3, 2, 9, 30))])
    w._seg.close()
    with open(w._seg.path, "ab") as f:
        f.write(b'{"f": [["J2", "H0')  # the process died in the middle of this write
    ResultWriter(con, folder, start=False).flush()
    assert con.execute("SELECT jr_id FROM prealert_feedback").fetchall() == [("J1",)]


@pytest.mark.skipif(not hasattr(os, "SCHED_IDLE"), reason="the idle scheduling class is Linux's")
def test_a_writer_process_stores_in_the_idle_class_and_nothing_else_of_it_does(base, tmp_path):
    con, _lib, _keys = base
    w = ResultWriter(con, tmp_path / "journal", idle=True)
    try:
        for _ in range(200):  # the thread sets it as it starts
            if w.scheduling == "idle":
                break
            time.sleep(0.01)
        assert w._thread is not None
        assert os.sched_getscheduler(w._thread.native_id) == os.SCHED_IDLE
        assert w.status()["scheduling"] == "idle"
        # the calling thread (an answering one in a service of one process) is not moved
        assert os.sched_getscheduler(threading.get_native_id()) == os.SCHED_OTHER
        # it still stores what it is given
        w.add_feedback([("J1", "H001", "1", "2", None, __import__("datetime").datetime(2026, 3, 2, 9, 30))])
        w.flush()
        assert con.execute("SELECT jr_id FROM prealert_feedback").fetchall() == [("J1",)]
    finally:
        w.close()
    # a writer sharing its process with the answers (one-process service) keeps the normal class:
    # looked at once its thread has stored something (it is past where it would have moved)
    w2 = ResultWriter(con, tmp_path / "j2")
    try:
        w2.add_feedback([("J2", "H001", "1", "2", None, __import__("datetime").datetime(2026, 3, 2, 9, 31))])
        for _ in range(500):
            if w2.stored_rows:
                break
            time.sleep(0.01)
        assert w2.stored_rows == 1
        assert w2._thread is not None and os.sched_getscheduler(w2._thread.native_id) == os.SCHED_OTHER
        assert w2.status()["scheduling"] == "normal"
    finally:
        w2.close()


def test_health_says_how_long_the_oldest_unstored_answer_has_waited(base, tmp_path):
    con, _lib, _keys = base
    w = ResultWriter(con, tmp_path / "journal", start=False)
    assert w.status()["oldest_unstored_s"] == 0.0
    w.add_feedback([("J1", "H001", "1", "2", None, __import__("datetime").datetime(2026, 3, 2, 9, 30))])
    # written 90 s ago (the segment's time is its last write): the writer is 90 s behind
    past = time.time_ns() - 90 * 10**9
    os.utime(w._seg.path, ns=(past, past))
    assert 89.0 <= w.status()["oldest_unstored_s"] <= 95.0
    w.flush()
    assert w.status()["oldest_unstored_s"] == 0.0
    w.close()


def test_feedback_goes_through_the_writer_and_reads_see_it(base, tmp_path):
    con, lib, keys = base
    app = create_app(con, {"default": lib}, keys, async_results=True, journal=str(tmp_path / "j"))
    with TestClient(app) as client:
        jr = answer(client, 1)["jr_id"]
        r = client.post(
            "/prealert/3103",
            json={
                "warn_type": "1",
                "warns": [{"warn_rslt_id": jr, "dspo_way": "1", "dspo_way_rea": "患者病情需要，已经上级医师审核"}],
            },
            headers={"X-API-Key": KEY1},
        )
        assert r.status_code == 200, r.text
        got = client.get(f"/prealert/results/{jr}", headers={"X-API-Key": KEY1}).json()
        assert [f["dspo_way"] for f in got["feedback"]] == ["1"]


# ---------------------------------------------------------------------------- overload


def hold_checks(checker):
    """Make every check of ``checker`` go to the thread pool and wait there until the test sets
    ``release``. Returns ``(release, entered, running)``: ``entered`` is released once by each check
    that has started; ``running`` counts the checks waiting now and the most at once."""
    release, entered = threading.Event(), threading.Semaphore(0)
    running = {"now": 0, "most": 0}
    lock = threading.Lock()
    real = checker.check

    def slow_check(req, rule_set="default"):
        with lock:
            running["now"] += 1
            running["most"] = max(running["most"], running["now"])
        entered.release()
        release.wait(60)
        with lock:
            running["now"] -= 1
        return real(req, rule_set)

    checker.check = slow_check
    checker.in_memory = lambda req, rule_set="default": False  # to the thread pool, where a check can wait
    return release, entered, running


def test_past_capacity_requests_are_refused_at_once_not_queued(base, tmp_path):
    """Checks are held (they wait on an event the test sets): with 2 places, the 3rd and later
    requests are answered 503 + Retry-After while the first 2 are still running, i.e. no request
    waited for a place beyond the bound."""
    con, lib, keys = base
    app = create_app(
        con, {"default": lib}, keys, async_results=True, journal=str(tmp_path / "j"), max_inflight=2, max_wait=0.05
    )
    release, entered, running = hold_checks(app.state.checker)
    with TestClient(app) as client:
        with ThreadPoolExecutor(12) as pool:
            held = [pool.submit(answer, client, i) for i in range(2)]
            for _ in range(2):
                assert entered.acquire(timeout=60)
            extra = [
                pool.submit(
                    client.post, "/prealert/3101", json=request([order(f"X{i}", UTERUS)]), headers={"X-API-Key": KEY1}
                )
                for i in range(10)
            ]
            refused = [f.result(timeout=60) for f in extra]  # answered while the 2 checks still wait
            assert not release.is_set()
            release.set()
            done = [f.result(timeout=60) for f in held]
        assert all(r.status_code == 503 for r in refused)
        assert all(r.headers["retry-after"] == "1" and r.json()["infcode"] == -1 for r in refused)
        assert len(done) == 2 and running["most"] == 2
        text = client.get("/metrics").text
        assert 'medaudit_prealert_overload_total{route="/prealert/3101",reason="inflight"} 10' in text
        # capacity again once the checks are done
        assert answer(client, 99)


# ---------------------------------------------------------------------------- /metrics

_LINE = re.compile(
    r'^[a-zA-Z_:][a-zA-Z0-9_:]*(\{([a-zA-Z_][a-zA-Z0-9_]*="([^"\\]|\\.)*",?)*\})? '
    r"(-?[0-9.e+-]+|\+Inf|-Inf|NaN)$"
)


def test_metrics_are_prometheus_text_with_counters_and_no_personal_labels(base, tmp_path):
    con, lib, keys = base
    app = create_app(con, {"default": lib}, keys, async_results=True, journal=str(tmp_path / "j"))
    with TestClient(app) as client:
        jr = [answer(client, i)["jr_id"] for i in range(3)]
        client.post(
            "/prealert/3101", json=request([order("RX1", UTERUS)]), headers={"X-API-Key": "wrong-key-xxxxxxxxxx"}
        )
        client.get(f"/prealert/results/{jr[0]}", headers={"X-API-Key": KEY1})
        r = client.get("/metrics")
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain; version=0.0.4")
        text = r.text
    families = {}
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ")
            families[name] = kind
            continue
        if line.startswith("# HELP ") or not line:
            continue
        assert _LINE.match(line), line
    assert families["medaudit_prealert_requests_total"] == "counter"
    assert families["medaudit_prealert_request_seconds"] == "histogram"
    assert families["process_resident_memory_bytes"] == "gauge"
    assert families["medaudit_prealert_writer_queue_rows"] == "gauge"
    assert 'medaudit_prealert_requests_total{route="/prealert/3101",institution="H001",code="200"} 3' in text
    assert 'medaudit_prealert_requests_total{route="/prealert/3101",institution="none",code="401"} 1' in text
    assert 'medaudit_prealert_requests_total{route="/prealert/results/{jr_id}",institution="H001",code="200"} 1' in text
    assert 'medaudit_prealert_request_seconds_count{route="/prealert/3101"} 4' in text
    assert 'medaudit_prealert_request_seconds_bucket{route="/prealert/3101",le="+Inf"} 4' in text
    # histogram buckets never decrease
    counts = [
        int(m.group(1)) for m in re.finditer(r'request_seconds_bucket\{route="/prealert/3101",le="[^"]+"\} (\d+)', text)
    ]
    assert counts == sorted(counts) and counts[-1] == 4
    # nothing of a person, a visit, an order or a result in any label
    for secret in ("P-OPEN-1", "V-OPEN-1", "RX1", "张三", *jr):
        assert secret not in text


def test_errors_are_counted_by_route_and_institution(base, tmp_path):
    con, lib, keys = base
    app = create_app(con, {"default": lib}, keys, async_results=True, journal=str(tmp_path / "j"))
    checker = app.state.checker

    def broken(req, rule_set="default"):
        raise RuntimeError("boom")

    checker.check = broken
    with TestClient(app, raise_server_exceptions=False) as client:
        r = client.post("/prealert/3101", json=request([order("RX1", UTERUS)]), headers={"X-API-Key": KEY1})
        assert r.status_code == 500
        text = client.get("/metrics").text
    assert 'medaudit_prealert_errors_total{route="/prealert/3101",institution="H001"} 1' in text


# ---------------------------------------------------------------------------- the preloaded history, windowed

BED = "001109000010000"


def _history(tmp_path):
    """P-OLD's stay of 2024 (a bed charged on 2024-01-10) and recent visits (March 2026)."""
    b = Batch()
    b.visit(
        mdtrt_id="V-OLD",
        psn_no="P-OLD",
        gend="2",
        med_type="21",
        fixmedins_code="H001",
        begntime="2024-01-09 08:00:00",
        endtime="2024-01-20 10:00:00",
        die_date=None,
    )
    b.line("V-OLD", BED, pric="30", time="2024-01-10 08:00:00")
    b.visit(
        mdtrt_id="V-NEW",
        psn_no="P-NEW",
        med_type="21",
        fixmedins_code="H001",
        begntime="2026-03-01 08:00:00",
        endtime=None,
    )
    b.line("V-NEW", BED, pric="30", time="2026-03-01 08:00:00")
    b.visit(mdtrt_id="V-H2", psn_no="P-H2", fixmedins_code="H002")
    b.line("V-H2", BED, pric="30")
    con = db.connect(tmp_path / "svc.duckdb")
    load_batch(b.write(tmp_path / "batch"), con)
    return con


def _bed(mdtrt_id, psn, day, inst="H001", adm="2026-03-01 08:00:00"):
    body = request([order("B2", BED, f"{day} 18:00:00", pric="30")], mdtrt_id=mdtrt_id, psn=psn, medins_id=inst)
    body["input"]["data"]["patient_dtos"][0]["fsi_encounter_dtos"][0]["adm_date"] = adm
    return body


def _shape(r):
    return [
        {k: v for k, v in x.items() if k not in ("jr_id", "task_id", "judge_result_detail_dtos")}
        for x in r.json()["output"]["result"]
    ]


def test_preload_windowed_to_the_rules_reach_answers_old_visits_by_sql_the_same(tmp_path):
    con = _history(tmp_path)
    lib = load_library(write_rules(tmp_path / "rules", RULES))
    keys = {store.key_hash(KEY1): "H001", store.key_hash(KEY2): "H002"}
    answers = {}
    for whole in (False, True):
        app = create_app(
            con,
            {"default": lib},
            keys,
            preload=True,
            async_results=True,
            journal=str(tmp_path / f"j{whole}"),
            window=not whole,
        )
        checker = app.state.checker
        with TestClient(app) as client:
            if whole:
                assert checker.window is None and "V-OLD" in checker.fast.cache._data
            else:
                w = client.get("/health").json()["history_window"]
                assert w["visits_left_out"] == 1 and w["visits_preloaded"] == 2
                assert "V-OLD" not in checker.fast.cache._data and "V-NEW" in checker.fast.cache._data
            old = client.post(
                "/prealert/3101",
                json=_bed("V-OLD", "P-OLD", "2024-01-10", adm="2024-01-09 08:00:00"),
                headers={"X-API-Key": KEY1},
            )
            new = client.post("/prealert/3101", json=_bed("V-NEW", "P-NEW", "2026-03-01"), headers={"X-API-Key": KEY1})
            assert old.status_code == 200 and new.status_code == 200, (old.text, new.text)
            # the old stay by SQL when windowed (the whole database), from memory otherwise
            assert old.headers["x-medaudit-engine"] == ("fast" if whole else "sql")
            assert new.headers["x-medaudit-engine"] == "fast"
            # a stored visit of H001 left out of the window is still refused to H002
            foreign = client.post(
                "/prealert/3101", json=_bed("V-OLD", "P-OLD", "2024-01-10", inst="H002"), headers={"X-API-Key": KEY2}
            )
            assert foreign.status_code == 403, foreign.text
            answers[whole] = (_shape(old), _shape(new))
    assert answers[False] == answers[True]
    assert [x["rule_id"] for x in answers[True][0]] == ["R-FRQ-001"]  # the stored bed of that day counts
    assert [x["rule_id"] for x in answers[True][1]] == ["R-FRQ-001"]


def test_service_connections_have_a_memory_limit_and_bounded_queues(base, tmp_path):
    con, lib, keys = base
    con.execute("SET memory_limit = '512MiB'")
    app = create_app(
        con, {"default": lib}, keys, async_results=True, journal=str(tmp_path / "j"), max_queue_rows=7, cache_visits=3
    )
    with TestClient(app) as client:
        h = client.get("/health").json()
    assert h["memory"]["duckdb_limit"] in ("512.0 MiB", "536.8 MB") and h["memory"]["rss_bytes"] > 0
    assert h["results"]["max_rows"] == 7
    assert app.state.checker.fast.cache.size == 3


def test_checks_waiting_for_the_database_past_its_capacity_are_refused(base, tmp_path):
    """The SQL path's sessions are few: with 1 database check allowed and it held, the others
    are answered 503 while it still runs (not queued behind it)."""
    con, lib, keys = base
    app = create_app(
        con, {"default": lib}, keys, async_results=True, journal=str(tmp_path / "j"), max_db_checks=1, max_wait=0.05
    )
    release, entered, _running = hold_checks(app.state.checker)
    with TestClient(app) as client, ThreadPoolExecutor(6) as pool:
        held = pool.submit(answer, client, 0)
        assert entered.acquire(timeout=60)
        refused = [
            f.result(timeout=60)
            for f in [
                pool.submit(
                    client.post, "/prealert/3101", json=request([order(f"X{i}", UTERUS)]), headers={"X-API-Key": KEY1}
                )
                for i in range(4)
            ]
        ]
        assert not release.is_set()
        release.set()
        assert held.result(timeout=60)["rule_id"] == "R-SEX-001"
        assert [r.status_code for r in refused] == [503] * 4 and refused[0].headers["retry-after"] == "1"
        assert client.get("/health").json()["admission"]["db_checks"] == 0
        assert 'reason="database"} 4' in client.get("/metrics").text
