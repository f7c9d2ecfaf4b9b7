"""``medaudit serve --workers N``: N answering processes on one port, one writer.

Layout (docs/prealert.md has the picture):

- **The parent** opens the database read-write (DuckDB allows one writing process), makes the
  result tables, checkpoints and copies the file once to a **snapshot**
  (``<db>.prealert-snapshot.duckdb``), then runs the **one writer** (:class:`.writer.ResultWriter`
  with ``shared=True``) in a thread: it stores every closed journal segment of every worker, and
  takes over the open segment of a worker that died. It also serves a small HTTP interface on
  a Unix socket in a private temporary folder (mode 0700) for the workers: reads of stored results and
  the writer's status. It starts the workers, restarts one that dies, and on SIGTERM/SIGINT
  stops them, stores what is left and removes the snapshot.
- **Each worker** (``python -m medaudit.prealert.workers CONFIG``) opens the snapshot
  read-only, builds its own context (``--preload``: its own copy of the history window, bounded
  as one process's is), binds the port with ``SO_REUSEPORT`` (the kernel spreads connections
  over the workers) and answers as the one-process service does. Its answers and feedback go
  to its own journal segments (:class:`.writer.JournalProducer`): one ``write`` per answer,
  nothing kept in memory, a segment closed every 0.1 s.
- **Reads** of stored results (``GET /prealert/results``, 3103's ownership check) are answered
  by the writer: it waits until every segment open at the call is closed (at most a worker's
  rotation interval), stores all closed segments, then queries the database. So a result
  answered by one worker is found through any other.
- ``/health`` is the answering worker's own figures plus the writer's status and each worker's
  last report (``workers``); ``/metrics`` sums every worker's counters and histogram and labels
  per-worker gauges ``worker="N"``. Workers report to the writer every second.

A worker follows its parent: it asks the kernel for SIGTERM when the parent dies and exits
when its parent changes, so no worker keeps answering with no writer to store its answers.
"""

from __future__ import annotations

import ctypes
import http.client
import json
import logging
import os
import shutil
import signal
import socket
import socketserver
import subprocess
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import duckdb
import orjson

from .metrics import malloc_bytes, rss_bytes
from .writer import ResultWriter

log = logging.getLogger(__name__)

#: seconds between a worker's reports to the writer
REPORT_EVERY = 1.0
#: seconds a worker's journal segment stays open at most
ROTATE_EVERY = 0.1


def resolve(workers: str) -> int:
    """``--workers``: a whole number from 1, or ``auto`` (the cores this process may use)."""
    w = str(workers).strip().lower()
    if w == "auto":
        try:
            return max(1, len(os.sched_getaffinity(0)))
        except AttributeError:
            return max(1, os.cpu_count() or 1)
    try:
        n = int(w)
    except ValueError:
        raise ValueError(f"--workers must be a whole number from 1 or 'auto', got {workers!r}") from None
    if n < 1:
        raise ValueError(f"--workers must be a whole number from 1 or 'auto', got {workers!r}")
    return n


def reuseport_socket(host: str, port: int) -> socket.socket:
    """A listening socket on host:port that other workers bind too (SO_REUSEPORT)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    sock.listen(2048)
    sock.set_inheritable(False)
    return sock


# ---------------------------------------------------------------------------- worker -> writer


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float):
        super().__init__("writer", timeout=timeout)
        self._path = path

    def connect(self):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(self.timeout)
        s.connect(self._path)
        self.sock = s


class WriterClient:
    """A worker's calls to the writer over its Unix socket (OSError when it does not answer)."""

    def __init__(self, path: str, slot: int, timeout: float = 30.0):
        self.path, self.slot, self.timeout = path, slot, timeout

    def _call(self, method: str, route: str, body=None):
        conn = _UnixConnection(self.path, self.timeout)
        try:
            conn.request(
                method,
                route,
                body=None if body is None else orjson.dumps(body),
                headers={"Content-Type": "application/json"},
            )
            r = conn.getresponse()
            data = r.read()
        except (http.client.HTTPException, socket.timeout) as e:
            raise OSError(str(e) or type(e).__name__) from None
        finally:
            conn.close()
        if r.status != 200:
            raise OSError(f"writer answered {r.status}: {data[:200].decode(errors='replace')}")
        return orjson.loads(data)

    def owned(self, inst: str, ids: list[str]) -> set:
        return set(self._call("POST", "/owned", {"inst": inst, "ids": ids})["owned"])

    def results(self, inst: str, by: str, value, limit: int) -> list[dict]:
        return self._call("POST", "/results", {"inst": inst, "by": by, "value": value, "limit": limit})["result"]

    def status(self) -> dict:
        out = self._call("GET", "/status")
        out["me"] = {"slot": self.slot, "pid": os.getpid()}
        return out

    def report(self, state: dict) -> None:
        self._call("POST", "/report", state)


