"""What a screening run reads: what the new batches touch, with as much history as the rules need.

A nightly job loads each day's submissions into one database and runs ``medaudit screen``.
Screening the whole history every night would cost more every night; a run screens what
changed since the stage's last run instead, reading history only as far back as its rules
look, and its findings equal those of a full re-screen of the same data
(``tests/test_incremental.py`` loads generated months day by day and compares, finding by
finding and cent by cent). ``--all`` screens everything.

1. **Which batches.** ``screened_batches`` records, per stage, the batches each run covered.
   A run takes the loaded batches not screened yet for its stage (or those of ``--batch`` or
   ``--since``); ``--period YYYY-MM`` takes the visits with lines in that month instead.
2. **Touched visits.** Every visit a new row names (visit, settlement, fee line, diagnosis,
   procedure); every visit of a person whose death becomes known, from the death date on;
   every visit billing a code whose catalogue rows are new (everything when it is the first
   catalogue: lines are judged against a catalogue only once one is loaded); and the months
   whose purchase records are new.
3. **Reach.** Each rule type declares, from a rule's parameters, how far beyond its own visit it
   looks (:class:`medaudit.types.base.Reach`). For the person-scoped types a run takes, per
   touched person, the date window of the touched visits and widens it until no other visit of
   the person lies within reach of it (a closure: a chain of visits each within reach of the
   next is read whole, so a period count starts where a full screen starts it). The visits
   inside a window are screened whole: each finding about them is the full screen's, and each
   finding the new data can change is about one of them. Month-scoped types get every visit of
   the touched months and keep the findings of those months; ``all`` gets everything.
4. **Spans, not scans.** ``visit_span`` keeps each visit's person and first and last day
   (admission, discharge and fee dates; an open stay reaches to the end of time), merged from
   each batch once (in the screening's transaction), so the windows come from visits, not from scanning history. The fee lines
   of the windows are then read with a lower bound on ``fee_ocur_time``: DuckDB keeps the
   minimum and maximum of every row group (zone maps) and skips those wholly before it, and
   day-by-day batches are stored in date order.

When the rule library changed since the stage's last run, the run screens everything: a new or
changed rule must see the history, and a rule's new version supersedes its old findings.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable

import duckdb

from .contract import TABLES

if TYPE_CHECKING:
    from .types.base import Reach

SCHEMA = """
-- which batches each screening run covered, per stage (what "new" means for the next run)
CREATE TABLE IF NOT EXISTS screened_batches (stage VARCHAR, batch_id INTEGER, run_id INTEGER);
-- each visit's person and date span (admission, discharge, fee dates), merged once per batch
CREATE TABLE IF NOT EXISTS visit_span (
    mdtrt_id VARCHAR, psn_no VARCHAR, first_date DATE, last_date DATE, is_open BOOLEAN);
CREATE TABLE IF NOT EXISTS span_batches (batch_id INTEGER);
"""

#: the last day an open stay reaches
END_OF_TIME = "DATE '9999-12-31'"
#: the claim tables whose rows name a visit
_VISIT_TABLES = ("mdtrt_d", "setl_d", "fee_list_d", "setl_list_diag_d", "setl_list_oprn_d")
_PERIOD = re.compile(r"[0-9]{4}-(0[1-9]|1[0-2])")


class ScopeError(ValueError):
    """A screening scope a user gave that cannot be honoured (unknown batch, bad month)."""


@dataclass(frozen=True)
class Scope:
    """What a run is asked to screen: ``new`` (batches not screened yet for the stage, the
    default of ``medaudit screen``), ``all``, ``batch`` (the given batches), ``since`` (batches
    loaded at or after a time), ``period`` (visits with lines in a month) or ``visits`` (the
    given visits, e.g. those a tip names: :func:`Scope.of_visits`; the run keeps only the
    findings that involve them)."""

    mode: str = "all"
    batches: tuple[int, ...] = ()
    since: dt.datetime | None = None
    period: str | None = None
    visits: tuple[str, ...] = ()

    @classmethod
    def of_visits(cls, visits) -> Scope:
        """The given visits (mdtrt_id), screened with the history each rule needs."""
        return cls("visits", visits=tuple(sorted(set(visits))))

    @classmethod
    def from_options(
        cls, all_: bool = False, batches: list[int] | None = None, since: str | None = None, period: str | None = None
    ) -> Scope:
        """The CLI's options (at most one of them) as a scope; ``ScopeError`` names the bad one."""
        given = [n for n, v in (("--all", all_), ("--batch", batches), ("--since", since), ("--period", period)) if v]
        if len(given) > 1:
            raise ScopeError(f"give one of {', '.join(given)}, not several")
        if all_:
            return cls("all")
        if batches:
            return cls("batch", batches=tuple(sorted(set(batches))))
        if since:
            try:
                when = dt.datetime.fromisoformat(since.strip())
            except ValueError:
                raise ScopeError(
                    f"--since: {since!r} is not a date or time (write 2026-03-01 or 2026-03-01 18:00)"
                ) from None
            if when.tzinfo is not None:  # loaded_at is the machine's local time, without a zone
                raise ScopeError(f"--since: {since!r} names a time zone; write the local time (2026-03-01 18:00)")
            return cls("since", since=when)
        if period:
            if not _PERIOD.fullmatch(period.strip()):
                raise ScopeError(f"--period: {period!r} is not a month written YYYY-MM (e.g. 2026-03)")
            return cls("period", period=period.strip())
        return cls("new")


