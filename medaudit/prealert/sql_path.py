"""The SQL path of a pre-alert check: the batch engine's own queries over one request's tiny ``lines``.

For each run a DuckDB cursor (a connection of its own to the same database) holds the
**request's context**: a temporary table per input table (``request_mdtrt_d``,
``request_setl_d``, ``request_fee_list_d``, ``request_setl_list_diag_d``,
``request_setl_list_oprn_d``, ``request_psn_death``: :data:`CONTEXT`), handed by name to
:func:`medaudit.engine.prepare_lines` — the very function batch screening uses — which builds
``visits``, ``diag``, ``deaths`` and ``lines`` from them (refund netting, fund share, age, level,
everything as in a batch), and to the rule types' queries (:func:`medaudit.engine.type_names`).
No table is shadowed: the database's own tables keep their names. :func:`load_context` fills
each context table with:

- ``mdtrt_d``: the current visit as the request states it, plus the person's other visits
  from the database (for visit-level types such as readmission, and ``die_date``);
- ``fee_list_d``: the visit's lines already in the database (charges billed so far), the
  visit's earlier orders the request sends (``curr_drord_flag`` 0) and the new orders
  (``curr_drord_flag`` 1); an order whose ``rx_id`` equals a line id in the database replaces
  that line. For rule types that judge a person across visits (``person_history``:
  period_limit), also the person's lines of those rules' items in their other visits;
- ``setl_d``, ``setl_list_diag_d`` (plus the request's diagnoses), ``setl_list_oprn_d`` and
  ``psn_death``: the person's rows from the database. The catalogue (``hilist``) and
  ``purchases`` are read from the database as they are.

The parts:

- :class:`Session`: a cursor with the context tables created and the rule set registered (``r_all``,
  ``p_<type>``), each type's statement composed once;
- :class:`SessionPool`: at most ``sessions`` sessions per rule set, made on first use;
- :class:`Batcher`: requests waiting for a session are checked together in one run (up to
  ``batch``, one per person);
- :func:`run`: one run — context, ``lines``, the types' queries, the hits of the touched
  findings and, for those with other violating lines, the same types again without the new
  orders — its hits turned into alerts by :func:`.alerts.alerts_of`, as on the fast path.

**Cost.** DuckDB spends milliseconds of CPU on each statement however few rows it reads, so a
run costs about the same for one request as for thirty: each request gets only the findings its
own orders change. Every rule type judges within a visit or a person, so requests in one run
do not see each other; an ``sql`` rule that compares persons would (serve with ``batch`` 1 if a
library has such rules). Measured figures: ``benchmarks/``.
"""

from __future__ import annotations

import datetime as dt
import queue
import threading
from contextlib import contextmanager
from typing import Any, Iterator

import duckdb
import pyarrow as pa

from .. import db as dbm
from .. import engine
from ..contract import TABLES
from ..library import Rule
from ..types import REGISTRY
from ..types import sql as sql_type
from .alerts import ORDER_SETL, Alert, CheckRequest, Hit, LineInfo, alerts_of, again_types, claims_before, tagged

STAGE = "pre_alert"

#: the request's context: input table -> the cursor's temporary table holding the request's rows
#: and the history it needs (the catalogue and purchases are read from the database as they are)
CONTEXT = {
    t: f"request_{t}" for t in ("mdtrt_d", "setl_d", "fee_list_d", "setl_list_diag_d", "setl_list_oprn_d", "psn_death")
}

#: the institutions a visit is stored for (three ``?``: the visit id)
OWNERS_SQL = """SELECT fixmedins_code FROM {cat}.main.mdtrt_d WHERE mdtrt_id = ?
    UNION SELECT fixmedins_code FROM {cat}.main.setl_d WHERE mdtrt_id = ?
    UNION SELECT fixmedins_code FROM {cat}.main.fee_list_d WHERE mdtrt_id = ?"""


def quoted_catalog(name: str) -> str:
    """The database's catalog name (DuckDB's ``current_database()``, the file's stem) quoted for SQL text."""
    return '"' + name.replace('"', '""') + '"'