# ---------------------------------------------------------------------------- the writer's side


class _Server(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True


def _handler(sup: "Supervisor"):
    from .app import _results

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, fmt, *args):  # quiet: the workers log what matters
            pass

        def _send(self, status: int, body) -> None:
            data = orjson.dumps(body, default=str)
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self):
            if self.path == "/status":
                return self._send(200, sup.status())
            self._send(404, {"error": "no such route"})

        def do_POST(self):
            try:
                body = orjson.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)))
                if self.path == "/report":
                    sup.reports[int(body["slot"])] = {**body, "at": time.time()}
                    return self._send(200, {})
                if self.path == "/owned":
                    ids = [str(x) for x in body["ids"]]
                    assert sup.writer is not None  # made by start(), before the interface answers
                    sup.writer.barrier()
                    with sup.writer.reading() as cur:
                        rows = cur.execute(
                            "SELECT jr_id FROM prealert_results WHERE fixmedins_code = ? AND list_contains(?, jr_id)",
                            [str(body["inst"]), ids],
                        ).fetchall()
                    return self._send(200, {"owned": [r[0] for r in rows]})
                if self.path == "/results":
                    assert sup.writer is not None
                    sup.writer.barrier()
                    by, value = body["by"], body["value"]
                    if by == "jr_id":
                        where, args = "r.jr_id = ?", [str(value)]
                    elif by == "mdtrt_id" and value:
                        where, args = "r.mdtrt_id = ?", [str(value)]
                    else:
                        where, args = "TRUE", []
                    with sup.writer.reading() as cur:
                        found = _results(cur, str(body["inst"]), where, args, int(body["limit"]))
                    return self._send(200, {"result": found})
                self._send(404, {"error": "no such route"})
            except Exception as e:  # noqa: BLE001 - the worker answers 503 naming it
                log.exception("writer interface: %s failed", self.path)
                self._send(500, {"error": f"{type(e).__name__}: {e}"})

    return Handler