@dataclass
class Plan:
    """What a run will screen, and why (one line for the summary)."""

    full: bool
    batches: list[int] = field(default_factory=list)  # recorded in screened_batches for the stage
    why: str = ""
    nothing: bool = False  # nothing new: the run screens no line


def stage_spans(con: duckdb.DuckDBPyConnection) -> None:
    """``spans``: ``visit_span`` brought up to date with every loaded batch, as a view over the
    stored spans and the merged rows of the batches not merged yet (temp ``__span_new``). Nothing
    is written: :func:`commit_spans` stores them in the screening's own transaction, so a run
    killed half-way leaves the database as it was."""
    todo = [
        b
        for (b,) in con.execute(
            "SELECT batch_id FROM load_log WHERE batch_id NOT IN (SELECT batch_id FROM span_batches) ORDER BY 1"
        ).fetchall()
    ]
    con.execute("CREATE OR REPLACE TEMP TABLE __span_todo AS SELECT unnest(?::INTEGER[]) AS batch_id", [todo])
    con.execute(
        """
        CREATE OR REPLACE TEMP TABLE __span_new AS
        WITH v AS (
            SELECT mdtrt_id, psn_no, CAST(begntime AS DATE) AS d0,
                   coalesce(CAST(endtime AS DATE), CAST(begntime AS DATE)) AS d1, endtime IS NULL AS is_open
            FROM mdtrt_d WHERE batch_id IN (SELECT batch_id FROM __span_todo)),
        -- the new lines' span of each visit, once: the stored spans to merge are looked up by
        -- these visits, not by every new fee line's visit again (52.4M lines loaded at once, the
        -- statement alone: 6.5 -> 4.9 CPU s on its first run, 3.9 -> 3.7 run again)
        f AS MATERIALIZED (
            SELECT mdtrt_id, NULL AS psn_no, min(CAST(fee_ocur_time AS DATE)) AS d0,
                   max(CAST(fee_ocur_time AS DATE)) AS d1, NULL AS is_open
            FROM fee_list_d WHERE batch_id IN (SELECT batch_id FROM __span_todo) GROUP BY mdtrt_id),
        parts AS (
            SELECT * FROM v
            UNION ALL SELECT * FROM f
            UNION ALL
            SELECT mdtrt_id, psn_no, first_date, last_date, is_open FROM visit_span
            WHERE mdtrt_id IN (SELECT mdtrt_id FROM v UNION SELECT mdtrt_id FROM f)),
        merged AS (
            SELECT mdtrt_id, any_value(psn_no) AS psn_no, min(d0) AS first_date, max(d1) AS last_date,
                   coalesce(bool_or(is_open), FALSE) AS is_open
            FROM parts GROUP BY mdtrt_id)
        -- a visit's lines may come in a batch before its visit row is merged: the person comes from mdtrt_d
        SELECT s.mdtrt_id, coalesce(s.psn_no, v.psn_no) AS psn_no, s.first_date, s.last_date,
               s.is_open OR v.endtime IS NULL AS is_open
        FROM merged s LEFT JOIN mdtrt_d v USING (mdtrt_id);
        CREATE OR REPLACE TEMP VIEW spans AS
        SELECT * FROM visit_span WHERE mdtrt_id NOT IN (SELECT mdtrt_id FROM __span_new)
        UNION ALL SELECT * FROM __span_new;
        """
    )


def commit_spans(con: duckdb.DuckDBPyConnection) -> None:
    """Store what :func:`stage_spans` merged (inside the caller's transaction)."""
    con.execute(
        """
        DELETE FROM visit_span WHERE mdtrt_id IN (SELECT mdtrt_id FROM __span_new);
        INSERT INTO visit_span SELECT * FROM __span_new;
        INSERT INTO span_batches SELECT batch_id FROM __span_todo;
        """
    )


