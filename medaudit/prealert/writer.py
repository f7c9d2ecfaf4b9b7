"""The pre-alert service's writer: answered results and doctors' feedback stored off the answering path.

A 3101 answer never waits on the database. What it answered goes to :class:`ResultWriter`:

1. **Journal first.** Each answer's rows are appended, as one JSON line, to the current journal
   segment (``<db>.prealert-journal/<n>.jsonl``; one ``write`` of a few hundred bytes, no
   ``fsync``: a killed process loses nothing the kernel has, a power cut may lose the last
   moments). This is the only work on the answering path.
2. **Bounded queue.** The rows are also kept in memory, up to ``max_rows`` rows (results,
   items and feedback together), so the writer need not read them back. When the queue is
   full the answer still goes to the journal, only not to memory: the segment is marked
   *overflowed* and the writer reads it back from the file. ``/health`` says so
   (:meth:`ResultWriter.status`); answers continue.
3. **Batched appends.** Every ``interval`` seconds (sooner when the queue is half full) the
   writer thread rotates the segment (new answers go to the next one), stores the closed
   segment's rows in one transaction (an Arrow batch per table), then deletes the segment.
   A segment that fails to store stays on disk and is retried.
4. **Restart.** Segments left by a process that ended before storing them (killed, crashed,
   the database refused them) are stored when the writer starts, idempotently: a result whose
   ``jr_id`` is already stored is skipped with its items, a feedback row equal to a stored one
   too. So no answered result is lost or stored twice across a restart. A damaged segment (a
   line in its middle that is not a journal entry, rows no table takes) has its readable entries
   stored and is renamed ``*.corrupt`` for the operator (``/health`` says so): it is never retried
   and never holds up the segments after it.
5. **Checkpoints off the answering path.** DuckDB folds its write-ahead log into the database
   file (a checkpoint) when the log passes ``checkpoint_threshold``; the commit that passes it
   pays. The writer raises DuckDB's own threshold (``wal_limit`` x 4) and checkpoints itself
   in its own thread when the log passes ``wal_limit``, so no request thread (a read endpoint
   flushing) ever runs one.
6. **Behind the answers for the CPU** (a service of several workers). There the writer is a
   process of its own (the parent) and its store thread runs in Linux's idle scheduling class
   (``SCHED_IDLE``, that thread alone): the kernel runs it on time no answering worker wants
   and counts a core running only it as free, so a worker woken by a request takes that core
   at once instead of waiting behind a store or a checkpoint (up to about 0.4 s of CPU). At
   1,000 answers a second on 2 cores the writer needs about a tenth of a core and gets it from
   the idle time; before, most seconds of slow answers were the ones just before a checkpoint
   (``benchmarks/README.md``). Under a load that keeps every core busy the store
   falls behind: the journal keeps every answer, ``/health`` says how far behind
   (``oldest_unstored_s``), and the store catches up when the load drops. The one-process
   service (``--workers 1``) keeps its writer thread at normal priority: it shares the
   answering thread's GIL, and a low-priority thread holding it would hold up the answers.
7. **The database reopened every** ``reopen_rows`` **rows** (a writer given ``reopen``: the
   service's writer process). An open DuckDB database keeps about a byte of C heap for every row
   appended to it (measured with DuckDB 2.0.1: 2.7-3.2 MB over 3.2M rows, whatever the number of
   columns, their types, the rows a commit or the checkpoints; not in ``duckdb_memory()``, not
   returned by a checkpoint or by closing the connection while another connection keeps the
   database open), so a writer storing 12 rows an answer grew by 7-15 bytes an answer for
   as long as it ran. Only closing the database gives it back: after a store that brings the
   rows stored since it opened to ``reopen_rows``, the writer closes its connection (DuckDB
   checkpoints as it closes) and takes a new one from ``reopen``. Its connection must then be
   the only one of the database in the process: other threads read through :meth:`reading`.

Readers (3103's ownership check, the results endpoints, shutdown) call :meth:`ResultWriter.flush`
first: everything answered so far is stored by then.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import os
import tempfile
import threading
import time
from decimal import Decimal
from pathlib import Path
from typing import Any, Callable, Iterator

import duckdb
import orjson
import pyarrow as pa

from .metrics import trim_heap

log = logging.getLogger(__name__)


def idle_priority() -> bool:
    """Put the calling thread (only it) in Linux's ``SCHED_IDLE`` scheduling class: it runs when
    no other thread wants the core. True when set; elsewhere, or when refused, False (the thread
    keeps its priority). Lowering needs no privilege; coming back from it does, so it is never
    undone."""
    if not hasattr(os, "SCHED_IDLE"):  # Linux's only
        return False
    try:
        os.sched_setscheduler(threading.get_native_id(), os.SCHED_IDLE, os.sched_param(0))
    except OSError:
        return False
    return True


def _written_ns(path: Path) -> int | None:
    """When a journal segment was last written (None: stored and gone meanwhile). A segment holds
    the answers of one rotation (a worker's every 0.1 s, the one-process writer's at each store),
    so this is that close to its oldest answer; its name says when it was opened, which an idle
    worker may have done minutes before its first answer."""
    try:
        return path.stat().st_mtime_ns
    except OSError:
        return None


#: the suffix of a segment a producer (:class:`JournalProducer`) is still appending to
OPEN = ".jsonl.open"

TABLES = ("prealert_results", "prealert_result_items", "prealert_feedback")
#: journal line keys of the three tables
KEYS = ("r", "i", "f")


def journal_dir(con: duckdb.DuckDBPyConnection) -> Path:
    """Where the journal of the service over ``con`` lives: next to the database file, or in the
    system's temporary folder for an in-memory database."""
    path = con.execute("SELECT path FROM duckdb_databases() WHERE database_name = current_database()").fetchall()
    p = path[0][0] if path else None
    if not p or p == ":memory:":
        return Path(tempfile.mkdtemp(prefix="medaudit-prealert-journal-"))
    return Path(str(p) + ".prealert-journal")


