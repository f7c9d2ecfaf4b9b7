"""The writer's memory over a long run: the database reopened every ``reopen_rows`` rows stored
(an open DuckDB database keeps about a byte of C heap per row appended to it; see point 7 of
:mod:`medaudit.prealert.writer`), without losing or doubling an answer."""

from __future__ import annotations

import datetime as dt
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import duckdb
import pytest

from medaudit import db
from medaudit.prealert import store
from medaudit.prealert.metrics import malloc_bytes
from medaudit.prealert.writer import JournalProducer, ResultWriter

NOW = dt.datetime(2026, 3, 2, 9, 0)


def res_rows(jr: str) -> list[tuple]:
    return [
        (jr, "H001", "default", f"R-{k}", "1", "name", "restrict_gender", "violation", "5", "P1", "P1", "V1",
         "text", Decimal("12.50"), NOW, None)
        for k in range(2)
    ]  # fmt: skip


def item_rows(jr: str, n: int = 3) -> list[tuple]:
    return [(jr, f"{jr}-{i}", f"RX{i}", "001102000030000", "1", Decimal("3.00")) for i in range(n)]


class Service:
    """What ``serve --workers 2`` runs, without HTTP: two producers, the writer over their journal,
    the writer's connection the only one of the database."""

    def __init__(self, tmp_path, reopen_rows: int | None, items: int = 3, fail_opens: int = 0):
        self.path = tmp_path / "svc.duckdb"
        self.opened: list[duckdb.DuckDBPyConnection] = []
        self.fail_opens = fail_opens
        self.items = items
        self.first = self.open()
        folder = tmp_path / "journal"
        kw = {"reopen": self.open, "reopen_rows": reopen_rows} if reopen_rows else {}
        self.writer = ResultWriter(self.first, folder, start=False, shared=True, **kw)
        self.producers = [JournalProducer(folder, start=False) for _ in range(2)]
        self.n = 0

    def open(self) -> duckdb.DuckDBPyConnection:
        if self.opened and self.fail_opens:
            self.fail_opens -= 1
            raise duckdb.IOException("refused (test)")
        con = db.connect(self.path)
        store.ensure(con)
        con.execute("SET threads = 1")
        con.execute("SET memory_limit = '64MiB'")
        self.opened.append(con)
        return con

    def answer(self, k: int) -> None:
        for p in self.producers:
            for _ in range(k):
                jr = f"J{self.n:09d}"
                self.n += 1
                p.add(res_rows(jr), item_rows(jr, self.items))
            p.rotate()

    def stored(self) -> tuple[int, int, int]:
        with self.writer.reading() as cur:
            r, distinct = cur.execute("SELECT count(*), count(DISTINCT jr_id) FROM prealert_results").fetchall()[0]
            items = cur.execute("SELECT count(*) FROM prealert_result_items").fetchall()[0][0]
        return r, distinct, items


def test_the_writer_closes_and_reopens_the_database_every_reopen_rows_and_stores_each_answer_once(tmp_path):
    svc = Service(tmp_path, reopen_rows=300)
    w = svc.writer
    svc.first.execute("ATTACH ':memory:' AS this_instance")  # what an open database keeps
    for _ in range(6):
        svc.answer(25)  # 50 answers, 250 rows a store
        w.flush()
    # stores 2, 4 and 6 passed 300 rows since the last opening
    assert w.reopens == 3 and len(svc.opened) == 4 and w.con is svc.opened[-1]
    for old in svc.opened[:-1]:  # the connections it left are closed
        with pytest.raises(duckdb.ConnectionException):
            old.execute("SELECT 1")
    # the database itself was closed (nothing else held it), so what it kept is gone
    assert not w.con.execute("SELECT * FROM duckdb_databases() WHERE database_name = 'this_instance'").fetchall()
    assert svc.stored() == (2 * svc.n, svc.n, 3 * svc.n)
    svc.answer(10)
    w.flush()  # 100 rows: no reopening
    assert w.reopens == 3
    assert svc.stored() == (2 * svc.n, svc.n, 3 * svc.n)
    # a restart over the same journal stores nothing again
    w.close()
    w.con.close()
    again = db.connect(svc.path)
    w2 = ResultWriter(again, tmp_path / "journal", start=False, shared=True)
    w2.flush()
    assert again.execute("SELECT count(*), count(DISTINCT jr_id) FROM prealert_results").fetchall()[0] == (
        2 * svc.n,
        svc.n,
    )
    again.close()


