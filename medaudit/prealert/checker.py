"""The order check: a small dispatcher over the two paths.

:class:`OrderChecker` takes a request (:class:`~.alerts.CheckRequest`), checks its rule ids,
routes its new orders to the rule types that can have an opinion on them (:mod:`.events`), and
chooses the path **per rule type**:

- types with an in-memory evaluator answer on the fast path (:mod:`.fast`);
- the others' queries run on the SQL path (:mod:`.sql_path`) over the request's small context,
  in the same request;

and merges the two paths' alerts (both made by :func:`.alerts.alerts_of`), in the order one path
alone gives them, then applies :func:`.alerts.redact`. With ``engine="sql"`` every type takes
the SQL path; a request with an order that replaces a stored line too (the SQL path rebuilds
refund netting with the replacement). The paths that answered are named in
``CheckRequest.engine`` (``fast``, ``sql`` or ``fast+sql``) and counted in :attr:`OrderChecker.answered`.

**Other institutions.** The request's institution must be its API key's, and a visit stored
for another institution is refused (:meth:`OrderChecker.authorize`, before any check). The
person's lines at other institutions still count (period_limit), but the answer shows them only
as "paid at another institution on date D" (:func:`.alerts.redact`, applied to both paths).
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

import duckdb

from ..library import Library, Rule
from .alerts import Alert, CheckRequest, ForeignVisitError, RuleSetError, merged, redact
from .events import EventHub, Router
from .fast import FastPath
from .sql_path import STAGE, SqlPath

if TYPE_CHECKING:
    from .writer import ResultWriter

ENGINES = ("fast", "sql")


class OrderChecker:
    """Checks orders against each rule library's pre_alert rules, with a database's history.

    ``con`` is the service's connection to the medaudit database (history, results, feedback).
    The SQL path runs on a pool of ``sessions`` cursors; with ``batch`` > 1, requests that arrive
    while a session is busy are checked together in one run (:class:`.sql_path.Batcher`).
    """

    def __init__(
        self,
        con: duckdb.DuckDBPyConnection,
        libraries: dict[str, Library],
        sessions: int = 2,
        batch: int = 1,
        engine: str = "fast",
        cache_ttl: float = 300.0,
        preload: bool = False,
        window: bool = False,
        history_days: int | None = None,
        cache_visits: int | None = None,
    ):
        if engine not in ENGINES:
            raise ValueError(f"engine must be fast or sql, got {engine!r}")
        self.con = con
        self.engine = engine
        #: where answers are written (set by the service, :func:`.app.create_app`; None: synchronously)
        self.writer: ResultWriter | None = None
        self.libraries = libraries
        self.rule_sets: dict[str, list[Rule]] = {
            name: [r for r in lib.rules if STAGE in r.stages] for name, lib in libraries.items()
        }
        self.routers = {name: Router(rules) for name, rules in self.rule_sets.items()}
        self.hub = EventHub(self.routers)
        self.sql = SqlPath(con, self.rule_sets, sessions=sessions, batch=batch)
        #: the preloaded history's window (:mod:`.window`; None: everything stored is preloaded)
        self.window = None
        self.fast = None
        if engine == "fast":
            built = None
            if preload and window:
                from . import window as win

                built = win.build(con, [r for rules in self.rule_sets.values() for r in rules], history_days)
            if built is None:
                self.fast = FastPath(con, self.rule_sets, ttl=cache_ttl, preload=preload)
            else:  # preloaded from the window's copy, which is closed after (nothing reads it again)
                wcon, self.window = built
                try:
                    self.fast = FastPath(wcon, self.rule_sets, ttl=cache_ttl, preload=True)
                finally:
                    wcon.close()
            if cache_visits is not None:  # visits loaded on first use (not preloaded) kept at most
                self.fast.cache.size = max(int(cache_visits), 1 if not preload else len(self.fast.cache._data))
        #: requests answered by each path (``fast+sql``: both, for different rule types)
        self.answered = {"fast": 0, "sql": 0}
        self._answered_lock = threading.Lock()  # checks run on several threads at once

    @property
    def runs(self) -> int:
        """Runs the SQL path made (a run may answer several requests)."""
        return self.sql.runs

    def warm(self) -> None:
        """Open every SQL session now (registering a large library takes a moment), not on first use.
        With the fast engine, only rule sets with types it has no evaluator for need sessions."""
        for name in self.rule_sets:
            if self.fast is None or not self.fast.covered[name]:
                self.sql.pool.warm(name)

    def rules(self, rule_set: str) -> list[Rule]:
        if rule_set not in self.rule_sets:
            raise RuleSetError(f"unknown rule set {rule_set!r} (this service has: {', '.join(sorted(self.rule_sets))})")
        return self.rule_sets[rule_set]

    # ------------------------------------------------------------------ path choice

    def split(self, req: CheckRequest, types: list[str]) -> tuple[str, list[str], list[str]]:
        """The routed ``types`` as (the paths' name, types answered in memory, types answered by SQL)."""
        if self.fast is None or (self.window is not None and not self.window.covers(req)) or not self.fast.can(req):
            return "sql", [], list(types)
        in_memory = [t for t in types if self.fast.has(t)]
        by_sql = [t for t in types if not self.fast.has(t)]
        return ("fast+sql" if in_memory else "sql") if by_sql else "fast", in_memory, by_sql

    def in_memory(self, req: CheckRequest, rule_set: str = "default") -> bool:
        """The check of ``req`` needs no database (the fast path answers every type it routes to,
        from memory), so a caller may run it where waiting on the database would block others
        (the event loop)."""
        if self.fast is None or rule_set not in self.rule_sets or not self.fast.in_memory(req):
            return False
        if self.window is not None and not self.window.covers(req):
            return False
        types = self.routers[rule_set].route([o["hilist_code"] for o in req.orders if o.get("new")])
        return all(self.fast.has(t) for t in types)

    # ------------------------------------------------------------------ the check

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
        req.engine, in_memory, by_sql = self.split(req, types)
        with self._answered_lock:  # a read and a write: unguarded, two threads lost a count (312 of 314)
            self.answered[req.engine] = self.answered.get(req.engine, 0) + 1
        fast_alerts = []
        if in_memory:
            assert self.fast is not None  # split() answers in memory only when the fast path is built
            fast_alerts = self.fast.check(rule_set, req, in_memory)
        alerts = merged(fast_alerts, self.sql.check(rule_set, req, by_sql) if by_sql else [])
        # what the request's institution may see of lines of other institutions (period_limit's history)
        return [redact(a, req.visit["fixmedins_code"], req.visit["mdtrt_id"]) for a in alerts]

    # ------------------------------------------------------------------ who may ask

    def owners(self, req: CheckRequest) -> set[str]:
        """The institutions the database holds the request's visit for (its ``mdtrt_d``, ``setl_d``
        and ``fee_list_d`` rows); empty for a visit not stored yet. From memory on the fast
        engine (the visit's context, which the check loads anyway), else one query."""
        if self.window is not None and self.window.maybe_old(req.visit["mdtrt_id"]):
            return self.sql.owners(req.visit["mdtrt_id"])  # a stored visit not preloaded
        if self.fast is not None:
            return set(self.fast.cache.get(req.visit["mdtrt_id"], req.visit["psn_no"]).owners)
        return self.sql.owners(req.visit["mdtrt_id"])

    def authorize(self, req: CheckRequest, institution: str) -> None:
        """Raise :class:`ForeignVisitError` when the request's visit is stored for another
        institution than ``institution`` (the API key's): its stored lines, diagnoses and
        record would otherwise be checked, and shown, as the visit's context."""
        if self.owners(req) - {institution}:
            raise ForeignVisitError(req.visit["mdtrt_id"])