def plan(
    con: duckdb.DuckDBPyConnection,
    stage: str,
    scope: Scope,
    digest: str,
    digest_v1: Callable[[], str] | None = None,
) -> Plan:
    """Decide what a run of ``stage`` screens under ``scope`` with a library of ``digest``.
    ``digest_v1``: the same library's digest as runs before 2026-12-05 stored it (asked only when
    the last run's differs from ``digest``): such a run's library is unchanged when it matches."""
    loaded = [b for (b,) in con.execute("SELECT batch_id FROM load_log ORDER BY 1").fetchall()]
    if scope.mode == "all":
        return Plan(True, loaded, "all loaded data (--all)")
    if not loaded:  # an empty database: the run says why nothing was screened
        return Plan(True, [], "all loaded data (no batch is loaded)")
    last = con.execute(
        "SELECT rules_digest FROM screen_runs WHERE stage = ? ORDER BY run_id DESC LIMIT 1", [stage]
    ).fetchall()
    if last and last[0][0] != digest and not (digest_v1 and last[0][0] == digest_v1()):
        return Plan(True, loaded, f"all loaded data: the rule library changed since the last {stage} run")
    if scope.mode == "period":
        return Plan(False, [], f"visits with lines in {scope.period}")
    if scope.mode == "visits":
        if not scope.visits:
            return Plan(False, [], "nothing: no visit was named", nothing=True)
        return Plan(
            False,
            [],
            f"the {len(scope.visits)} visit(s) named ({', '.join(scope.visits[:5])}"
            f"{', ...' if len(scope.visits) > 5 else ''})",
        )
    if scope.mode == "batch":
        unknown = sorted(set(scope.batches) - set(loaded))
        if unknown:
            raise ScopeError(
                f"--batch: no batch {', '.join(map(str, unknown))} is loaded "
                f"(loaded: {', '.join(map(str, loaded)) or 'none'})"
            )
        chosen = list(scope.batches)
        if _first_catalogue(con, chosen):
            return Plan(True, loaded, "all loaded data: the catalogue (hilist) arrived for the first time")
        return Plan(False, chosen, f"batch {', '.join(map(str, chosen))}")
    if scope.mode == "since":
        chosen = [
            b
            for (b,) in con.execute(
                "SELECT batch_id FROM load_log WHERE loaded_at >= ? ORDER BY 1", [scope.since]
            ).fetchall()
        ]
        if not chosen:
            return Plan(False, [], f"nothing: no batch was loaded since {scope.since:%Y-%m-%d %H:%M}", nothing=True)
        if _first_catalogue(con, chosen):
            return Plan(True, loaded, "all loaded data: the catalogue (hilist) arrived for the first time")
        return Plan(False, chosen, f"the {len(chosen)} batch(es) loaded since {scope.since:%Y-%m-%d %H:%M}")
    done = {
        b for (b,) in con.execute("SELECT DISTINCT batch_id FROM screened_batches WHERE stage = ?", [stage]).fetchall()
    }
    new = [b for b in loaded if b not in done]
    if not new:
        return Plan(
            False,
            [],
            f"nothing new: every loaded batch was screened for {stage} (`--all` screens everything again)",
            nothing=True,
        )
    if not done:
        return Plan(True, new, f"all loaded data (the first {stage} run)")
    if _first_catalogue(con, new):
        return Plan(True, new, "all loaded data: the catalogue (hilist) arrived for the first time")
    return Plan(False, new, f"what the {len(new)} new batch(es) touch ({', '.join(map(str, new))})")


def _first_catalogue(con: duckdb.DuckDBPyConnection, batches: list[int]) -> bool:
    """Whether ``batches`` bring the first catalogue rows: a line is judged against the catalogue
    only once one is loaded (not_in_catalog), so every line's judgement changes."""
    return con.execute(
        """SELECT count(*) FILTER (WHERE list_contains(?::INTEGER[], batch_id)) > 0
                  AND count(*) FILTER (WHERE NOT list_contains(?::INTEGER[], batch_id)) = 0 FROM hilist""",
        [batches, batches],
    ).fetchall()[0][0]


@dataclass
class Context:
    """The visits a run screens (temp table ``ctx_visits``: mdtrt_id, in_person, in_month), the
    months whose month-scoped findings it keeps (``ctx_months``), and the dates to read."""

    everything: bool  # an ``all`` rule: every screened line
    has_month: bool
    n_visits: int
    lo: dt.date | None  # the first day any context visit reaches (lines before it are not read)
    pad_days: int  # how far before ``lo`` the visit table must reach (previous stays of a readmission)
    #: of ``n_visits``, those in the persons' windows (the rest are read for the month-wide types only)
    n_person: int = 0
    #: the calendar months the month-wide types read whole (``YYYY-MM``, in order)
    months: tuple[str, ...] = ()


