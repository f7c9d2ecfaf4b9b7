"""``medaudit serve --workers N``: several answering processes, one writer (medaudit/prealert/workers.py).

Behaviour only, no timing: two workers answer what one answers; every answer reaches the
database once, across a writer killed between storing a segment and deleting it and a whole
service killed mid-run; a worker still refuses past capacity; ``--workers`` is checked."""

from __future__ import annotations

import datetime as dt
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from pathlib import Path

import duckdb
import httpx
import pytest
from fastapi.testclient import TestClient

from kit import Batch, loaded_db, write_rules
from medaudit import db
from medaudit.library import load_library
from medaudit.prealert import store
from medaudit.prealert.app import create_app
from medaudit.prealert.workers import resolve
from medaudit.prealert.writer import OPEN, JournalProducer, ResultWriter
from test_prealert_api import BED, KEY1, KEY2, RULES, UTERUS, order, request
from test_prealert_load import hold_checks

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def base(tmp_path):
    b = Batch()
    b.visit(mdtrt_id="V-HIST", psn_no="P-OPEN-1", med_type="11", fixmedins_code="H001")
    b.visit(mdtrt_id="V-H2", psn_no="P-H2", fixmedins_code="H002")
    con = loaded_db(b, tmp_path / "svc.duckdb")
    store.ensure(con)
    rules = write_rules(tmp_path / "rules", RULES)
    keys = tmp_path / "keys.yaml"
    keys.write_text(f"H001: {KEY1}\nH002: {KEY2}\n", encoding="utf-8")
    return con, rules, keys


def _requests() -> list[dict]:
    """Requests with and without alerts: a uterus exam for a man (gender rule), a bed day, both."""
    out = []
    for i in range(12):
        orders = [order(f"RX{i}-A", UTERUS)] if i % 3 != 1 else [order(f"RX{i}-B", BED)]
        if i % 3 == 2:
            orders.append(order(f"RX{i}-B", BED))
        out.append(request(orders, mdtrt_id=f"V-W{i}", psn=f"P-W{i}"))
    return out


def _alerts(answer: dict) -> list[dict]:
    """The answer without what is new each time (ids, task)."""
    out = []
    for r in answer["output"]["result"]:
        r = {k: v for k, v in r.items() if k not in ("jr_id", "task_id")}
        r["judge_result_detail_dtos"] = [
            {k: v for k, v in d.items() if k != "jrd_id"} for d in r["judge_result_detail_dtos"]
        ]
        out.append(r)
    return out


class Service:
    """``medaudit serve`` as its own process (its own process group: the test can kill it all)."""

    def __init__(self, db_path: Path, rules: Path, keys: Path, workers: int, *extra: str):
        with __import__("socket").socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "medaudit",
                "serve",
                "--db",
                str(db_path),
                "--rules",
                str(rules),
                "--keys",
                str(keys),
                "--port",
                str(self.port),
                "--workers",
                str(workers),
                "--preload",
                *extra,
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            cwd=ROOT,
        )
        self.url = f"http://127.0.0.1:{self.port}"
        deadline = time.monotonic() + 120
        while True:
            assert self.proc.poll() is None, self.proc.stdout.read()
            try:
                h = httpx.get(self.url + "/health", timeout=5).json()
                if workers == 1 or h["workers"]["ready"] == workers:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "the service did not come up"
            time.sleep(0.1)

    def post(self, path: str, body: dict, key: str = KEY1) -> httpx.Response:
        # a new connection each time: SO_REUSEPORT spreads connections, so both workers answer
        return httpx.post(self.url + path, json=body, headers={"X-API-Key": key, "Connection": "close"}, timeout=30)

    def get(self, path: str, key: str = KEY1, **params) -> httpx.Response:
        return httpx.get(self.url + path, params=params, headers={"X-API-Key": key, "Connection": "close"}, timeout=30)

    def stop(self, sig=signal.SIGTERM) -> str:
        self.proc.send_signal(sig)
        out, _ = self.proc.communicate(timeout=60)
        return out