class Session:
    """A cursor with the context tables created and the rule set registered (one per thread and rule set)."""

    def __init__(self, base: duckdb.DuckDBPyConnection, catalog: str, rules: list[Rule]):
        self.cur = base.cursor()
        self.sandbox: duckdb.DuckDBPyConnection | None = None  # the sql type's sandbox connection, made on first use
        cur = self.cur
        dbm.install_macros(cur)
        self.catalog = catalog
        for t, name in CONTEXT.items():
            cur.execute(
                f"CREATE OR REPLACE TEMP TABLE {name} AS SELECT * FROM {quoted_catalog(catalog)}.main.{t} LIMIT 0"
            )
        self.by_type = engine.register_rules(cur, rules)
        self.rules = rules
        # an empty ``lines`` (and visits, diag, deaths) to compose against: the sql type reads
        # its rules' own queries' columns while composing
        engine.prepare_lines(cur, STAGE, tables=CONTEXT)
        self.cols = {t: [c.name for c in TABLES[t].columns] for t in CONTEXT}
        # each type's query with ``{m}`` inlined as the engine's matching SELECT: one statement
        # per type and request (the rule tables are fixed for the session, so the shape of the
        # matching — exact codes, prefixes, match-all — is decided once)
        self.sql: dict[str, str] = {}
        self.names: dict[str, dict[str, str]] = {}
        for t in self.by_type:
            rt = REGISTRY[t]
            names = self.names[t] = engine.type_names(rt, **CONTEXT)
            if rt.items != "none":
                has_code, has_prefix, has_all = cur.execute(
                    f"SELECT bool_or(code IS NOT NULL), bool_or(prefix IS NOT NULL), bool_or(match_all) FROM p_{t}"
                ).fetchall()[0]
                names["m"] = "(" + engine.matched_sql(rt, bool(has_code), bool(has_prefix), bool(has_all)) + ")"
            self.sql[t] = f"INSERT INTO {engine.HITS} BY NAME {rt.sql(names, cur)}"
        # the codes whose lines of the person's other visits take part (types that judge a
        # person across visits: period_limit), as a condition on fee_list_d.hilist_code
        tests = []
        for t in self.by_type:
            if REGISTRY[t].person_history:
                tests += [
                    f"hilist_code IN (SELECT code FROM p_{t} WHERE code IS NOT NULL)",
                    f"EXISTS (SELECT 1 FROM p_{t} p WHERE p.prefix IS NOT NULL AND starts_with(hilist_code, p.prefix))",
                    f"EXISTS (SELECT 1 FROM p_{t} WHERE match_all)",
                ]
        self.history = " OR ".join(tests)

    def run(self, types: list[str]) -> None:
        """The types' queries (as :func:`medaudit.engine.run_type` runs them) over ``lines``; rows into ``hits``."""
        for t in types:
            rt = REGISTRY[t]
            if rt.prepare is not None:
                # the sql type's rule queries run in the session's own sandbox connection (made
                # once, settings locked), which sees this run's lines and nothing of the database
                if self.sandbox is None:
                    self.sandbox = sql_type.open_sandbox()
                rt.prepare(self.cur, self.sandbox, tables=self.names[t])
            self.cur.execute(self.sql[t])

    def values(self, table: str, rows: list[dict]) -> str:
        """INSERT of ``rows`` (contract columns; others ignored) into ``table``'s context; '' when
        none. The rows are handed to DuckDB as an Arrow table of text registered on the cursor
        (``__req_<table>``), each value cast to the column's type on insert: no value of a request
        is ever written into SQL text."""
        if not rows:
            return ""
        used = [c for c in self.cols[table] if any(r.get(c) is not None for r in rows)]
        name = f"__req_{table}"
        self.cur.register(name, _text_table({c: [r.get(c) for r in rows] for c in used}))
        cols = ", ".join(dbm.ident(c) for c in used)
        return f"INSERT INTO {CONTEXT[table]} ({cols}) SELECT {cols} FROM {name}"


