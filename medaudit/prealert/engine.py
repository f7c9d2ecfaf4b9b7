"""The order check: the batch engine's own queries, run over one request's tiny ``lines``.

For each request a per-thread DuckDB cursor (a connection of its own to the same database)
holds **temporary shadows** of the input tables (``mdtrt_d``, ``setl_d``, ``fee_list_d``,
``setl_list_diag_d``, ``setl_list_oprn_d``, ``psn_death``). DuckDB resolves an unqualified
table name to a temporary table first, so :func:`medaudit.engine.prepare_lines` — the very
function batch screening uses — builds ``visits``, ``diag``, ``deaths`` and ``lines`` from
them: refund netting, fund share, age, level, everything as in a batch. Each shadow holds:

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

The rules (those whose ``stages`` include ``pre_alert``; the library refuses, at load time, a
pre_alert stage for a type that cannot judge one order) are registered once per cursor
(``r_all``, ``p_<type>``), and each request runs, with :func:`medaudit.engine.run_type`, only
the types its orders are routed to (:mod:`.events`).

**What is reported.** A finding is reported when the new orders change it: its lines that are
violating now but were not violating (or claimed less) before the new orders — computed by
running the touched types again without the new orders — are the violating items
(``vola_item_type`` 1); the new orders and the finding's related lines are the related items
(2). So an order that makes an earlier charge a duplicate (the main item of a pair, ordered
after the included one) is reported with the earlier charge as the violating item, and an
order that breaks nothing is silent. Replaying a visit order by order therefore reports,
over all its requests, exactly the violating lines and amounts batch screening finds
(``tests/test_prealert_parity.py``).

**Other institutions.** The request's institution must be its API key's, and a visit stored
for another institution is refused (:meth:`OrderChecker.authorize`, before any check). The
person's lines at other institutions still count (period_limit), but the answer shows them only
as "paid at another institution on date D": :func:`redact`, applied by :meth:`OrderChecker.check`
on both paths, drops them from the items and rewrites the evidence (batch screening's evidence,
for the bureau, names them in full).

**Cost.** DuckDB spends milliseconds of CPU on each statement however few rows it reads, so a
check costs about the same for one request as for thirty: requests waiting for a session are
checked together in one run (``batch``), one per person (a person's requests never share a
run), and each gets only the findings its own orders change. Every rule type judges within a
visit or a person, so requests in one run do not see each other; an ``sql`` rule that compares
persons would (serve with ``batch`` 1 if a library has such rules). Measured figures: ``benchmarks/bench_prealert.py``.
"""

from __future__ import annotations

import datetime as dt
import queue
import re
import threading
from contextlib import contextmanager
from dataclasses import dataclass, field
from decimal import ROUND_HALF_UP, Decimal
from typing import Any, Iterator

import duckdb

from .. import db as dbm
from .. import engine
from ..contract import TABLES
from ..library import Library, Rule
from ..types import REGISTRY
from ..types import sql as sql_type

STAGE = "pre_alert"

#: input tables shadowed per request (the catalogue and purchases are read as they are)
SHADOWED = ("mdtrt_d", "setl_d", "fee_list_d", "setl_list_diag_d", "setl_list_oprn_d", "psn_death")

#: between an order's rx_id and its request's number in a run (sorts before printable text)
TAG = "\x1f"

_UNTAG = re.compile(TAG + r"\d+")

#: settlement id given to orders (not settled yet, so not in ``setl_d``)
ORDER_SETL = "PRE:"


class RuleSetError(Exception):
    """An unknown rule set or rule id (the service answers 404/422, never 500)."""


class ForeignVisitError(Exception):
    """A request names a visit the database holds for another institution (the service answers 403)."""

    def __init__(self, mdtrt_id: str):
        self.mdtrt_id = mdtrt_id
        super().__init__(f"visit {mdtrt_id!r} belongs to another institution: an API key may use the stored "
                         "visits of its own institution only")


#: how the answer to an institution names a line of another institution (period_limit's history)
OTHER_INSTITUTION = "其他机构"