def wal_path(con: duckdb.DuckDBPyConnection) -> Path | None:
    path = con.execute("SELECT path FROM duckdb_databases() WHERE database_name = current_database()").fetchall()
    p = path[0][0] if path else None
    return Path(str(p) + ".wal") if p and p != ":memory:" else None


_SCHEMAS: dict[str, pa.Schema] = {}


def arrow_schema(cur, table: str) -> pa.Schema:
    """The Arrow schema of a results table (from its DuckDB column types; they are fixed in store.SCHEMA)."""
    if table not in _SCHEMAS:
        fields = []
        for name, typ, *_ in cur.execute(f"DESCRIBE {table}").fetchall():
            if typ.startswith("DECIMAL"):
                p, sc = typ[8:-1].split(",")
                t = pa.decimal128(int(p), int(sc))
            else:
                t = {"VARCHAR": pa.string(), "TIMESTAMP": pa.timestamp("us"), "VARCHAR[]": pa.list_(pa.string())}[typ]
            fields.append(pa.field(name, t))
        _SCHEMAS[table] = pa.schema(fields)
    return _SCHEMAS[table]


MARKS = """CREATE TABLE IF NOT EXISTS prealert_journal_stored (segment VARCHAR, stored_at TIMESTAMP)"""


@contextlib.contextmanager
def _transaction(con) -> Iterator[Any]:
    """A cursor of ``con`` inside one transaction: committed when the block ends, rolled back if
    it raises."""
    cur = con.cursor()
    try:
        cur.execute("BEGIN")
        try:
            yield cur
        except BaseException:
            cur.execute("ROLLBACK")
            raise
        cur.execute("COMMIT")
    finally:
        cur.close()


def write_rows(con, rows: dict[str, list[tuple]], idempotent: bool = False, segment: str | None = None) -> bool:
    """Insert rows (tuples in the tables' column order) of the three tables in one transaction,
    as Arrow tables (DuckDB binds hundreds of ``?`` at about 0.3 ms a row, an Arrow table at once).
    ``idempotent``: skip results already stored (with their items) and feedback rows equal to
    stored ones (a journal segment stored again after a crash). ``segment``: the journal
    segment's name, marked stored in ``prealert_journal_stored`` in the same transaction; a
    segment already marked is not stored again (returns False)."""
    if segment is not None:
        return bool(write_segments(con, [(segment, rows)], idempotent=idempotent))
    if not any(rows.get(t) for t in TABLES):
        return True
    with _transaction(con) as cur:
        _insert(cur, _fresh(cur, rows) if idempotent else rows)
    return True