def test_without_reopen_the_writer_keeps_its_connection(tmp_path):
    svc = Service(tmp_path, reopen_rows=None)
    for _ in range(4):
        svc.answer(25)
        svc.writer.flush()
    assert svc.writer.reopens == 0 and svc.writer.con is svc.first and len(svc.opened) == 1
    assert svc.stored() == (2 * svc.n, svc.n, 3 * svc.n)
    svc.first.close()


def test_an_open_reader_holds_off_the_reopening_and_a_failed_opening_loses_nothing(tmp_path):
    svc = Service(tmp_path, reopen_rows=100, fail_opens=1)
    w = svc.writer
    with w.reading() as cur:
        svc.answer(25)
        w.flush()  # past 100 rows, but a reader's cursor is open: not now
        assert w.reopens == 0 and cur.execute("SELECT count(*) FROM prealert_results").fetchall()[0][0] == 100
    svc.answer(5)
    with pytest.raises(duckdb.IOException):
        w.flush()  # stored, then the connection closed and the new one refused
    assert w.reopens == 0 and w.failures == 1 and "reopening the database" in (w.last_error or "")
    svc.answer(5)
    w.flush()  # opened now, then stores what came meanwhile
    assert w.reopens == 1 and w.con is svc.opened[-1]
    assert svc.stored() == (2 * svc.n, svc.n, 3 * svc.n)
    w.con.close()


def _growth(tmp_path, reopen_rows: int | None, stores: int) -> float:
    """malloc in-use growth (bytes) of the writer over ``stores`` stores of 400 answers (4,000
    rows), from the store after the first 25 (warmed up) to the last."""
    svc = Service(tmp_path, reopen_rows=reopen_rows, items=8)
    w = svc.writer
    start = 0
    for k in range(stores):
        svc.answer(200)
        w.flush()
        if k == 24:
            start = malloc_bytes()["in_use"]  # type: ignore[index]
    end = malloc_bytes()["in_use"]  # type: ignore[index]
    assert svc.stored() == (2 * svc.n, svc.n, 8 * svc.n)
    w.con.close()
    return end - start


def _growth_alone(folder, reopen_rows: int | None, stores: int) -> float:
    """:func:`_growth` in a process of its own: a test process's heap also moves with what the
    tests before it left (under pytest-xdist the same measurement read 0.38 MB where a fresh
    process reads 1.9 MB)."""
    folder.mkdir()
    code = (
        "import sys; from pathlib import Path; sys.path.insert(0, sys.argv[1]);"
        "from test_prealert_writer_memory import _growth;"
        "print(_growth(Path(sys.argv[2]), None if sys.argv[3] == '-' else int(sys.argv[3]), int(sys.argv[4])))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(Path(__file__).parent), str(folder), str(reopen_rows or "-"), str(stores)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.returncode == 0, out.stderr
    return float(out.stdout.strip().splitlines()[-1])


@pytest.mark.slow
@pytest.mark.skipif(malloc_bytes() is None, reason="needs glibc's mallinfo2")
def test_the_writers_heap_does_not_grow_with_the_rows_it_stores(tmp_path):
    """About 1.2M rows stored: without reopening, the writer's heap grows by about a byte a row
    (DuckDB's, for as long as the database is open); reopening every 100,000 rows keeps it flat."""
    plain = _growth_alone(tmp_path / "plain", None, 300)
    reopened = _growth_alone(tmp_path / "reopened", 100_000, 300)
    assert plain > 700_000, f"DuckDB no longer keeps memory per row appended ({plain} B): is the reopening needed?"
    print(f"heap growth over 1.2M rows: {plain} B without reopening, {reopened} B reopening every 100,000 rows")
    assert reopened < plain / 3, (reopened, plain)