def _stored(path: Path) -> tuple[list, int, int]:
    con = duckdb.connect(str(path), read_only=True)
    try:
        ids = [r[0] for r in con.execute("SELECT jr_id FROM prealert_results").fetchall()]
        items = con.execute("SELECT count(*) FROM prealert_result_items").fetchall()[0][0]
        fb = con.execute("SELECT count(*) FROM prealert_feedback").fetchall()[0][0]
    finally:
        con.close()
    return ids, items, fb


@pytest.mark.slow
def test_two_workers_answer_as_one_and_store_every_answer_once(base, tmp_path):
    con, rules, keys = base
    con.close()
    one_db, two_db = tmp_path / "one.duckdb", tmp_path / "two.duckdb"
    shutil.copyfile(tmp_path / "svc.duckdb", one_db)
    shutil.copyfile(tmp_path / "svc.duckdb", two_db)
    reqs = _requests()

    one = Service(one_db, rules, keys, 1)
    try:
        want = [_alerts(one.post("/prealert/3101", r).json()) for r in reqs]
        # preloaded, the one process's connection mostly appends answers: its limit tightens
        assert one.get("/health").json()["memory"]["duckdb_limit"] in ("256.0 MiB", "268.4 MB")
    finally:
        one.stop()
    assert any(want) and not all(want)  # some requests alert, some do not

    # the writer closes the database and opens it again after every store of 2 rows or more (17
    # rows in all here: several times); every read below goes through its connection
    two = Service(two_db, rules, keys, 2, "--writer-reopen-rows", "2")
    try:
        answers = [two.post("/prealert/3101", r).json() for r in reqs]
        assert [_alerts(a) for a in answers] == want
        jr = [r["jr_id"] for a in answers for r in a["output"]["result"]]
        # both workers answer (new connections are spread over them)
        slots = set()
        for _ in range(200):
            slots.add(two.get("/health").json()["worker"]["slot"])
            if len(slots) == 2:
                break
        assert slots == {0, 1}
        # any worker finds a result any worker answered, at once (the writer stores, then reads)
        for j in jr:
            got = two.get(f"/prealert/results/{j}")
            assert got.status_code == 200 and got.json()["jr_id"] == j
        assert two.get("/prealert/results/nope").status_code == 404
        assert two.get(f"/prealert/results/{jr[0]}", key=KEY2).status_code == 404  # another institution's
        fb = two.post(
            "/prealert/3103",
            {"warn_type": "1", "warns": [{"warn_rslt_id": jr[0], "dspo_way": "1", "dspo_way_rea": "上级医师审核"}]},
        )
        assert fb.status_code == 200, fb.text
        assert (
            two.post(
                "/prealert/3103", {"warn_type": "1", "warns": [{"warn_rslt_id": jr[0], "dspo_way": "2"}]}, key=KEY2
            ).status_code
            == 404
        )
        health = two.get("/health").json()
        assert health["workers"]["of"] == 2 and health["results"]["status"] == "ok"
        assert health["results"]["reopens"] >= 2 and health["results"]["failures"] == 0, health["results"]
        # the writer process's memory is reported apart from the workers': its DuckDB appends every answer
        wm = health["writer_memory"]
        assert wm["rss_bytes"] > 0 and wm["duckdb_bytes"] >= 0
        assert wm["duckdb_limit"] in ("64.0 MiB", "67.1 MB")  # serve's WRITER_MEMORY_LIMIT (none given)
        if sys.platform.startswith("linux"):  # glibc's view of the C allocator
            assert wm["malloc"]["in_use"] > 0 and health["memory"]["malloc"]["in_use"] > 0
        text = two.get("/metrics").text
        # the counters are every worker's: 12 answered 3101 requests, whichever worker answered
        time.sleep(1.5)  # the other worker's report (every second)
        text = two.get("/metrics").text
        n = sum(
            float(line.rsplit(" ", 1)[1])
            for line in text.splitlines()
            if line.startswith('medaudit_prealert_requests_total{route="/prealert/3101"')
        )
        assert n == len(reqs)
        assert 'process_resident_memory_bytes{worker="0"}' in text and 'worker="1"' in text
        assert "medaudit_prealert_writer_duckdb_memory_bytes " in text
    finally:
        out = two.stop()
    ids, items, n_fb = _stored(two_db)
    assert sorted(ids) == sorted(jr) and n_fb == 1, out
    assert items == sum(len(r["judge_result_detail_dtos"]) for a in answers for r in a["output"]["result"])
    journal = Path(str(two_db) + ".prealert-journal")
    assert not [p for p in journal.iterdir() if p.name.endswith((".jsonl", OPEN))]
    assert not Path(str(two_db) + ".prealert-snapshot.duckdb").exists()