class Supervisor:
    """The parent of ``medaudit serve --workers N`` (see the module's doc)."""

    def __init__(
        self,
        con,
        db: Path,
        n: int,
        host: str,
        port: int,
        worker_config: dict,
        journal: Path | None = None,
        max_queue_rows: int = 20_000,
        reopen_rows: int | None = None,
    ):
        self.con, self.db, self.n, self.host, self.port = con, Path(db), n, host, port
        self.config = worker_config
        self.journal = Path(journal) if journal else Path(str(db) + ".prealert-journal")
        self.snapshot = Path(str(db) + ".prealert-snapshot.duckdb")
        # a private folder (0700) of its own: a Unix socket's path is at most 107 bytes, the journal's may be longer
        self._sock_dir = Path(tempfile.mkdtemp(prefix="medaudit-writer-"))
        self.sock_path = self._sock_dir / "writer.sock"
        self.max_queue_rows = max_queue_rows
        self.reopen_rows = reopen_rows  # None: ResultWriter.REOPEN_ROWS
        self.procs: dict[int, subprocess.Popen] = {}
        self.started: dict[int, float] = {}
        self.reports: dict[int, dict] = {}
        self.restarts = 0
        self._stop = threading.Event()
        self.writer: ResultWriter | None = None
        self._settings: dict[str, str] = {}  # DuckDB settings of the service's connection (start())
        self._server: _Server | None = None

    # -------------------------------------------------------------- what the workers ask

    def alive(self, pid: int) -> bool:
        return any(p.pid == pid and p.poll() is None for p in list(self.procs.values()))

    def _duckdb_memory(self) -> tuple[int | None, str | None]:
        """What the writer's DuckDB buffer manager holds (bytes), and its limit."""
        assert self.writer is not None  # made by start(), before the interface answers
        try:
            with self.writer.reading() as cur:
                held = cur.execute("SELECT coalesce(sum(memory_usage_bytes), 0) FROM duckdb_memory()").fetchall()[0][0]
                return int(held), cur.execute("SELECT current_setting('memory_limit')").fetchall()[0][0]
        except duckdb.Error:  # closed: stopping
            return None, None

    def status(self) -> dict:
        now = time.time()
        each = []
        for slot in range(self.n):
            rep = self.reports.get(slot)
            p = self.procs.get(slot)
            up = p is not None and p.poll() is None and rep is not None and rep.get("pid") == p.pid
            each.append(
                {
                    "slot": slot,
                    "pid": p.pid if p else None,
                    "ready": up,
                    "report_age_s": round(now - rep["at"], 2) if rep else None,
                    "gauges": rep.get("gauges") if up and rep else None,
                    "metrics": rep.get("metrics") if up and rep else None,
                }
            )
        assert self.writer is not None  # made by start(), before the interface answers
        held, limit = self._duckdb_memory()
        return {
            "writer": self.writer.status(),
            "writer_rss_bytes": rss_bytes(),
            # the writer's DuckDB buffer manager: the pages of the tables it appends to stay
            # cached up to its memory limit (see medaudit.commands.serve.WRITER_MEMORY_LIMIT)
            "writer_duckdb_bytes": held,
            "writer_duckdb_limit": limit,
            "writer_malloc": malloc_bytes(),
            "workers": {
                "of": self.n,
                "ready": sum(1 for w in each if w["ready"]),
                "restarts": self.restarts,
                "each": each,
            },
        }

    # -------------------------------------------------------------- running

    def make_snapshot(self) -> None:
        """The workers' read-only copy of the database, made once at start (after a checkpoint
        the file holds everything; nothing writes to it until the workers are up)."""
        assert self.writer is not None
        with self.writer.reading() as cur:
            cur.execute("CHECKPOINT")
        tmp = self.snapshot.with_name(self.snapshot.name + ".tmp")
        shutil.copyfile(self.db, tmp)
        os.replace(tmp, self.snapshot)

    def spawn(self, slot: int) -> None:
        cfg = {
            **self.config,
            "snapshot": str(self.snapshot),
            "journal": str(self.journal),
            "socket": str(self.sock_path),
            "slot": slot,
            "host": self.host,
            "port": self.port,
            "parent": os.getpid(),
        }
        self.procs[slot] = subprocess.Popen(
            [sys.executable, "-m", "medaudit.prealert.workers", json.dumps(cfg)], stdin=subprocess.DEVNULL
        )
        self.started[slot] = time.monotonic()
        self.reports.pop(slot, None)

    def _open_again(self) -> duckdb.DuckDBPyConnection:
        """A new connection of the database with the settings the service gave its own: the
        writer closes the database and opens it again every ``reopen_rows`` rows (an open DuckDB
        database keeps about a byte of heap for every row appended to it; point 7 of
        :mod:`medaudit.prealert.writer`)."""
        from .. import db as dbm

        con = dbm.connect(self.db)
        for name, value in self._settings.items():
            con.execute(f"SET {name} = ?", [value])  # names: the constants of start()
        return con

    def start(self) -> None:
        self.journal.mkdir(parents=True, exist_ok=True)
        self._settings = {
            name: self.con.execute("SELECT current_setting(?)", [name]).fetchall()[0][0]
            for name in ("threads", "memory_limit")
        }
        # from here on the writer's connection is the process's only one of the database (the
        # workers read a snapshot): everything else here reads through writer.reading()
        self.writer = ResultWriter(
            self.con,
            self.journal,
            max_rows=self.max_queue_rows,
            shared=True,
            alive=self.alive,
            idle=True,
            reopen=self._open_again,
            reopen_rows=self.reopen_rows,
        )
        self.con = None  # the writer's now (it closes it when it opens the database again)
        self.make_snapshot()
        self.sock_path.unlink(missing_ok=True)
        old = os.umask(0o177)
        try:
            server = _Server(str(self.sock_path), _handler(self))
        finally:
            os.umask(old)
        self._server = server
        threading.Thread(target=server.serve_forever, name="writer-interface", daemon=True).start()
        for slot in range(self.n):
            self.spawn(slot)

    def wait_ready(self, timeout: float = 600.0) -> bool:
        """True once every worker has reported; False when one ended before (its error is on stderr)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if any(p.poll() is not None for p in self.procs.values()):
                return False
            if self.status()["workers"]["ready"] == self.n:
                return True
            time.sleep(0.05)
        return False

    def run(self) -> None:
        """Until SIGTERM/SIGINT: restart workers that end (at most one a second)."""
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: self._stop.set())
        while not self._stop.wait(0.2):
            for slot, p in list(self.procs.items()):
                if p.poll() is not None and not self._stop.is_set():
                    log.error("worker %d (pid %d) ended with %s; starting it again", slot, p.pid, p.returncode)
                    print(
                        f"worker {slot} (pid {p.pid}) ended with {p.returncode}; starting it again",
                        file=sys.stderr,
                        flush=True,
                    )
                    if time.monotonic() - self.started.get(slot, 0) < 1.0:
                        time.sleep(1.0)
                    self.restarts += 1
                    self.spawn(slot)

    def stop(self) -> None:
        """Stop the workers (they close their segments), store everything, remove the snapshot."""
        for p in self.procs.values():
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in self.procs.values():
            try:
                p.wait(15)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        self.sock_path.unlink(missing_ok=True)
        shutil.rmtree(self._sock_dir, ignore_errors=True)
        if self.writer is not None:
            self.writer.close()
            self.writer.con.close()
        self.snapshot.unlink(missing_ok=True)
        for wal in (self.snapshot.with_name(self.snapshot.name + ".wal"),):
            wal.unlink(missing_ok=True)


# ---------------------------------------------------------------------------- a worker


def _follow_parent(parent: int) -> None:
    """SIGTERM when the parent dies (Linux), and exit now if it is already gone."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass
    if os.getppid() != parent:
        os._exit(0)


