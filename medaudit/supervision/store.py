"""Tables of supervision over time and their append-only audit log.

``supervision_events`` is to assessments, credit files and the watchlist what
``finding_events`` is to findings: every command appends who did what, when and why, and
nothing in the code updates or deletes a row of it. The rows it explains (credit entries,
watch entries, assessment runs) carry the ``event_id`` of the event that wrote them.
"""

from __future__ import annotations

import datetime as dt
import json

import duckdb

from ..hospital_loop import lifecycle

SCHEMA = """
CREATE SEQUENCE IF NOT EXISTS supervision_event_seq;
CREATE TABLE IF NOT EXISTS supervision_events (       -- append-only audit log
    event_id BIGINT PRIMARY KEY DEFAULT nextval('supervision_event_seq'),
    event_at TIMESTAMP,
    actor VARCHAR,
    action VARCHAR,          -- assess, credit_record, credit_points, watch_add, watch_remove, watch_enter, watch_leave
    subject VARCHAR,         -- what it is about: an entity (H001, H001/D01, person:P1), a run, a nature
    reason VARCHAR,
    detail VARCHAR,          -- JSON
    as_of DATE               -- the day the move was judged on when it is not today (--as-of)
);
CREATE SEQUENCE IF NOT EXISTS assessment_run_seq;
CREATE TABLE IF NOT EXISTS assessment_runs (
    run_id INTEGER PRIMARY KEY DEFAULT nextval('assessment_run_seq'),
    year INTEGER,
    month INTEGER,           -- NULL: the whole year
    scheme_name VARCHAR,
    scheme_version VARCHAR,
    scheme_hash VARCHAR,     -- SHA-256 of the scheme's canonical JSON: which scheme made the result
    scheme_json VARCHAR,
    result_hash VARCHAR,     -- SHA-256 of the results: the same scheme on the same data gives the same hash
    n_institutions INTEGER,
    event_id BIGINT
);
CREATE TABLE IF NOT EXISTS assessment_results (
    run_id INTEGER,
    fixmedins_code VARCHAR,
    inst_level INTEGER,
    score DECIMAL(7,2),
    grade VARCHAR,
    vetoed BOOLEAN,
    rank_in_level INTEGER,
    n_in_level INTEGER,
    measures VARCHAR,        -- JSON: every measure's value
    points VARCHAR,          -- JSON: every indicator's points
    PRIMARY KEY (run_id, fixmedins_code)
);
CREATE TABLE IF NOT EXISTS assessment_vetoes (
    run_id INTEGER,
    fixmedins_code VARCHAR,
    veto_id VARCHAR,
    veto_name VARCHAR,
    value VARCHAR,
    finding_id VARCHAR       -- one row per finding that triggered it
);
CREATE SEQUENCE IF NOT EXISTS credit_entry_seq;
CREATE TABLE IF NOT EXISTS credit_entries (           -- append-only
    entry_id BIGINT PRIMARY KEY DEFAULT nextval('credit_entry_seq'),
    entity VARCHAR,          -- H001 (institution), H001/D01 (doctor), person:P1 (person)
    entity_kind VARCHAR,     -- institution, doctor, person
    fixmedins_code VARCHAR,
    entry_date DATE,         -- the day the violation was confirmed (its statement's day)
    period VARCHAR,
    nature VARCHAR,
    amount DECIMAL(18,2),
    points INTEGER,
    source VARCHAR,          -- statement
    source_id VARCHAR,       -- the statement id
    finding_id VARCHAR,
    event_id BIGINT,
    UNIQUE (entity, finding_id)                    -- a finding counts once per entity, ever
);
CREATE TABLE IF NOT EXISTS credit_points (nature VARCHAR PRIMARY KEY, points INTEGER);
CREATE SEQUENCE IF NOT EXISTS watch_seq;
CREATE TABLE IF NOT EXISTS watchlist (
    watch_id INTEGER PRIMARY KEY DEFAULT nextval('watch_seq'),
    entity VARCHAR,
    entity_kind VARCHAR,
    fixmedins_code VARCHAR,
    how VARCHAR,             -- points, outlier, manual
    entered_on DATE,
    reason VARCHAR,
    left_on DATE,            -- NULL: still watched
    left_reason VARCHAR,
    enter_event BIGINT,
    leave_event BIGINT
);
CREATE TABLE IF NOT EXISTS watch_settings (key VARCHAR PRIMARY KEY, value VARCHAR);
"""


class SupervisionError(Exception):
    """A refused command; the message names the entity, field or file."""


def log(
    con: duckdb.DuckDBPyConnection,
    actor: str,
    action: str,
    subject: str,
    reason: str = "",
    detail: dict | None = None,
    as_of: dt.date | None = None,
) -> int:
    """Append one event (``event_at`` from the computer's clock) and return its id."""
    return con.execute(
        "INSERT INTO supervision_events (event_at, actor, action, subject, reason, detail, as_of) "
        "VALUES (?, ?, ?, ?, ?, ?, ?) RETURNING event_id",
        [
            lifecycle.wall_now(),
            actor,
            action,
            subject,
            reason or "",
            json.dumps(detail or {}, ensure_ascii=False, sort_keys=True, default=str),
            as_of,
        ],
    ).fetchall()[0][0]


def events(con: duckdb.DuckDBPyConnection, subject: str | None = None) -> list[dict]:
    where, args = ("WHERE subject = ?", [subject]) if subject else ("", [])
    rows = con.execute(
        f"SELECT event_id, event_at, actor, action, subject, reason, detail, as_of FROM supervision_events "
        f"{where} ORDER BY event_id",
        args,
    ).fetchall()
    keys = ("event_id", "event_at", "actor", "action", "subject", "reason", "detail", "as_of")
    return [dict(zip(keys, r)) | {"detail": json.loads(r[6] or "{}")} for r in rows]


def transaction(con: duckdb.DuckDBPyConnection):
    """``with transaction(con):`` one command, all or nothing."""

    class _T:
        def __enter__(self):
            con.execute("BEGIN TRANSACTION")

        def __exit__(self, et, ev, tb):
            con.execute("ROLLBACK" if et else "COMMIT")
            return False

    return _T()