def load_context(s: Session, reqs: list[CheckRequest], orders: list[list[dict]]) -> None:
    """Fill the context tables: the persons' history from the database, then the requests. One
    statement list; the request's values reach it as Arrow tables registered on the cursor
    (:func:`_text_table`), never as SQL text (hundreds of bound parameters would cost more than
    the whole check; a registered table costs tens of microseconds)."""
    cur, cat = s.cur, quoted_catalog(s.catalog)
    # the request's ids as registered tables (never as SQL text): its visits and persons, and
    # each order's own id in its visit
    cur.register("__req_visits", _text_table({"mdtrt_id": [r.visit["mdtrt_id"] for r in reqs]}))
    cur.register("__req_persons", _text_table({"psn_no": [r.visit["psn_no"] for r in reqs]}))
    pairs = [(r.visit["mdtrt_id"], o["_rx"]) for r, orders in zip(reqs, orders) for o in orders]
    cur.register("__req_rx", _text_table({"mdtrt_id": [p[0] for p in pairs], "bkkp_sn": [p[1] for p in pairs]}))
    visit_ids = "SELECT mdtrt_id FROM __req_visits"
    persons = "SELECT psn_no FROM __req_persons"
    # each visit as the request states it, completed by the database's record of it (a
    # death recorded on the stay, ipt_days...) where the request says nothing
    res = cur.execute(
        f"SELECT * EXCLUDE (batch_id, source_row) FROM {cat}.main.mdtrt_d WHERE mdtrt_id IN ({visit_ids})"
    ).fetchall()
    cols = [d[0] for d in cur.description]
    known = {r[0]: dict(zip(cols, r)) for r in res}
    visits: list[dict] = []
    diags: list[dict] = []
    lines: list[dict] = []
    no_diag = [r.visit["mdtrt_id"] for r in reqs if not r.diagnoses]
    # a visit's operations as the request states them; the database's when it states none
    with_oprn = [r.visit["mdtrt_id"] for r in reqs if r.operations]
    cur.register("__req_no_diag", _text_table({"mdtrt_id": no_diag}))
    cur.register("__req_with_oprn", _text_table({"mdtrt_id": with_oprn}))
    oprns = [x for r in reqs for x in r.operations]
    for r, visit_orders in zip(reqs, orders):
        v = r.visit
        if v["mdtrt_id"] in known:
            v = {**known[v["mdtrt_id"]], **{k: x for k, x in v.items() if x is not None}}
        visits.append(v)
        diags.extend(r.diagnoses)
        for o in visit_orders:
            row = {k: val for k, val in o.items() if k not in ("new", "_rx")}
            row.setdefault("mdtrt_id", v["mdtrt_id"])
            row.setdefault("psn_no", v["psn_no"])
            row.setdefault("fixmedins_code", v["fixmedins_code"])
            row.setdefault("setl_id", ORDER_SETL + v["mdtrt_id"])
            lines.append(row)
    c = CONTEXT
    sql = [f"DELETE FROM {t}" for t in CONTEXT.values()] + [
        f"INSERT INTO {c['mdtrt_d']} SELECT * FROM {cat}.main.mdtrt_d WHERE psn_no IN ({persons}) AND mdtrt_id NOT IN ({visit_ids})",
        f"INSERT INTO {c['setl_d']} SELECT * FROM {cat}.main.setl_d WHERE psn_no IN ({persons})",
        f"INSERT INTO {c['psn_death']} SELECT * FROM {cat}.main.psn_death WHERE psn_no IN ({persons})",
        # the visits' lines billed so far; an order with a line's id replaces that line
        f"""INSERT INTO {c["fee_list_d"]} SELECT f.* FROM {cat}.main.fee_list_d f WHERE f.mdtrt_id IN ({visit_ids})
            AND NOT EXISTS (SELECT 1 FROM __req_rx x WHERE x.mdtrt_id = f.mdtrt_id AND x.bkkp_sn = f.bkkp_sn)""",
        # the persons' other visits' lines of the items of rules that judge a person across visits
        (
            f"""INSERT INTO {c["fee_list_d"]} SELECT * FROM {cat}.main.fee_list_d WHERE psn_no IN ({persons})
             AND mdtrt_id NOT IN ({visit_ids}) AND ({s.history})"""
            if s.history
            else ""
        ),
        # a visit's diagnoses from the database only when its request states none
        f"""INSERT INTO {c["setl_list_diag_d"]} SELECT * FROM {cat}.main.setl_list_diag_d
            WHERE mdtrt_id IN (SELECT mdtrt_id FROM {c["mdtrt_d"]}) OR mdtrt_id IN (SELECT mdtrt_id FROM __req_no_diag)""",
        f"""INSERT INTO {c["setl_list_oprn_d"]} SELECT * FROM {cat}.main.setl_list_oprn_d
            WHERE (mdtrt_id IN (SELECT mdtrt_id FROM {c["mdtrt_d"]}) OR mdtrt_id IN ({visit_ids}))
            AND mdtrt_id NOT IN (SELECT mdtrt_id FROM __req_with_oprn)""",
        s.values("setl_list_oprn_d", oprns),
        s.values("mdtrt_d", visits),
        s.values("setl_list_diag_d", diags),
        s.values("fee_list_d", lines),
    ]
    cur.execute(";\n".join(x for x in sql if x))