@dataclass
class CheckRequest:
    """One analysis request in the data contract's terms (built from a 3101 payload)."""

    visit: dict[str, Any]  # mdtrt_d columns of the current visit
    orders: list[dict[str, Any]]  # fee_list_d columns, plus 'new': bool
    diagnoses: list[dict[str, Any]] = field(default_factory=list)  # setl_list_diag_d columns
    rule_ids: list[str] | None = None  # only these rules (national ``rule_ids``); None: all
    engine: str | None = None  # set by the check: 'fast' or 'sql', the path that answered
    operations: list[dict[str, Any]] = field(default_factory=list)  # setl_list_oprn_d columns


@dataclass
class ItemHit:
    bkkp_sn: str  # the order's rx_id, or the line's bkkp_sn
    role: str  # violating | related
    claim: Decimal  # 0.01-rounded claim (0 for related)
    is_order: bool  # one of the request's orders (new or earlier)
    is_new: bool
    hilist_code: str | None = None


@dataclass(frozen=True)
class LineRef:
    """Where a line of a finding comes from: what the answer to another institution must not show."""

    bkkp_sn: str  # as shown (an order's rx_id without its tag)
    role: str
    fixmedins_code: str | None
    mdtrt_id: str | None
    fee_date: dt.date | None


@dataclass
class Alert:
    """One reported finding: a rule the new orders break on this visit."""

    rule_id: str
    rule_version: str
    rule_name: str
    rule_type: str
    severity: str
    nature: str
    basis: str
    mdtrt_id: str
    psn_no: str
    finding_key: str
    evidence: str
    amount: Decimal  # sum of the violating items' claims
    items: list[ItemHit]
    #: every line of the finding (items or not) with its institution, visit and date: see :func:`redact`
    lines: list[LineRef] = field(default_factory=list, repr=False)

    @property
    def violating(self) -> list[ItemHit]:
        return [i for i in self.items if i.role == "violating"]


#: the institutions a visit is stored for (three ``?``: the visit id)
OWNERS_SQL = """SELECT fixmedins_code FROM {cat}.main.mdtrt_d WHERE mdtrt_id = ?
    UNION SELECT fixmedins_code FROM {cat}.main.setl_d WHERE mdtrt_id = ?
    UNION SELECT fixmedins_code FROM {cat}.main.fee_list_d WHERE mdtrt_id = ?"""


def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _cent(x: Any) -> Decimal:
    return Decimal(str(x if x is not None else 0)).quantize(Decimal("0.01"), rounding=ROUND_HALF_UP)


class _Session:
    """A cursor with the shadows created and the rule set registered (one per thread and rule set)."""

    def __init__(self, base: duckdb.DuckDBPyConnection, catalog: str, rules: list[Rule]):
        self.cur = base.cursor()
        self.sandbox = None  # the sql type's sandbox connection, made on first use
        cur = self.cur
        dbm.install_macros(cur)
        self.catalog = catalog
        for t in SHADOWED:
            cur.execute(f"CREATE OR REPLACE TEMP TABLE {t} AS SELECT * FROM {_q(catalog)}.main.{t} LIMIT 0")
        self.by_type = engine.register_rules(cur, rules)
        self.rules = rules
        # an empty ``lines`` (and visits, diag, deaths) to compose against: the sql type reads
        # its rules' own queries' columns while composing
        engine.prepare_lines(cur, STAGE)
        self.cols = {t: [c.name for c in TABLES[t].columns] for t in SHADOWED}
        # each type's query with ``{m}`` inlined as the engine's matching SELECT: one statement
        # per type and request (the rule tables are fixed for the session, so the shape of the
        # matching — exact codes, prefixes, match-all — is decided once)
        self.sql: dict[str, str] = {}
        for t in self.by_type:
            rt = REGISTRY[t]
            names = engine.type_names(rt)
            if rt.items != "none":
                has_code, has_prefix, has_all = cur.execute(
                    f"SELECT bool_or(code IS NOT NULL), bool_or(prefix IS NOT NULL), bool_or(match_all) FROM p_{t}"
                ).fetchall()[0]
                names["m"] = "(" + engine.matched_sql(rt, bool(has_code), bool(has_prefix), bool(has_all)) + ")"
            self.sql[t] = f"INSERT INTO hits BY NAME {rt.sql(names, cur)}"
        # the codes whose lines of the person's other visits take part (types that judge a
        # person across visits: period_limit), as a condition on fee_list_d.hilist_code
        tests = []
        for t in self.by_type:
            if REGISTRY[t].person_history:
                tests += [f"hilist_code IN (SELECT code FROM p_{t} WHERE code IS NOT NULL)",
                          f"EXISTS (SELECT 1 FROM p_{t} p WHERE p.prefix IS NOT NULL AND starts_with(hilist_code, p.prefix))",
                          f"EXISTS (SELECT 1 FROM p_{t} WHERE match_all)"]
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
                rt.prepare(self.cur, self.sandbox)
            self.cur.execute(self.sql[t])

    def values(self, table: str, rows: list[dict]) -> str:
        """INSERT of ``rows`` (contract columns; others ignored) with inlined literals; '' when none."""
        if not rows:
            return ""
        used = [c for c in self.cols[table] if any(r.get(c) is not None for r in rows)]
        return (f"INSERT INTO {table} ({', '.join(_q(c) for c in used)}) VALUES "
                + ", ".join("(" + ", ".join(_lit(r.get(c)) for c in used) + ")" for r in rows))