def reach_of(rules: list) -> dict[str, Reach]:
    """Per rule type the widest reach of its rules (scope all > month > person; most days)."""
    from .types.base import Reach

    order = {"person": 0, "month": 1, "all": 2}
    out: dict[str, Reach] = {}
    for r in rules:
        x = r.rule_type.reach(r)
        cur = out.get(r.type)
        if cur is None:
            out[r.type] = x
        else:
            out[r.type] = Reach(
                scope=max(cur.scope, x.scope, key=order.__getitem__),
                days=max(cur.days, x.days),
                whole_months=cur.whole_months or x.whole_months,
            )
    return out


def build_context(con: duckdb.DuckDBPyConnection, stage: str, scope: Scope, batches: list[int], rules: list) -> Context:
    """Create ``ctx_visits`` and ``ctx_months`` for an incremental run (see the module doc)."""
    reaches = reach_of(rules)
    person = [x for x in reaches.values() if x.scope == "person"]
    days = max([x.days for x in person] or [0])
    whole_months = any(x.whole_months for x in person)
    month_days = max([x.days for x in reaches.values() if x.scope == "month"] or [-1])
    everything = any(x.scope == "all" for x in reaches.values())
    has_month = month_days >= 0
    last = f"CASE WHEN is_open THEN {END_OF_TIME} ELSE last_date END"

    # 1. the touched visits
    if scope.mode == "visits":
        con.execute(
            "CREATE OR REPLACE TEMP TABLE seed AS SELECT DISTINCT mdtrt_id FROM spans "
            "WHERE list_contains(?::VARCHAR[], mdtrt_id)",
            [list(scope.visits)],
        )
        con.execute("CREATE OR REPLACE TEMP TABLE seed_months (month VARCHAR)")
    elif scope.mode == "period":
        stage_month = (
            "strftime(coalesce(s.setl_time, f.fee_ocur_time), '%Y-%m')"
            if stage == "post_hoc"
            else "strftime(f.fee_ocur_time, '%Y-%m')"
        )
        assert scope.period is not None  # Scope.of sets the month with mode "period"
        start = dt.date.fromisoformat(scope.period + "-01")
        con.execute(
            f"""CREATE OR REPLACE TEMP TABLE seed AS
                SELECT DISTINCT f.mdtrt_id FROM fee_list_d f LEFT JOIN setl_d s ON s.setl_id = f.setl_id
                WHERE f.fee_ocur_time < CAST(? AS DATE) + INTERVAL 1 MONTH AND {stage_month} = ?""",
            [start, scope.period],
        )
        con.execute("CREATE OR REPLACE TEMP TABLE seed_months (month VARCHAR)")
    else:
        con.execute("CREATE OR REPLACE TEMP TABLE __b AS SELECT unnest(?::INTEGER[]) AS batch_id", [batches])
        parts = [
            f"SELECT mdtrt_id FROM {t} WHERE batch_id IN (SELECT batch_id FROM __b)"
            for t in _VISIT_TABLES
            if t in TABLES
        ]
        # catalogue rows new: the visits billing those codes (a scan of the lines by code, so
        # only on the nights a catalogue arrives)
        if con.execute("SELECT count(*) FROM hilist WHERE batch_id IN (SELECT batch_id FROM __b)").fetchall()[0][0]:
            parts.append(
                "SELECT f.mdtrt_id FROM fee_list_d f WHERE f.hilist_code IN "
                "(SELECT hilist_code FROM hilist WHERE batch_id IN (SELECT batch_id FROM __b))"
            )
        con.execute(
            f"""CREATE OR REPLACE TEMP TABLE seed AS
                {" UNION ".join(parts)}
                -- a death newly known: the person's visits from that day on
                UNION SELECT s.mdtrt_id FROM spans s JOIN (
                    SELECT psn_no, die_date FROM psn_death WHERE batch_id IN (SELECT batch_id FROM __b)
                    UNION ALL SELECT psn_no, die_date FROM mdtrt_d
                    WHERE die_date IS NOT NULL AND batch_id IN (SELECT batch_id FROM __b)) d
                  ON d.psn_no = s.psn_no AND {last} >= d.die_date;
                -- purchase records new: their months
                CREATE OR REPLACE TEMP TABLE seed_months AS
                SELECT DISTINCT period AS month FROM purchases WHERE batch_id IN (SELECT batch_id FROM __b);
                DROP TABLE __b;"""
        )

    # 2. person windows, widened until closed: no visit of the person within `days` of the window
    #    lies outside it (with whole_months, windows are whole calendar months)
    snap_lo = "CAST(date_trunc('month', {x}) AS DATE)" if whole_months else "{x}"
    snap_hi = (
        "CASE WHEN {x} >= " + END_OF_TIME + " THEN {x} ELSE CAST(last_day({x}) AS DATE) END" if whole_months else "{x}"
    )
    con.execute(
        f"""CREATE OR REPLACE TEMP TABLE win AS
            SELECT psn_no, {snap_lo.format(x="min(first_date)")} AS a, {snap_hi.format(x=f"max({last})")} AS b
            FROM spans WHERE mdtrt_id IN (SELECT mdtrt_id FROM seed) GROUP BY psn_no"""
    )
    while True:
        con.execute(
            f"""CREATE OR REPLACE TEMP TABLE win2 AS
                SELECT w.psn_no, {snap_lo.format(x="least(any_value(w.a), min(s.first_date))")} AS a,
                       {snap_hi.format(x=f"greatest(any_value(w.b), max({last}))")} AS b
                FROM win w JOIN spans s ON s.psn_no = w.psn_no
                 AND s.first_date <= w.b + {days} AND {last} >= w.a - {days}
                GROUP BY w.psn_no"""
        )
        changed = con.execute(
            "SELECT count(*) FROM win2 JOIN win USING (psn_no) WHERE win2.a <> win.a OR win2.b <> win.b"
        ).fetchall()[0][0]
        con.execute("DROP TABLE win; ALTER TABLE win2 RENAME TO win")
        if not changed:
            break

    # 3. months: of the touched visits (and `month_days` around them) and of new purchase records
    if has_month:
        con.execute(
            f"""INSERT INTO seed_months
                SELECT DISTINCT strftime(m, '%Y-%m') FROM (
                    SELECT unnest(generate_series(CAST(date_trunc('month', first_date - {month_days}) AS TIMESTAMP),
                                                  CAST(date_trunc('month', least({last}, hi) + {month_days}) AS TIMESTAMP),
                                                  INTERVAL 1 MONTH)) AS m
                    FROM spans, (SELECT max(last_date) AS hi FROM spans) t
                    WHERE mdtrt_id IN (SELECT mdtrt_id FROM seed))"""
        )
    con.execute("CREATE OR REPLACE TEMP TABLE ctx_months AS SELECT DISTINCT month FROM seed_months")

    # 4. the context: visits of the windows (person types), of the months (month types)
    con.execute(
        f"""CREATE OR REPLACE TEMP TABLE ctx_visits AS
            SELECT mdtrt_id, bool_or(p) AS in_person, bool_or(m) AS in_month, min(first_date) AS first_date FROM (
                SELECT s.mdtrt_id, TRUE AS p, FALSE AS m, s.first_date
                FROM spans s JOIN win w ON w.psn_no = s.psn_no AND s.first_date >= w.a AND {last} <= w.b
                UNION ALL
                SELECT s.mdtrt_id, FALSE, TRUE, s.first_date
                FROM spans s JOIN (SELECT CAST(month || '-01' AS DATE) AS m0 FROM ctx_months) c
                  ON s.first_date < c.m0 + INTERVAL 1 MONTH AND {last} >= c.m0
                WHERE {"TRUE" if has_month else "FALSE"})
            GROUP BY mdtrt_id"""
    )
    n, lo, n_person = con.execute(
        "SELECT count(*), min(first_date), count(*) FILTER (WHERE in_person) FROM ctx_visits"
    ).fetchall()[0]
    months = (
        tuple(m for (m,) in con.execute("SELECT month FROM ctx_months ORDER BY month").fetchall()) if has_month else ()
    )
    con.execute("DROP TABLE seed; DROP TABLE seed_months; DROP TABLE win")
    pad = max([x.days for x in reaches.values()] or [0]) + 31
    return Context(
        everything=everything, has_month=has_month, n_visits=n, lo=lo, pad_days=pad, n_person=n_person, months=months
    )


def record(con: duckdb.DuckDBPyConnection, stage: str, batches: list[int], run_id: int) -> None:
    """Remember that ``run_id`` screened ``batches`` for ``stage``."""
    if batches:
        con.execute("INSERT INTO screened_batches SELECT ?, unnest(?::INTEGER[]), ?", [stage, batches, run_id])