def write_segments(con, batch: list[tuple[str, dict[str, list[tuple]]]], idempotent: bool = False) -> list[str]:
    """The rows of several journal segments in one transaction, each segment marked stored in
    ``prealert_journal_stored`` in it; a segment already marked is skipped (its rows are not
    stored again). ``idempotent``: as for :func:`write_rows`. Returns the names of the segments
    stored now. One commit for a flush's segments instead of one each: at 1,000 answers a second
    from two workers (about 20 segments a second) the writer's commits and marks were a quarter
    of its CPU."""
    if not batch:
        return []
    with _transaction(con) as cur:
        names = [name for name, _rows in batch]
        marked = {
            r[0]
            for r in cur.execute(
                "SELECT segment FROM prealert_journal_stored WHERE list_contains(?, segment)", [names]
            ).fetchall()
        }
        fresh = [(name, rows) for name, rows in batch if name not in marked]
        if fresh:
            cur.execute(
                "INSERT INTO prealert_journal_stored SELECT unnest(?::VARCHAR[]), now()::TIMESTAMP",
                [[name for name, _rows in fresh]],
            )
            together: dict[str, list[tuple]] = {}
            for _name, rows in fresh:
                for table, r in rows.items():
                    together.setdefault(table, []).extend(r)
            _insert(cur, _fresh(cur, together) if idempotent else together)
    return [name for name, _rows in fresh]


def _insert(cur, rows: dict[str, list[tuple]]) -> None:
    """Append the rows, one Arrow table per table, inside the caller's transaction."""
    for table in TABLES:
        data = rows.get(table)
        if not data:
            continue
        schema = arrow_schema(cur, table)
        tbl = pa.Table.from_arrays([pa.array(col, type=f.type) for col, f in zip(zip(*data), schema)], schema=schema)
        cur.register("__rows", tbl)
        cur.execute(f"INSERT INTO {table} SELECT * FROM __rows")
        cur.unregister("__rows")


def _fresh(cur, rows: dict[str, list[tuple]]) -> dict[str, list[tuple]]:
    """The rows not stored yet (see :func:`write_rows`)."""
    out = dict(rows)
    res = rows.get("prealert_results") or []
    if res:
        cur.register("__ids", pa.table({"jr_id": [r[0] for r in res]}))
        have = {
            r[0]
            for r in cur.execute(
                "SELECT jr_id FROM prealert_results WHERE jr_id IN (SELECT jr_id FROM __ids)"
            ).fetchall()
        }
        cur.unregister("__ids")
        out["prealert_results"] = [r for r in res if r[0] not in have]
        out["prealert_result_items"] = [r for r in rows.get("prealert_result_items") or [] if r[0] not in have]
    fb = rows.get("prealert_feedback") or []
    if fb:
        cur.register("__ids", pa.table({"jr_id": list({r[0] for r in fb})}))
        have = set(cur.execute("SELECT * FROM prealert_feedback WHERE jr_id IN (SELECT jr_id FROM __ids)").fetchall())
        cur.unregister("__ids")
        out["prealert_feedback"] = [r for r in fb if tuple(r) not in have]
    return out


def _encode(x):
    if isinstance(x, Decimal):
        return str(x)
    raise TypeError(f"{type(x).__name__} is not JSON")


def conversions(schema: pa.Schema) -> tuple[int, tuple[int, ...], tuple[int, ...]]:
    """The table's width and which of its columns are decimals and timestamps: what
    :func:`_decode` needs of the schema, worked out once for a segment's every line."""
    return (
        len(schema),
        tuple(i for i, f in enumerate(schema) if pa.types.is_decimal(f.type)),
        tuple(i for i, f in enumerate(schema) if pa.types.is_timestamp(f.type)),
    )


def _decode(rows: list[list], conv: tuple[int, tuple[int, ...], tuple[int, ...]]) -> list[tuple]:
    """Journal rows (JSON values) back to Python values of the table's columns (``conv``: the
    table's :func:`conversions`)."""
    width, decimals, stamps = conv
    if not isinstance(rows, list) or not all(isinstance(r, list) and len(r) == width for r in rows):
        raise ValueError(f"not rows of {width} values")
    kinds = {type(v) for r in rows for v in r}
    if any(issubclass(k, (list, dict)) for k in kinds):
        raise ValueError("a list or object where a value goes")
    out = []
    for r in rows:
        for i in decimals:
            if r[i] is not None:
                r[i] = Decimal(r[i])
        for i in stamps:
            if r[i] is not None:
                r[i] = dt.datetime.fromisoformat(r[i])
        out.append(tuple(r))
    return out