class SessionPool:
    """At most ``size`` sessions per rule set, made on first use (callers wait for one)."""

    def __init__(self, con: duckdb.DuckDBPyConnection, catalog: str, rule_sets: dict[str, list[Rule]], size: int):
        self.con, self.catalog, self.rule_sets = con, catalog, rule_sets
        self.size = max(1, size)
        self._pools: dict[str, queue.LifoQueue] = {}
        self._made: dict[str, int] = {}
        self._lock = threading.Lock()

    @contextmanager
    def session(self, rule_set: str) -> Iterator[Session]:
        with self._lock:
            pool = self._pools.setdefault(rule_set, queue.LifoQueue())
            make = pool.empty() and self._made.get(rule_set, 0) < self.size
            if make:
                self._made[rule_set] = self._made.get(rule_set, 0) + 1
        s = Session(self.con, self.catalog, self.rule_sets[rule_set]) if make else pool.get()
        try:
            yield s
        finally:
            pool.put(s)

    def warm(self, rule_set: str) -> None:
        """Open every session of the rule set now (registering a large library takes a moment)."""
        held = []
        for _ in range(self.size):
            cm = self.session(rule_set)
            held.append((cm, cm.__enter__()))
        for cm, _s in held:
            cm.__exit__(None, None, None)


class Batcher:
    """Requests wait in line; whoever gets a session takes the waiting ones along (up to
    ``batch``, one per person: a person's requests never share a run) and runs them together."""

    def __init__(self, pool: SessionPool, batch: int, run_batch):
        self.pool, self.batch, self.run_batch = pool, max(1, batch), run_batch
        self._waiting: dict[str, queue.Queue] = {}
        self._lock = threading.Lock()

    def check(self, rule_set: str, req: CheckRequest, types: list[str]) -> list[Alert]:
        box: dict[str, Any] = {}
        done = threading.Event()
        with self._lock:
            waiting = self._waiting.setdefault(rule_set, queue.Queue())
        waiting.put((req, types, box, done))
        while not done.is_set():
            with self.pool.session(rule_set) as s:
                if done.is_set():
                    break
                taken: list = []
                later: list = []
                persons: set = set()
                while len(taken) < self.batch:
                    try:
                        item = waiting.get_nowait()
                    except queue.Empty:
                        break
                    psn = item[0].visit["psn_no"]
                    (later if psn in persons else taken).append(item)
                    persons.add(psn)
                for item in later:
                    waiting.put(item)
                if not taken:
                    continue
                try:
                    out = self.run_batch(s, [(t[0], t[1]) for t in taken])
                    for t, alerts in zip(taken, out):
                        t[2]["alerts"] = alerts
                except BaseException as e:  # every request of the run gets the error
                    for t in taken:
                        t[2]["error"] = e
                for t in taken:
                    t[3].set()
        if "error" in box:
            raise box["error"]
        return box["alerts"]


class SqlPath:
    """Checks requests with the rule types' queries, on a pool of ``sessions`` cursors; with
    ``batch`` > 1, requests that arrive while a session is busy are checked together in one run."""

    def __init__(
        self, con: duckdb.DuckDBPyConnection, rule_sets: dict[str, list[Rule]], sessions: int = 2, batch: int = 1
    ):
        self.con = con
        self.catalog = con.execute("SELECT current_database()").fetchall()[0][0]
        self.rule_sets = rule_sets
        self.pool = SessionPool(con, self.catalog, rule_sets, sessions)
        self.batcher = Batcher(self.pool, batch, self._run)
        self.runs = 0  # runs made (a run may answer several requests)

    def check(self, rule_set: str, req: CheckRequest, types: list[str]) -> list[Alert]:
        """The alerts of the request's new orders from ``types``' queries (not redacted)."""
        if self.batcher.batch == 1:
            with self.pool.session(rule_set) as s:
                return self._run(s, [(req, types)])[0]
        return self.batcher.check(rule_set, req, types)

    def owners(self, mdtrt_id: str) -> set[str]:
        """The institutions the database holds the visit for (one query)."""
        cur = self.con.cursor()
        try:
            return {
                r[0]
                for r in cur.execute(OWNERS_SQL.format(cat=quoted_catalog(self.catalog)), [mdtrt_id] * 3).fetchall()
                if r[0] is not None
            }
        finally:
            cur.close()

    def _run(self, s: Session, batch: list[tuple[CheckRequest, list[str]]]) -> list[list[Alert]]:
        self.runs += 1
        return run(s, batch)