@pytest.mark.slow
def test_answers_of_a_service_killed_mid_run_are_stored_once_at_the_next_start(base, tmp_path):
    """The parent (the writer) is killed with SIGKILL while requests come: the workers follow it
    and close their segments; the next start stores everything answered, each once."""
    con, rules, keys = base
    con.close()
    path = tmp_path / "svc.duckdb"
    svc = Service(path, rules, keys, 2)
    answered: list[str] = []
    stop = threading.Event()

    def client(k: int) -> None:
        i = 0
        while not stop.is_set():
            try:
                r = svc.post(
                    "/prealert/3101", request([order(f"K{k}-{i}", UTERUS)], mdtrt_id=f"V-K{k}-{i}", psn=f"P-K{k}")
                )
            except httpx.HTTPError:
                return
            if r.status_code == 200:
                answered.extend(x["jr_id"] for x in r.json()["output"]["result"])
            i += 1

    with ThreadPoolExecutor(4) as pool:
        futs = [pool.submit(client, k) for k in range(4)]
        while len(answered) < 40:
            time.sleep(0.02)
        svc.proc.send_signal(signal.SIGKILL)
        svc.proc.wait(30)
        stop.set()
        for f in futs:
            f.result(60)
    deadline = time.monotonic() + 30  # the workers end once their parent is gone
    while subprocess.run(["pgrep", "-f", str(path) + ".prealert-snapshot"], capture_output=True).stdout:
        assert time.monotonic() < deadline, "workers outlived their parent"
        time.sleep(0.1)
    con = db.connect(path)
    try:
        store.ensure(con)
        before = {r[0] for r in con.execute("SELECT jr_id FROM prealert_results").fetchall()}
        ResultWriter(con, Path(str(path) + ".prealert-journal"), start=False).flush()  # as the next start does
    finally:
        con.close()
    ids, items, _fb = _stored(path)
    assert len(ids) == len(set(ids))  # none twice
    assert set(answered) <= set(ids)  # none lost (the last answers may not have reached the client)
    assert items == len(ids) and len(set(ids) - before) > 0


def _result(jr: str, now: dt.datetime) -> tuple:
    return (jr, "H001", "default", "R-SEX-001", "1", "x", "restrict_gender", "violation", "5", "P", "P", "V", "e",
            Decimal("1.00"), now, None)  # fmt: skip