class OrderChecker:
    """Checks orders against one rule library's pre_alert rules, with a database's history.

    ``con`` is the service's connection to the medaudit database (history, results, feedback).
    Checks run on a pool of ``sessions`` cursors. With ``batch`` > 1, requests that arrive while
    a session is busy are checked together in one run (up to ``batch`` of them, one per
    person): the types' queries are set-based, so a run over several requests' lines costs
    about what one costs, and each request still gets only the findings its own orders change.
    """

    def __init__(self, con: duckdb.DuckDBPyConnection, libraries: dict[str, Library], sessions: int = 2,
                 batch: int = 1, engine: str = "fast", cache_ttl: float = 300.0, preload: bool = False):
        self.con = con
        self.max_sessions = max(1, sessions)
        self.batch = max(1, batch)
        self.catalog = con.execute("SELECT current_database()").fetchall()[0][0]
        self.rule_sets: dict[str, list[Rule]] = {
            name: [r for r in lib.rules if STAGE in r.stages] for name, lib in libraries.items()
        }
        self.libraries = libraries
        self._pools: dict[str, queue.LifoQueue] = {}
        self._made: dict[str, int] = {}
        self._pool_lock = threading.Lock()
        self._waiting: dict[str, queue.Queue] = {}
        self.runs = 0  # runs made (a run may answer several requests)
        from .events import EventHub, Router

        self.routers = {name: Router(rules) for name, rules in self.rule_sets.items()}
        self.hub = EventHub(self.routers)
        if engine not in ("fast", "sql"):
            raise ValueError(f"engine must be fast or sql, got {engine!r}")
        # engine 'fast': the in-memory evaluators (:mod:`.fast`) answer every request whose rule
        # set they fully cover; the others, and engine 'sql', take the SQL path below
        self.engine = engine
        self.fast = None
        if engine == "fast":
            from .fast import FastPath

            self.fast = FastPath(con, self.rule_sets, ttl=cache_ttl, preload=preload)
        self.answered = {"fast": 0, "sql": 0}  # requests answered by each path

    # ------------------------------------------------------------------ sessions

    @contextmanager
    def _session(self, rule_set: str) -> Iterator[_Session]:
        """A session of the rule set from the pool (at most ``sessions`` of them; callers wait)."""
        with self._pool_lock:
            pool = self._pools.setdefault(rule_set, queue.LifoQueue())
            make = pool.empty() and self._made.get(rule_set, 0) < self.max_sessions
            if make:
                self._made[rule_set] = self._made.get(rule_set, 0) + 1
        s = _Session(self.con, self.catalog, self.rule_sets[rule_set]) if make else pool.get()
        try:
            yield s
        finally:
            pool.put(s)

    def warm(self) -> None:
        """Open every session now (registering a large library takes a moment), not on first use.
        With the fast engine, only rule sets it does not fully cover need sessions."""
        for name in self.rule_sets:
            if self.fast is not None and self.fast.covered[name]:
                continue
            held = []
            for _ in range(self.max_sessions):
                cm = self._session(name)
                held.append((cm, cm.__enter__()))
            for cm, _s in held:
                cm.__exit__(None, None, None)

    def rules(self, rule_set: str) -> list[Rule]:
        if rule_set not in self.rule_sets:
            raise RuleSetError(f"unknown rule set {rule_set!r} (this service has: {', '.join(sorted(self.rule_sets))})")
        return self.rule_sets[rule_set]

    # ------------------------------------------------------------------ the check

    def in_memory(self, req: CheckRequest, rule_set: str = "default") -> bool:
        """The check of ``req`` needs no database (the fast path answers it from memory), so a
        caller may run it where waiting on the database would block others (the event loop)."""
        return self.fast is not None and rule_set in self.rule_sets and self.fast.in_memory(rule_set, req)

    def check(self, req: CheckRequest, rule_set: str = "default") -> list[Alert]:
        """The alerts the request's new orders raise (empty: nothing to say)."""
        rules = self.rules(rule_set)
        if req.rule_ids:
            known = {r.id for r in rules}
            unknown = [x for x in req.rule_ids if x not in known]
            if unknown:
                raise RuleSetError(f"rule_ids not in rule set {rule_set!r} at stage pre_alert: {', '.join(unknown)}")
        new = [o for o in req.orders if o.get("new")]
        if not new:
            return []
        types = self.hub.route(rule_set, [o["hilist_code"] for o in new])
        use_fast = self.fast is not None and self.fast.can(rule_set, req)
        req.engine = "fast" if use_fast else "sql"
        self.answered[req.engine] += 1
        if not types:
            return []
        if use_fast:
            alerts = self.fast.check(rule_set, req, types)
        elif self.batch == 1:
            with self._session(rule_set) as s:
                alerts = self._run(s, rules, [(req, types)])[0]
        else:
            alerts = self._queued(rule_set, rules, req, types)
        # what the request's institution may see of lines of other institutions (period_limit's history)
        return [redact(a, req.visit["fixmedins_code"], req.visit["mdtrt_id"]) for a in alerts]

    def owners(self, req: CheckRequest) -> set[str]:
        """The institutions the database holds the request's visit for (its ``mdtrt_d``, ``setl_d``
        and ``fee_list_d`` rows); empty for a visit not stored yet. From memory on the fast
        engine (the visit's context, which the check loads anyway), else one query."""
        if self.fast is not None:
            return set(self.fast.cache.get(req.visit["mdtrt_id"], req.visit["psn_no"]).owners)
        cur = self.con.cursor()
        try:
            return {r[0] for r in cur.execute(OWNERS_SQL.format(cat=_q(self.catalog)), [req.visit["mdtrt_id"]] * 3
                                              ).fetchall() if r[0] is not None}
        finally:
            cur.close()

    def authorize(self, req: CheckRequest, institution: str) -> None:
        """Raise :class:`ForeignVisitError` when the request's visit is stored for another
        institution than ``institution`` (the API key's): its stored lines, diagnoses and
        record would otherwise be checked, and shown, as the visit's context."""
        if self.owners(req) - {institution}:
            raise ForeignVisitError(req.visit["mdtrt_id"])

    def _queued(self, rule_set: str, rules: list[Rule], req: CheckRequest, types: list[str]) -> list[Alert]:
        """Wait in line; whoever gets a session takes the waiting requests along (one per person)."""
        box: dict[str, Any] = {}
        done = threading.Event()
        with self._pool_lock:
            waiting = self._waiting.setdefault(rule_set, queue.Queue())
        waiting.put((req, types, box, done))
        while not done.is_set():
            with self._session(rule_set) as s:
                if done.is_set():
                    break
                taken, persons, later = [], set(), []
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
                    out = self._run(s, rules, [(t[0], t[1]) for t in taken])
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

    def _run(self, s: _Session, rules: list[Rule], batch: list[tuple[CheckRequest, list[str]]]) -> list[list[Alert]]:
        """One run over the lines of every request of ``batch`` (distinct persons)."""
        cur = s.cur
        self.runs += 1
        # order ids are the hospital's, unique within a request only: each gets its request's
        # number after a separator that sorts before every printable character, so orders keep
        # the order by id (the tie-break after time) they have among themselves and the lines
        tagged = []
        for i, (req, _t) in enumerate(batch):
            orders = [{**o, "bkkp_sn": f"{o['bkkp_sn']}{TAG}{i}", "_rx": o["bkkp_sn"]} for o in req.orders]
            tagged.append(orders)
        self._load_context(s, [req for req, _t in batch], tagged)
        engine.prepare_lines(cur, STAGE)
        engine.create_hits(cur)
        s.run(sorted({t for _r, types in batch for t in types}))
        new_ids = [o["bkkp_sn"] for orders in tagged for o in orders if o.get("new")]
        rows = self._hit_rows(cur, new_ids)
        if not rows:
            return [[] for _ in batch]
        new_set = set(new_ids)
        before: dict[tuple, Decimal] = {}
        # a touched finding with violating lines other than the new orders: were they violating
        # before the new orders? The same types again, over the lines without them.
        again = sorted({rules[r[0]].type for r in rows if r[4] == "violating" and r[3] not in new_set})
        if again:
            marks = ", ".join(_lit(x) for x in new_ids)
            cur.execute(f"DELETE FROM lines WHERE bkkp_sn IN ({marks})")
            engine.create_hits(cur)
            s.run(again)
            before = {
                (k, sn): _cent(c)
                for k, sn, c in cur.execute(
                    "SELECT rule_key, bkkp_sn, max(claim) FROM hits WHERE role = 'violating' GROUP BY ALL").fetchall()
            }
        order_ids = {o["bkkp_sn"] for orders in tagged for o in orders}
        alerts = self._alerts(rules, rows, before, new_set, order_ids)
        out: list[list[Alert]] = [[] for _ in batch]
        for i, a in alerts:
            wanted = batch[i][0].rule_ids
            if not wanted or a.rule_id in wanted:
                out[i].append(a)
        return out

    def _hit_rows(self, cur, new_ids: list[str]) -> list[tuple]:
        """Hit rows of the findings touched by a new order, one per (finding, line)."""
        return cur.execute(
            f"""
            WITH t AS (SELECT DISTINCT rule_key, finding_key FROM hits
                       WHERE bkkp_sn IN ({', '.join(_lit(x) for x in new_ids)}))
            SELECT h.rule_key, h.finding_key, any_value(h.mdtrt_id), h.bkkp_sn,
                   CASE WHEN bool_or(h.role = 'violating') THEN 'violating' ELSE 'related' END,
                   coalesce(max(h.claim) FILTER (WHERE h.role = 'violating'), 0),
                   any_value(h.ev_head), string_agg(DISTINCT h.ev_line, '；'),
                   any_value(l.fee_ocur_time), any_value(l.psn_no), any_value(h.psn_no),
                   any_value(l.hilist_code), any_value(l.fixmedins_code), any_value(l.mdtrt_id), any_value(l.fee_date)
            FROM hits h JOIN t USING (rule_key, finding_key)
            LEFT JOIN lines l ON l.bkkp_sn = h.bkkp_sn
            GROUP BY h.rule_key, h.finding_key, h.bkkp_sn
            ORDER BY h.rule_key, h.finding_key, any_value(l.fee_ocur_time), h.bkkp_sn
            """
        ).fetchall()

    @staticmethod
    def _alerts(rules: list[Rule], rows, before, new_ids: set[str], order_ids: set[str]) -> list[tuple[int, Alert]]:
        """(request index, alert) for each touched finding that has a newly violating line."""
        groups: dict[tuple, list[tuple]] = {}
        for row in rows:
            groups.setdefault((row[0], row[1]), []).append(row)
        out: list[tuple[int, Alert]] = []
        for (key, fkey), grp in groups.items():
            rule = rules[key]
            items: list[ItemHit] = []
            refs: list[LineRef] = []
            ev_lines: list[str] = []
            head = psn = mdtrt = ""
            req_no = None
            for (_k, _f, mdtrt_id, sn, role, claim, ev_head, ev_line, _t, l_psn, h_psn, code,
                 l_inst, l_visit, l_date) in grp:
                head = head or (ev_head or "")
                psn = psn or l_psn or h_psn or ""
                mdtrt = mdtrt or mdtrt_id or ""
                is_order = sn in order_ids
                shown = sn.rsplit(TAG, 1)[0] if is_order else sn  # the hospital's own rx_id
                refs.append(LineRef(shown, role, l_inst, l_visit, _date(l_date)))
                if sn in new_ids:
                    req_no = int(sn.rsplit(TAG, 1)[1])
                c = _cent(claim)
                if role == "violating" and c > before.get((key, sn), Decimal("-1")):
                    items.append(ItemHit(shown, "violating", c, is_order, sn in new_ids, code))
                    if ev_line:
                        ev_lines.append(ev_line)
                elif role == "related" or sn in new_ids:
                    items.append(ItemHit(shown, "related", Decimal("0"), is_order, sn in new_ids, code))
            if req_no is None or not any(i.role == "violating" for i in items):
                continue
            # the hospital's own ids in the text (an evidence line may name an order by its tagged id)
            evidence = _UNTAG.sub("", "；".join(x for x in [head, *ev_lines] if x))
            out.append((req_no, Alert(rule.id, rule.version, rule.name, rule.type, rule.severity, rule.nature,
                                      rule.basis, mdtrt, psn, fkey, evidence,
                                      sum((i.claim for i in items), Decimal("0.00")), items, refs)))
        return out

    def _load_context(self, s: _Session, reqs: list[CheckRequest], tagged: list[list[dict]]) -> None:
        """Fill the shadows: the persons' history from the database, then the requests. One
        statement list, values inlined as quoted literals (hundreds of bound parameters cost
        more than the whole check)."""
        cur, cat = s.cur, _q(self.catalog)
        visit_ids = ", ".join(_lit(r.visit["mdtrt_id"]) for r in reqs)
        persons = ", ".join(_lit(r.visit["psn_no"]) for r in reqs)
        rx = ", ".join(f"({_lit(r.visit['mdtrt_id'])}, {_lit(o['_rx'])})" for r, orders in zip(reqs, tagged) for o in orders)
        # each visit as the request states it, completed by the database's record of it (a
        # death recorded on the stay, ipt_days...) where the request says nothing
        res = cur.execute(
            f"SELECT * EXCLUDE (batch_id, source_row) FROM {cat}.main.mdtrt_d WHERE mdtrt_id IN ({visit_ids})").fetchall()
        cols = [d[0] for d in cur.description]
        known = {r[0]: dict(zip(cols, r)) for r in res}
        visits, diags, lines = [], [], []
        no_diag = [r.visit["mdtrt_id"] for r in reqs if not r.diagnoses]
        # a visit's operations as the request states them; the database's when it states none
        with_oprn = [r.visit["mdtrt_id"] for r in reqs if r.operations]
        oprns = [x for r in reqs for x in r.operations]
        for r, orders in zip(reqs, tagged):
            v = r.visit
            if v["mdtrt_id"] in known:
                v = {**known[v["mdtrt_id"]], **{k: x for k, x in v.items() if x is not None}}
            visits.append(v)
            diags.extend(r.diagnoses)
            for o in orders:
                row = {k: val for k, val in o.items() if k not in ("new", "_rx")}
                row.setdefault("mdtrt_id", v["mdtrt_id"])
                row.setdefault("psn_no", v["psn_no"])
                row.setdefault("fixmedins_code", v["fixmedins_code"])
                row.setdefault("setl_id", ORDER_SETL + v["mdtrt_id"])
                lines.append(row)
        sql = [f"DELETE FROM {t}" for t in SHADOWED] + [
            f"INSERT INTO mdtrt_d SELECT * FROM {cat}.main.mdtrt_d WHERE psn_no IN ({persons}) AND mdtrt_id NOT IN ({visit_ids})",
            f"INSERT INTO setl_d SELECT * FROM {cat}.main.setl_d WHERE psn_no IN ({persons})",
            f"INSERT INTO psn_death SELECT * FROM {cat}.main.psn_death WHERE psn_no IN ({persons})",
            # the visits' lines billed so far; an order with a line's id replaces that line
            f"""INSERT INTO fee_list_d SELECT * FROM {cat}.main.fee_list_d WHERE mdtrt_id IN ({visit_ids})
                AND (mdtrt_id, bkkp_sn) NOT IN (VALUES {rx})""",
            # the persons' other visits' lines of the items of rules that judge a person across visits
            (f"""INSERT INTO fee_list_d SELECT * FROM {cat}.main.fee_list_d WHERE psn_no IN ({persons})
                 AND mdtrt_id NOT IN ({visit_ids}) AND ({s.history})""" if s.history else ""),
            # a visit's diagnoses from the database only when its request states none
            f"""INSERT INTO setl_list_diag_d SELECT * FROM {cat}.main.setl_list_diag_d
                WHERE mdtrt_id IN (SELECT mdtrt_id FROM mdtrt_d)
                {f"OR mdtrt_id IN ({', '.join(_lit(x) for x in no_diag)})" if no_diag else ''}""",
            f"""INSERT INTO setl_list_oprn_d SELECT * FROM {cat}.main.setl_list_oprn_d
                WHERE (mdtrt_id IN (SELECT mdtrt_id FROM mdtrt_d) OR mdtrt_id IN ({visit_ids}))
                {f"AND mdtrt_id NOT IN ({', '.join(_lit(x) for x in with_oprn)})" if with_oprn else ''}""",
            s.values("setl_list_oprn_d", oprns),
            s.values("mdtrt_d", visits),
            s.values("setl_list_diag_d", diags),
            s.values("fee_list_d", lines),
        ]
        cur.execute(";\n".join(x for x in sql if x))