def run(s: Session, batch: list[tuple[CheckRequest, list[str]]]) -> list[list[Alert]]:
    """One run over the lines of every request of ``batch`` (distinct persons): each request's alerts."""
    cur = s.cur
    # order ids are the hospital's, unique within a request only: each gets its request's
    # number after a separator that sorts before every printable character, so orders keep
    # the order by id (the tie-break after time) they have among themselves and the lines
    orders = [
        [{**o, "bkkp_sn": tagged(o["bkkp_sn"], i), "_rx": o["bkkp_sn"]} for o in req.orders]
        for i, (req, _t) in enumerate(batch)
    ]
    load_context(s, [req for req, _t in batch], orders)
    engine.prepare_lines(cur, STAGE, tables=CONTEXT)
    engine.create_hits(cur)
    s.run(sorted({t for _r, types in batch for t in types}))
    new_ids = {o["bkkp_sn"] for os_ in orders for o in os_ if o.get("new")}
    hits, line = _touched_hits(cur, new_ids)
    if not hits:
        return [[] for _ in batch]
    before = {}
    again = again_types(s.rules, hits, new_ids)
    if again:
        cur.execute("DELETE FROM lines WHERE bkkp_sn IN (SELECT bkkp_sn FROM __req_new)")
        engine.create_hits(cur)
        s.run(again)
        before = claims_before(
            Hit(*r) for r in cur.execute(f"SELECT {HIT_SELECT} FROM {engine.HITS} WHERE role = 'violating'").fetchall()
        )
    order_ids = {o["bkkp_sn"] for os_ in orders for o in os_}
    out: list[list[Alert]] = [[] for _ in batch]
    for i, a in alerts_of(s.rules, hits, line, before, new_ids, order_ids):
        wanted = batch[i][0].rule_ids
        if not wanted or a.rule_id in wanted:
            out[i].append(a)
    return out


#: the hit columns pre-alert reads, in :class:`.alerts.Hit`'s order
HIT_SELECT = "rule_key, finding_key, mdtrt_id, bkkp_sn, role, claim, ev_head, ev_line, psn_no"


def _touched_hits(cur, new_ids: set[str]) -> tuple[list[Hit], dict[str, LineInfo]]:
    """The hits of the findings a new order takes part in, and what ``lines`` says of their lines.
    Registers the new orders' line ids as ``__req_new`` on ``cur`` (the run reads them again)."""
    cur.register("__req_new", _text_table({"bkkp_sn": sorted(new_ids)}))
    rows = cur.execute(
        f"""
        WITH t AS (SELECT DISTINCT rule_key, finding_key FROM {engine.HITS}
                   WHERE bkkp_sn IN (SELECT bkkp_sn FROM __req_new))
        SELECT {", ".join("h." + c for c in HIT_SELECT.split(", "))},
               l.bkkp_sn IS NOT NULL, l.fee_ocur_time, l.psn_no, l.hilist_code, l.fixmedins_code, l.mdtrt_id, l.fee_date
        FROM {engine.HITS} h JOIN t USING (rule_key, finding_key)
        LEFT JOIN (SELECT DISTINCT ON (bkkp_sn) * FROM lines) l ON l.bkkp_sn = h.bkkp_sn
        """
    ).fetchall()
    hits = [Hit(*r[:9]) for r in rows]
    line = {r[3]: LineInfo(*r[10:]) for r in rows if r[9]}
    return hits, line


def _text(x: Any) -> str | None:
    """A request's value as text, which the context column's type casts on insert."""
    if x is None:
        return None
    if isinstance(x, bool):
        return "true" if x else "false"
    if isinstance(x, dt.datetime):
        return x.replace(tzinfo=None).isoformat(sep=" ")
    if isinstance(x, dt.date):
        return x.isoformat()
    return str(x)


def _text_table(columns: dict[str, list]) -> pa.Table:
    """An Arrow table of text columns: how a request's values reach DuckDB (registered on the
    cursor and read by name), so that no value is ever part of SQL text."""
    return pa.table({c: pa.array([_text(x) for x in xs], pa.string()) for c, xs in columns.items()})