def worker_main(cfg: dict) -> None:
    import gc

    import uvicorn

    from .. import db as dbm
    from ..library import load_library
    from . import store
    from .app import create_app
    from .writer import JournalProducer

    _follow_parent(cfg["parent"])
    libs = {name: load_library(path) for name, path in cfg["libraries"].items()}
    file_keys = store.load_keys_file(cfg["keys"]) if cfg.get("keys") else {}
    con = dbm.connect(cfg["snapshot"], read_only=True)
    con.execute(f"SET threads = {max(1, int(cfg.get('threads', 1)))}")
    con.execute("SET memory_limit = ?", [cfg["memory_limit"]])
    producer = JournalProducer(cfg["journal"], interval=ROTATE_EVERY)
    remote = WriterClient(cfg["socket"], cfg["slot"])
    app = create_app(con, libs, file_keys, writer=producer, remote=remote, **cfg["app"])
    sock = reuseport_socket(cfg["host"], cfg["port"])

    def report_loop():
        while True:
            if os.getppid() != cfg["parent"]:  # the writer is gone: answers would not be stored
                os.kill(os.getpid(), signal.SIGTERM)
                return
            try:
                remote.report(
                    {
                        "slot": cfg["slot"],
                        "pid": os.getpid(),
                        "metrics": app.state.metrics.state(),
                        "gauges": app.state.gauges_of_worker(),
                    }
                )
            except OSError:
                pass
            time.sleep(REPORT_EVERY)

    gc.freeze()
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False, lifespan="on"))
    threading.Thread(target=report_loop, name="report", daemon=True).start()
    try:
        server.run(sockets=[sock])
    finally:
        producer.close()  # the lifespan closed it too; a second close only rotates an empty segment


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING)
    worker_main(json.loads(sys.argv[1]))