def _date(x: Any) -> dt.date | None:
    if x is None or (isinstance(x, dt.date) and not isinstance(x, dt.datetime)):
        return x
    if isinstance(x, dt.datetime):
        return x.date()
    return dt.date.fromisoformat(str(x)[:10])


def redact(alert: Alert, institution: str, mdtrt_id: str) -> Alert:
    """The alert as the pre-alert service may show it to ``institution`` (checking its visit ``mdtrt_id``).

    A finding may include lines of the person's visits at other institutions (period_limit counts
    the units paid anywhere). The answer may say that, and when, the item was paid elsewhere —
    never another institution's line ids, visit ids, code, prices or amounts:

    - its lines are not items of the answer (``judge_result_detail_dtos``);
    - the evidence names such a line ``2026-03-01 其他机构`` where batch screening writes
      ``2026-03-01 H002 就诊 V7`` (the bureau's post-hoc evidence keeps it all);
    - when the text would still show one of those ids, or the finding's newly violating line
      is itself another institution's (an order dated before a unit paid elsewhere makes that
      unit excess), the evidence is only the rule's name and the dates of the lines elsewhere,
      and the amount counts the institution's own violating lines only.

    A line with no institution counts as another institution's unless it is on the visit
    checked. Lines of the institution's own other visits are shown as they are.
    """
    def foreign(inst: str | None, visit: str | None) -> bool:
        return inst != institution and not (inst is None and visit == mdtrt_id)

    others = [r for r in alert.lines if foreign(r.fixmedins_code, r.mdtrt_id)]
    if not others:
        return alert
    gone = {r.bkkp_sn for r in others}
    text = alert.evidence
    for r in others:
        if r.fee_date is not None:
            text = text.replace(f"{r.fee_date:%Y-%m-%d} {r.fixmedins_code} 就诊 {r.mdtrt_id}",
                                f"{r.fee_date:%Y-%m-%d} {OTHER_INSTITUTION}")
    shown = [x for r in others for x in (r.bkkp_sn, r.fixmedins_code, r.mdtrt_id) if x]
    if any(r.role == "violating" for r in others) or any(x in text for x in shown):
        dates = sorted({f"{r.fee_date:%Y-%m-%d}" for r in others if r.fee_date is not None})
        text = f"{alert.rule_name}：涉及{OTHER_INSTITUTION}已结算的收费" + (f"（{'、'.join(dates)}）" if dates else "")
    items = [i for i in alert.items if i.is_order or i.bkkp_sn not in gone]
    own_visit = alert.mdtrt_id not in {r.mdtrt_id for r in others}
    return Alert(alert.rule_id, alert.rule_version, alert.rule_name, alert.rule_type, alert.severity, alert.nature,
                 alert.basis, alert.mdtrt_id if own_visit else mdtrt_id, alert.psn_no,
                 alert.finding_key if own_visit else mdtrt_id, text,
                 sum((i.claim for i in items if i.role == "violating"), Decimal("0.00")), items,
                 [r for r in alert.lines if r.bkkp_sn not in gone])


def _lit(x: Any) -> str:
    """A value as a SQL literal (the column's type casts it on insert)."""
    if x is None:
        return "NULL"
    if isinstance(x, bool):
        return "TRUE" if x else "FALSE"
    if isinstance(x, dt.datetime):
        x = x.replace(tzinfo=None).isoformat(sep=" ")
    elif isinstance(x, dt.date):
        x = x.isoformat()
    return "'" + str(x).replace("'", "''") + "'"