def test_a_writer_killed_between_storing_and_deleting_a_segment_stores_nothing_twice(base, tmp_path):
    """Two producers' segments (one left open by a producer that died, its last line cut short);
    a writer process dies right after committing a segment, before deleting it, twice; the next
    writer stores the rest: every answer once."""
    con, _rules, _keys = base
    folder = tmp_path / "journal"
    now = dt.datetime(2026, 3, 2, 9, 0)
    producers = [JournalProducer(folder, start=False) for _ in range(2)]
    want = []
    for n in range(30):
        p = producers[n % 2]
        jr = f"J{n:04d}"
        want.append(jr)
        p.add([_result(jr, now)], [(jr, jr + "-1", "RX", UTERUS, "1", Decimal("1.00"))])
        if n % 5 == 4:
            p.rotate()
    producers[0].add_feedback([("J0000", "H001", "1", "2", None, now)])
    for p in producers:
        p.rotate()
    # a producer that died with its segment open, in the middle of a line
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    orphan = folder / f"{time.time_ns():020d}-{int(dead.stdout)}-000001{OPEN}"
    orphan.write_bytes(b'{"f": [["J0001", "H001", "1", "2", null, "2026-03-02T09:30:00"]]}\n{"r": [["J9')
    con.close()
    script = textwrap.dedent(f"""
        import os, sys
        from pathlib import Path
        sys.path.insert(0, {str(ROOT)!r})
        from medaudit import db
        from medaudit.prealert.writer import ResultWriter
        real = Path.unlink
        seen = [0]
        def unlink(self, missing_ok=False):  # killed after the k-th commit, before its delete
            if self.suffix == ".jsonl":
                seen[0] += 1
                if seen[0] == int(sys.argv[1]):
                    os._exit(9)
            return real(self, missing_ok=missing_ok)
        Path.unlink = unlink
        con = db.connect({str(tmp_path / "svc.duckdb")!r})
        ResultWriter(con, {str(folder)!r}, start=False, shared=True).flush()
    """)
    for k in (1, 3):  # the first segment; then (the first skipped as stored) the third
        r = subprocess.run([sys.executable, "-c", script, str(k)], capture_output=True, text=True, cwd=ROOT)
        assert r.returncode == 9, r.stderr
    con = db.connect(tmp_path / "svc.duckdb")
    try:
        segs = list(folder.glob("*.jsonl"))
        assert len(segs) >= 3  # the killed writers left their stored segments
        w = ResultWriter(con, folder, start=False, shared=True)
        w.flush()
        ids = [r[0] for r in con.execute("SELECT jr_id FROM prealert_results").fetchall()]
        fb = con.execute("SELECT jr_id FROM prealert_feedback ORDER BY jr_id").fetchall()
        items = con.execute("SELECT count(*) FROM prealert_result_items").fetchall()[0][0]
        assert sorted(ids) == want and items == 30
        assert fb == [("J0000",), ("J0001",)]
        assert not [p for p in folder.iterdir() if p.name.endswith((".jsonl", OPEN))]
        assert w.status()["stored_segments"] >= 1
        w.flush()  # the marks of deleted segments go at the next store
        assert con.execute("SELECT count(*) FROM prealert_journal_stored").fetchall()[0][0] == 0
    finally:
        con.close()


def test_a_flush_stores_the_producers_segments_in_one_transaction(base, tmp_path):
    """Segments closed since the last store go in one transaction (one commit, one set of
    marks: the marks share the transaction's time); one already marked stored is skipped; one
    whose rows no column takes makes the batch fall back to one segment at a time, and only it
    is set aside."""
    con, _rules, _keys = base
    folder = tmp_path / "journal"
    w = ResultWriter(con, folder, start=False, shared=True)  # before the segments: none is an earlier run's
    now = dt.datetime(2026, 3, 2, 9, 0)
    producers = [JournalProducer(folder, start=False) for _ in range(2)]
    for n in range(12):
        p = producers[n % 2]
        p.add(
            [_result(f"J{n:04d}", now)],
            [(f"J{n:04d}", f"J{n:04d}-1", "RX", UTERUS, "1", Decimal("1.00"))],
        )
        if n % 4 == 3:
            p.rotate()
    for p in producers:
        p.rotate()
    segs = sorted(folder.glob("*.jsonl"))
    assert len(segs) >= 4
    # one of them already stored by a writer that died before deleting it: its mark is there
    con.execute("INSERT INTO prealert_journal_stored VALUES (?, now()::TIMESTAMP)", [segs[0].name])
    skipped = {r[0] for r in w._read(segs[0])[0]["prealert_results"]}
    w.flush()
    ids = {r[0] for r in con.execute("SELECT jr_id FROM prealert_results").fetchall()}
    assert ids == {f"J{n:04d}" for n in range(12)} - skipped and skipped
    marks = con.execute(
        "SELECT count(*), count(DISTINCT stored_at) FROM prealert_journal_stored WHERE segment <> ?", [segs[0].name]
    ).fetchall()
    assert marks == [(len(segs) - 1, 1)]  # one transaction for all of them
    assert not list(folder.glob("*.jsonl")) and w.status()["stored_segments"] == len(segs)

    # a batch with a segment of values no column takes: the others stored, that one set aside
    for n in range(20, 26):
        producers[n % 2].add_feedback([(f"J{n:04d}", "H001", "1", "2", None, now)])
        producers[n % 2].rotate()
    (folder / f"{time.time_ns():020d}-{os.getpid()}-999999.jsonl").write_bytes(
        b'{"f": [["J0030", "H001", 5, "2", null, "2026-03-02T09:30:00"]]}\n'
    )
    w.flush()
    fb = [r[0] for r in con.execute("SELECT jr_id FROM prealert_feedback ORDER BY jr_id").fetchall()]
    assert fb == [f"J{n:04d}" for n in range(20, 26)]
    assert len(list(folder.glob("*.corrupt"))) == 1 and not list(folder.glob("*.jsonl"))
    assert "rows no table takes" in w.status()["last_error"]
    w.close()