def producer_pid(path: Path) -> int | None:
    """The process id in a segment's name (``<time ns>-<pid>-<seq>.jsonl[.open]``)."""
    parts = path.name.split("-")
    try:
        return int(parts[1])
    except (IndexError, ValueError):
        return None


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    return True


class _Segment:
    def __init__(self, path: Path):
        self.path = path
        self.fd = -1  # the file is made on the first answer (an idle service leaves no empty files)
        self.entries: list[tuple[str, list[tuple]]] = []  # (table, rows) kept in memory
        self.overflowed = False  # some entries are only in the file
        self.written = 0  # entries in the file

    def append(self, line: bytes) -> None:
        if self.fd < 0:
            self.fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        os.write(self.fd, line)
        self.written += 1

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


class _Answers:
    """What every side of the journal takes: an answer's result and item rows, or feedback rows,
    as one JSON line (:meth:`_append` says where the line goes)."""

    def add(self, res_rows: list[tuple], item_rows: list[tuple]) -> None:
        """Queue an answer's result and item rows (never blocks on the database)."""
        self._add((("prealert_results", res_rows), ("prealert_result_items", item_rows)))

    def add_feedback(self, rows: list[tuple]) -> None:
        self._add((("prealert_feedback", rows),))

    def _add(self, parts) -> None:
        parts = [(t, rows) for t, rows in parts if rows]
        if parts:
            line = orjson.dumps({KEYS[TABLES.index(t)]: rows for t, rows in parts}, default=_encode) + b"\n"
            self._append(parts, line)

    def _append(self, parts: list, line: bytes) -> None:
        raise NotImplementedError


class ResultWriter(_Answers):
    """Stores answered results and feedback in the background (see the module's doc).

    ``interval``: seconds between stores; ``max_rows``: rows the in-memory queue holds (beyond,
    the journal file alone keeps them); ``wal_limit``: bytes of write-ahead log after which
    the writer checkpoints; ``start``: run the background thread (tests drive :meth:`flush`).
    ``reopen``: a function opening a new connection of the same database (configured as ``con``
    was); given, the writer closes its connection and takes a new one every ``reopen_rows`` rows
    stored (point 7 of the module's doc). ``con`` must then be the process's only connection of
    the database, :attr:`con` is the current one (the caller closes it at the end) and other
    threads read through :meth:`reading`."""

    #: rows stored between two openings of the database (with ``reopen``): the writer's heap goes
    #: up and down by about 1.5 MB (1.2-1.4 bytes a row of the service's tables, measured); at
    #: 1,000 answers a second (12 rows each) a reopening every 83 s. A store that reopens took
    #: 0.10 to 0.32 s in all against 0.014 s for one that does not (200 answers a store, the
    #: tests' driver): the checkpoint DuckDB runs as it closes, one the writer would have run
    #: soon anyway, and the opening; on the idle-class thread, so no answer waits for it
    REOPEN_ROWS = 1_000_000

    def __init__(
        self,
        con,
        folder: str | Path | None = None,
        interval: float = 0.2,
        max_rows: int = 20_000,
        wal_limit: int = 16 * 2**20,
        start: bool = True,
        shared: bool = False,
        alive=None,
        idle: bool = False,
        reopen: Callable[[], duckdb.DuckDBPyConnection] | None = None,
        reopen_rows: int | None = None,
    ):
        if max_rows < 1:
            raise ValueError(f"max_rows must be at least 1, got {max_rows!r}")
        self.con, self.interval, self.max_rows, self.wal_limit = con, interval, max_rows, wal_limit
        #: idle: the store thread runs in the idle scheduling class (a writer process of its own)
        self.idle = idle
        self.scheduling = "normal"  # the store thread's class once it runs: "idle" when set
        self.folder = Path(folder) if folder is not None else journal_dir(con)
        self.folder.mkdir(parents=True, exist_ok=True)
        #: shared: other processes (:class:`JournalProducer`) append segments to the folder too;
        #: every store takes their closed segments, and those of producers no longer alive
        self.shared = shared
        self._alive = alive or pid_alive
        con.execute(MARKS)
        self._unmark: list[str] = []  # segments deleted after storing: their marks go next store
        self._configure(con)
        self._reopen = reopen
        self.reopen_rows = self.REOPEN_ROWS if reopen_rows is None else reopen_rows
        self.reopens = 0  # times the database was closed and opened again
        self._opened_rows = 0  # stored_rows when the database was last opened
        self._closed = False  # the connection was closed and the new one could not be opened
        self._readers = 0  # cursors open through reading()
        self._reopening = False
        self._readers_cv = threading.Condition()
        self._lock = threading.Lock()  # the current segment and the counters
        self._write_lock = threading.Lock()  # one store at a time
        self._wake = threading.Event()
        self._stop = False
        self._seq = 0
        self.queued_rows = 0  # rows in memory, not stored yet
        self.overflow_entries = 0  # answers that found the queue full (kept in the journal only), ever
        self.stored_rows = 0
        self.failures = 0
        self.quarantined = 0  # damaged journal segments set aside (*.corrupt)
        self.checkpoints = 0
        self.segments_stored = 0
        self.last_error: str | None = None
        self._seg = self._new_segment()
        self._pending = self._leftovers()  # segments of an earlier run, or not stored yet
        self._earlier = set(self._pending)
        self._thread = None
        if start:
            self._thread = threading.Thread(target=self._run, name="prealert-writer", daemon=True)
            self._thread.start()

    def _configure(self, con) -> None:
        self._wal = wal_path(con)
        if self._wal is not None and self.wal_limit:
            # DuckDB's own checkpoint (run by whichever commit passes it) only as a backstop
            con.execute(f"SET checkpoint_threshold = '{int(self.wal_limit) * 4}B'")

    @contextlib.contextmanager
    def reading(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """A cursor of the writer's connection for another thread to read with (closed when the
        block ends); the writer does not reopen the database while it is open."""
        with self._readers_cv:
            while self._reopening:
                self._readers_cv.wait()
            cur = self.con.cursor()
            self._readers += 1
        try:
            yield cur
        finally:
            cur.close()
            with self._readers_cv:
                self._readers -= 1
                self._readers_cv.notify_all()

    def _maybe_reopen(self) -> None:
        """Close the database and open it again (point 7 of the module's doc) once ``reopen_rows``
        rows were stored since it was opened; while a reader's cursor is open, at a later store.
        The caller holds ``_write_lock``."""
        if self._reopen is None:
            return
        if not self._closed and self.stored_rows - self._opened_rows < self.reopen_rows:
            return
        with self._readers_cv:
            if self._readers:
                return
            self._reopening = True
        try:
            if not self._closed:
                self._closed = True
                self.con.close()  # DuckDB checkpoints the write-ahead log into the file as it closes
                trim_heap()  # what the database held, back to the system (else kept by malloc as free)
            self.con = self._reopen()
            self._configure(self.con)
            self._closed = False
            self.reopens += 1
            self._opened_rows = self.stored_rows
        except Exception as e:  # the answers stay in the journal; opened again at the next store
            self.failures += 1
            self.last_error = f"reopening the database: {type(e).__name__}: {e}"
            raise
        finally:
            with self._readers_cv:
                self._reopening = False
                self._readers_cv.notify_all()

    # ------------------------------------------------------------------ the answering path

    def _append(self, parts: list, line: bytes) -> None:
        n = sum(len(rows) for _t, rows in parts)
        with self._lock:
            seg = self._seg
            seg.append(line)
            if self.queued_rows + n <= self.max_rows and not seg.overflowed:
                seg.entries.extend(parts)
                self.queued_rows += n
            else:
                seg.overflowed = True
                self.overflow_entries += 1
            if self.queued_rows * 2 >= self.max_rows or seg.overflowed:
                self._wake.set()

    # ------------------------------------------------------------------ storing

    def _new_segment(self) -> _Segment:
        self._seq += 1
        return _Segment(self.folder / f"{time.time_ns():020d}-{os.getpid()}-{self._seq:06d}.jsonl")

    def _leftovers(self) -> list[Path]:
        self.adopt()
        left = sorted(p for p in self.folder.glob("*.jsonl") if p != self._seg.path)
        # marks of segments no longer on disk (the process died between deleting a segment and its mark)
        marks = [r[0] for r in self.con.execute("SELECT segment FROM prealert_journal_stored").fetchall()]
        gone = [m for m in marks if not (self.folder / m).exists()]
        if gone:
            self.con.execute("DELETE FROM prealert_journal_stored WHERE list_contains(?, segment)", [gone])
        return left

    def adopt(self) -> list[Path]:
        """Open segments (``*.jsonl.open``) of producers no longer alive, closed here (renamed
        ``*.jsonl``) so that they are stored; a last line cut short is skipped as for any segment."""
        out = []
        for p in sorted(self.folder.glob("*" + OPEN)):
            pid = producer_pid(p)
            if pid is not None and pid != os.getpid() and self._alive(pid):
                continue
            closed = p.with_name(p.name[: -len(".open")])
            try:
                os.replace(p, closed)
            except FileNotFoundError:  # its producer closed it just now
                continue
            log.warning("%s: journal segment of a producer that ended (pid %s) taken over", closed, pid)
            out.append(closed)
        return out

    def barrier(self, timeout: float = 5.0) -> None:
        """Store everything any producer answered before this call: wait (at most ``timeout``
        seconds) until each segment open now is closed (its producer rotates it within its
        interval; a dead producer's is taken over), then :meth:`flush`."""
        deadline = time.monotonic() + timeout
        waiting = set(self.folder.glob("*" + OPEN))
        while waiting and time.monotonic() < deadline:
            self.adopt()
            waiting = {p for p in waiting if p.exists()}
            if waiting:
                time.sleep(0.005)
        if waiting:
            log.warning("journal segments still open after %.1f s: %s", timeout, ", ".join(p.name for p in waiting))
        self.flush()

    def flush(self) -> None:
        """Store everything answered so far (this thread waits; the answering path never calls it)."""
        with self._write_lock:
            if self._closed:  # the database could not be opened again at the last store: now
                self._maybe_reopen()
            with self._lock:
                seg: _Segment | None = None
                if self._seg.written:
                    seg = self._seg
                    self._seg = self._new_segment()
                    self.queued_rows -= sum(len(r) for _t, r in seg.entries)
            if seg is not None:
                seg.close()
            todo: list[tuple[Path, _Segment | None]] = [(p, None) for p in self._pending]
            todo += [(seg.path, seg)] if seg else []
            if self.shared:  # the producers' closed segments (and those of producers that ended)
                self.adopt()
                known = {p for p, _s in todo}
                todo += [
                    (p, None) for p in sorted(self.folder.glob("*.jsonl")) if p not in known and p != self._seg.path
                ]
            self._pending = []
            if self._unmark:
                self.con.execute("DELETE FROM prealert_journal_stored WHERE list_contains(?, segment)", [self._unmark])
                self._unmark = []
            # segments read whole (no damaged line) and not left by an earlier run are stored
            # together, one transaction for a batch of them; the others one by one, as before
            batch: list[tuple[Path, dict[str, list]]] = []
            batch_rows = 0
            done: set[Path] = set()
            try:
                for path, s in todo:
                    if s is not None and not s.overflowed:
                        rows: dict[str, list] = {}
                        for t, r in s.entries:
                            rows.setdefault(t, []).extend(r)
                    else:  # read back from the file: an overflowed segment, a producer's, one of an earlier run
                        rows, bad = self._read(path)
                        if bad or path in self._earlier:
                            self._store_one(path, rows, bad)
                            done.add(path)
                            continue
                    batch.append((path, rows))
                    batch_rows += sum(len(r) for r in rows.values())
                    if len(batch) >= self.BATCH_SEGMENTS or batch_rows >= self.max_rows:
                        self._store_batch(batch)
                        done.update(p for p, _r in batch)
                        batch, batch_rows = [], 0
                self._store_batch(batch)
                done.update(p for p, _r in batch)
            except Exception as e:  # the segments not stored stay on disk; retried at the next store
                self.failures += 1
                self.last_error = f"{type(e).__name__}: {e}"
                self._pending = [p for p, _s in todo if p not in done and p.exists()] + self._pending
                raise
            self._checkpoint()
            self._maybe_reopen()

    #: journal segments stored in one transaction at most (also bounded by ``max_rows`` rows)
    BATCH_SEGMENTS = 64

    def _store_batch(self, batch: list[tuple[Path, dict[str, list]]]) -> None:
        """Segments read whole, in one transaction (:func:`write_segments`); rows a column does
        not take fail the whole transaction, and then each segment is stored on its own, so
        that only the segment holding them is set aside."""
        if not batch:
            return
        try:
            stored = set(write_segments(self.con, [(path.name, rows) for path, rows in batch]))
        except pa.ArrowException:
            for path, rows in batch:
                self._store_one(path, rows, [])
            return
        for path, rows in batch:
            if path.name in stored:
                self.stored_rows += sum(len(r) for r in rows.values())
            self._stored(path)

    def _store_one(self, path: Path, rows: dict[str, list], bad: list[str]) -> None:
        """One segment read back from its file: a damaged one (``bad``: its readable entries are
        stored, compared with the stored rows, and it is set aside), one of an earlier run
        (written before marks existed: compared with the stored rows too), or one of a batch
        that failed on its values."""
        try:
            # the segment's mark alone keeps it once; rows are compared with the stored
            # ones only for segments of an earlier run (written before marks existed)
            fresh = write_rows(
                self.con, rows, idempotent=bool(bad) or path in self._earlier, segment=None if bad else path.name
            )
        except pa.ArrowException as e:  # values no column takes: nothing of it is stored
            rows, bad = {}, [f"rows no table takes ({type(e).__name__}: {e})"]
        if bad:
            self.stored_rows += sum(len(r) for r in rows.values())
            self._set_aside(path, bad)
            return
        if fresh:
            self.stored_rows += sum(len(r) for r in rows.values())
        self._stored(path)

    def _stored(self, path: Path) -> None:
        self.segments_stored += 1
        path.unlink(missing_ok=True)
        self._unmark.append(path.name)

    def _set_aside(self, path: Path, bad: list[str]) -> None:
        """A damaged segment (its readable entries stored) is renamed ``*.corrupt`` for the operator:
        never retried, never blocking the segments after it."""
        aside = path.with_name(path.name + ".corrupt")
        path.replace(aside)
        self.quarantined += 1
        self.failures += 1
        self.last_error = f"journal segment set aside as {aside.name}: " + "; ".join(bad[:5])
        log.error(
            "%s: damaged journal segment set aside (%s); its readable answers were stored", aside, "; ".join(bad[:5])
        )

    def _read(self, path: Path) -> tuple[dict[str, list[tuple]], list[str]]:
        """The segment's rows, and what could not be read (line numbers and why): a damaged line
        is left out, the lines around it are kept. A last line cut short is no damage: the
        process ended while writing it, so it was never answered whole."""
        cur = self.con.cursor()
        try:
            convs = {t: conversions(arrow_schema(cur, t)) for t in TABLES}
        finally:
            cur.close()
        rows: dict[str, list[tuple]] = {t: [] for t in TABLES}
        bad: list[str] = []
        data = path.read_bytes()
        lines = data.split(b"\n")
        for n, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                entry = orjson.loads(line)
            except orjson.JSONDecodeError:
                if n == len(lines):  # a last line cut short by a killed process: never answered whole
                    log.warning("%s: line %d is incomplete (the process ended while writing it); skipped", path, n)
                    continue
                bad.append(f"line {n} is not JSON")
                continue
            try:
                if not isinstance(entry, dict) or not entry or not set(entry) <= set(KEYS):
                    raise ValueError(f"not an entry of {', '.join(KEYS)}")
                got = {t: _decode(entry[k], convs[t]) for t, k in zip(TABLES, KEYS) if k in entry}
            except (ValueError, TypeError, ArithmeticError) as e:
                bad.append(f"line {n}: {e}"[:200])
                continue
            for t, r in got.items():
                rows[t].extend(r)
        return rows, bad

    def _checkpoint(self) -> None:
        if self._wal is None or not self.wal_limit:
            return
        try:
            big = self._wal.stat().st_size > self.wal_limit
        except OSError:
            return
        if big:
            cur = self.con.cursor()
            try:
                cur.execute("CHECKPOINT")
                self.checkpoints += 1
            except duckdb.Error as e:  # e.g. a transaction of another cursor is open: next time
                log.info("checkpoint deferred: %s", e)
            finally:
                cur.close()

    def _run(self) -> None:
        if self.idle and idle_priority():
            self.scheduling = "idle"
        while not self._stop:
            self._wake.wait(self.interval)
            self._wake.clear()
            try:
                self.flush()
            except Exception:  # noqa: BLE001 - keep the writer alive; the segment stays in the journal
                log.exception("storing pre-alert results failed (kept in %s, retried)", self.folder)
                time.sleep(min(5.0, self.interval * 10))

    def close(self) -> None:
        """Stop the thread and store what is left (what cannot be stored stays in the journal)."""
        self._stop = True
        self._wake.set()
        if self._thread is not None:
            self._thread.join(10)
        try:
            self.flush()
        finally:
            with self._lock:
                self._seg.close()
                if not self._seg.written:
                    self._seg.path.unlink(missing_ok=True)

    # ------------------------------------------------------------------ what /health and /metrics say

    def status(self) -> dict:
        with self._lock:
            full = self._seg.overflowed
            queued = self.queued_rows
            mine = [*self._pending, *([self._seg.path] if self._seg.written else [])]
        # with producers: every segment not stored yet, theirs (open ones included) and this one's
        waiting = [p for p in self.folder.iterdir() if p.name.endswith((".jsonl", OPEN))] if self.shared else mine
        journal = len(waiting)
        made = [t for t in map(_written_ns, waiting) if t is not None]
        oldest = round(max(0.0, (time.time_ns() - min(made)) / 1e9), 1) if made else 0.0
        out = {
            "status": "queue full: answers kept in the journal only until stored"
            if full
            else (
                "behind: storing failed, retrying"
                if self.last_error and self._pending
                else (
                    f"{self.quarantined} damaged journal segment(s) set aside as *.corrupt in {self.folder}"
                    if self.quarantined
                    else "ok"
                )
            ),
            "quarantined_segments": self.quarantined,
            "queued_rows": queued,
            "max_rows": self.max_rows,
            "journal_segments": journal,
            "journal": str(self.folder),
            "overflowed_answers": self.overflow_entries,
            "stored_rows": self.stored_rows,
            "stored_segments": self.segments_stored,
            "failures": self.failures,
            "checkpoints": self.checkpoints,
            "reopens": self.reopens,
            # how long the oldest answer not stored yet has waited (0: nothing waits)
            "oldest_unstored_s": oldest,
            "scheduling": self.scheduling,
        }
        if self.last_error:
            out["last_error"] = self.last_error
        return out

    @property
    def full(self) -> bool:
        return self._seg.overflowed


class JournalProducer(_Answers):
    """One answering process's side of a shared journal (``medaudit serve --workers N``).

    The same :meth:`add` / :meth:`add_feedback` as :class:`ResultWriter`, without a database:
    each answer is one JSON line appended to this process's open segment
    (``<time ns>-<pid>-<seq>.jsonl.open``, created on the first answer), and every ``interval``
    seconds (or on :meth:`rotate`) a segment with answers is closed by renaming it to ``.jsonl``.
    The one writer (:class:`ResultWriter` with ``shared=True``, in another process) stores closed
    segments only, and takes over the open segment of a producer that is no longer alive. Nothing
    is kept in memory: the process's memory does not grow with unstored answers."""

    def __init__(self, folder: str | Path, interval: float = 0.1, start: bool = True):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.interval = interval
        self._lock = threading.Lock()
        self._seq = 0
        self._seg = self._new_segment()
        self.answers = 0  # journal entries written, ever
        self.segments = 0  # segments closed, ever
        self.queued_rows = 0
        self.full = False  # the producer never refuses: the journal is on disk
        self._stop = threading.Event()
        self._thread = None
        if start:
            self._thread = threading.Thread(target=self._run, name="prealert-journal", daemon=True)
            self._thread.start()

    def _new_segment(self) -> _Segment:
        self._seq += 1
        return _Segment(self.folder / f"{time.time_ns():020d}-{os.getpid()}-{self._seq:06d}{OPEN}")

    def _append(self, parts: list, line: bytes) -> None:
        with self._lock:
            self._seg.append(line)
            self.answers += 1

    def rotate(self) -> None:
        """Close the open segment (if it has answers) for the writer; new answers go to a new one."""
        with self._lock:
            seg = self._seg
            if not seg.written:
                return
            seg.close()
            os.replace(seg.path, seg.path.with_name(seg.path.name[: -len(".open")]))
            self._seg = self._new_segment()
            self.segments += 1

    flush = rotate  # what a reader calls first (the writer's barrier waits for the rotation)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.rotate()
            except OSError:
                log.exception("closing a journal segment in %s failed (retried)", self.folder)

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)
        self.rotate()

    def status(self) -> dict:
        with self._lock:
            open_ = self._seg.written
        return {
            "status": "ok",
            "journal": str(self.folder),
            "open_segment_answers": open_,
            "journaled_answers": self.answers,
            "closed_segments": self.segments,
        }