class _Remote:
    """The writer's side of a worker, in this process (the Unix socket left out)."""

    def __init__(self, con, writer):
        self.con, self.writer, self.slot = con, writer, 0

    def owned(self, inst, ids):
        self.writer.barrier()
        return {
            r[0]
            for r in self.con.execute(
                "SELECT jr_id FROM prealert_results WHERE fixmedins_code = ? AND list_contains(?, jr_id)", [inst, ids]
            ).fetchall()
        }

    def results(self, inst, by, value, limit):
        from medaudit.prealert.app import _results

        self.writer.barrier()
        return _results(
            self.con, inst, "r.jr_id = ?" if by == "jr_id" else "TRUE", [value] if by == "jr_id" else [], limit
        )

    def status(self):
        return {
            "writer": self.writer.status(),
            "me": {"slot": 0, "pid": os.getpid()},
            "workers": {"of": 1, "ready": 1, "restarts": 0, "each": []},
        }


def test_a_worker_past_capacity_refuses_at_once(base, tmp_path):
    """A worker (journal producer, reads through the writer) is admitted as the one process is:
    past its places, 503 + Retry-After while the held checks still run; its answers reach the
    database through the writer."""
    con, rules, keys = base
    lib = load_library(rules)
    folder = tmp_path / "j"
    writer = ResultWriter(con, folder, start=False, shared=True)
    producer = JournalProducer(folder, interval=0.05)
    app = create_app(
        con,
        {"default": lib},
        store.load_keys_file(keys),
        writer=producer,
        remote=_Remote(con, writer),
        max_inflight=2,
        max_wait=0.05,
    )
    release, entered, _running = hold_checks(app.state.checker)
    hdr = {"X-API-Key": KEY1}
    with TestClient(app) as client:
        with ThreadPoolExecutor(8) as pool:
            held = [
                pool.submit(client.post, "/prealert/3101", json=request([order(f"RX{i}", UTERUS)]), headers=hdr)
                for i in range(2)
            ]
            for _ in range(2):
                assert entered.acquire(timeout=60)
            refused = [
                pool.submit(client.post, "/prealert/3101", json=request([order(f"X{i}", UTERUS)]), headers=hdr).result(
                    60
                )
                for i in range(5)
            ]
            assert not release.is_set()
            release.set()
            done = [f.result(60) for f in held]
        assert [r.status_code for r in refused] == [503] * 5 and refused[0].headers["retry-after"] == "1"
        jr = [r.json()["output"]["result"][0]["jr_id"] for r in done]
        got = client.get(f"/prealert/results/{jr[0]}", headers=hdr)
        assert got.status_code == 200 and got.json()["jr_id"] == jr[0]
        assert client.get("/health").json()["worker"]["slot"] == 0
    producer.close()
    writer.close()
    assert sorted(r[0] for r in con.execute("SELECT jr_id FROM prealert_results").fetchall()) == sorted(jr)


def test_workers_option_is_checked():
    assert resolve("1") == 1 and resolve("3") == 3 and resolve("auto") >= 1
    for bad in ("0", "-2", "two", ""):
        with pytest.raises(ValueError, match="--workers must be a whole number from 1 or 'auto'"):
            resolve(bad)


def test_sync_results_needs_one_worker(base, tmp_path):
    _con, rules, _keys = base
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "medaudit",
            "serve",
            "--db",
            str(tmp_path / "svc.duckdb"),
            "--rules",
            str(rules),
            "--workers",
            "2",
            "--sync-results",
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert r.returncode != 0 and "--sync-results needs --workers 1" in r.stdout + r.stderr
