"""The hospital loop: a finding's states, who moved it, and its appeal window.

States (``findings.status``)::

    violation  pending_appeal ──appeal──▶ appealed ──uphold──▶ upheld ──appeal (复议)──▶ appealed
                     │                        └──overturn──▶ overturned
                     └──expire (window closed unanswered)──▶ expired
    suspect    pending_review ──confirm──▶ pending_appeal (now claims money, window opens)
                     └──dismiss──▶ dismissed
    any open one ──supersede (its rule got a new version)──▶ superseded
    in-process findings are ``warning`` and never move.

A second appeal (复议) of an upheld finding is allowed once, within a second window, when the
settings say so (``second_appeal``). Windows are in working days (default 10): the deadline is
the N-th working day after the window opens, weekends and holiday-file dates skipped, make-up
working days (调休上班) counted. The window of a violation opens on the day the screening run
found it, the window of a confirmed suspect on the day it was confirmed, the 复议 window on
the day the appeal was rejected. An appeal filed on the deadline day is in time.

Every move is appended to ``finding_events`` (who, when, from, to, reason, attachment names
with their SHA-256); nothing in the code updates or deletes a row of it. A finding in a final
deduction statement (``finding_state.statement_id``) never moves again.

Time. Deadlines are judged on the day of a clock (a callable returning a ``datetime``); the
default is the computer's clock (:func:`wall_now`) and nothing in the environment moves it. A
simulated day is explicit: a :class:`FixedClock` (``deduct finalize --as-of``, which takes only
today or an earlier day, and the library's ``clock=`` argument). The audit log's ``event_at`` is
always the computer's clock; when a simulated day was used, the event records it in ``as_of``
too. Tests move the computer's clock with ``monkeypatch.setattr(lifecycle, "wall_now", ...)``
(``tests/kit.py: set_wall_clock``).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from dataclasses import dataclass
from decimal import ROUND_DOWN, ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import Callable, Iterable

import duckdb

Clock = Callable[[], dt.datetime]

#: tables of the loop (created with the rest of the schema by :func:`medaudit.db.ensure_schema`)
SCHEMA = """
CREATE SEQUENCE IF NOT EXISTS finding_event_seq;
-- event_id's primary-key index is dropped by medaudit.db.ensure_schema (schema version 6)
CREATE TABLE IF NOT EXISTS finding_events (          -- append-only audit log
    event_id BIGINT PRIMARY KEY DEFAULT nextval('finding_event_seq'),
    finding_id VARCHAR,
    event_at TIMESTAMP,
    actor VARCHAR,
    action VARCHAR,
    from_status VARCHAR,
    to_status VARCHAR,
    reason VARCHAR,
    attachments VARCHAR,                            -- JSON [{name, sha256, bytes}]
    as_of DATE                                      -- the simulated day (--as-of) the move was judged on; NULL: today
);
ALTER TABLE finding_events ADD COLUMN IF NOT EXISTS as_of DATE;
CREATE TABLE IF NOT EXISTS finding_state (
    finding_id VARCHAR PRIMARY KEY,
    window_opened DATE,      -- the current appeal window opened on this day
    deadline DATE,           -- last day of the window (inclusive); NULL when no window is open
    appeal_round INTEGER,    -- appeals filed so far (2 after a 复议)
    confirmed BOOLEAN,       -- a suspect a reviewer confirmed: it claims money like a violation
    statement_id INTEGER     -- the final deduction statement that holds it (NULL: not final)
);
CREATE TABLE IF NOT EXISTS loop_settings (key VARCHAR PRIMARY KEY, value VARCHAR);
CREATE TABLE IF NOT EXISTS holidays (day DATE PRIMARY KEY, workday BOOLEAN, name VARCHAR);
"""

STATUS_CN = {
    "pending_appeal": "待申诉",
    "appealed": "已申诉待复核",
    "upheld": "申诉驳回（维持扣款）",
    "overturned": "申诉成立（撤销扣款）",
    "expired": "逾期未申诉（维持扣款）",
    "pending_review": "疑点待复核",
    "dismissed": "疑点排除",
    "superseded": "已被新版本规则取代",
    "warning": "事中预警",
}


def status_label(status: str | None) -> str:
    """How a table shows a state: the Chinese label with the code beside it, ``逾期未申诉（维持扣款） (expired)``."""
    if not status:
        return ""
    cn = STATUS_CN.get(status)
    return f"{cn} ({status})" if cn else status


def action_label(action: str | None) -> str:
    """``申诉 (appeal)``: an audit-log action in Chinese with its code."""
    if not action:
        return ""
    cn = ACTION_CN.get(action)
    return f"{cn} ({action})" if cn else action


OPEN_STATUSES = ("pending_appeal", "appealed", "pending_review", "warning")
ACTION_CN = {
    "appeal": "申诉",
    "uphold": "驳回申诉",
    "overturn": "撤销扣款",
    "confirm": "确认疑点",
    "dismiss": "排除疑点",
    "expire": "逾期",
    "supersede": "规则更新取代",
    "create": "生成",
    "finalize": "结算扣款",
}

#: (status, action) -> new status. Anything else is refused.
TRANSITIONS = {
    ("pending_appeal", "appeal"): "appealed",
    ("upheld", "appeal"): "appealed",  # 复议: only when enabled, once, within the second window
    ("appealed", "uphold"): "upheld",
    ("appealed", "overturn"): "overturned",
    ("pending_review", "confirm"): "pending_appeal",
    ("pending_review", "dismiss"): "dismissed",
    ("pending_appeal", "expire"): "expired",
}
DEFAULTS = {"window_days": "10", "second_appeal": "false", "second_window_days": "10"}


class LifecycleError(Exception):
    """A refused move; the message names the finding and its state."""


def wall_now() -> dt.datetime:
    """The computer's clock: audit-log timestamps, and "today" unless a simulated day is given.
    The only thing tests replace to move time (there is no environment switch)."""
    return dt.datetime.now().replace(microsecond=0)


def default_clock() -> dt.datetime:
    return wall_now()


class FixedClock:
    """A simulated "now" (``--as-of``, tests, replays): deadlines are judged on its day; the audit
    log keeps the real time in ``event_at`` and this day in ``as_of``."""

    def __init__(self, when: dt.datetime):
        self.when = when

    def __call__(self) -> dt.datetime:
        return self.when

    def __repr__(self) -> str:
        return f"FixedClock({self.when.isoformat(sep=' ')})"


def fixed_clock(when: str | dt.date | dt.datetime) -> FixedClock:
    """A clock that always says ``when``."""
    if isinstance(when, str):
        when = dt.datetime.fromisoformat(when) if len(when) > 10 else dt.date.fromisoformat(when)
    if not isinstance(when, dt.datetime):
        when = dt.datetime.combine(when, dt.time(9))
    return FixedClock(when)


def as_of_of(clock: Clock | None) -> dt.date | None:
    """The simulated day a clock stands for (None: the real clock)."""
    return clock.when.date() if isinstance(clock, FixedClock) else None


def parse_as_of(text: str, option: str = "--as-of") -> FixedClock:
    """``--as-of YYYY-MM-DD``: a day not later than today (a later day would close appeal
    windows before their time)."""
    text = (text or "").strip()
    try:
        if not (len(text) == 10 and text[4] == text[7] == "-"):
            raise ValueError(text)
        day = dt.date.fromisoformat(text)
    except ValueError:
        raise LifecycleError(f"{option} must be a date YYYY-MM-DD, got {text!r}") from None
    today = wall_now().date()
    if day > today:
        raise LifecycleError(
            f"{option} {day} is later than today ({today}); a simulated day may only be today "
            "or earlier (a later one would close appeal windows before their time)"
        )
    return FixedClock(dt.datetime.combine(day, dt.time(23, 59, 59)))


# ---------------------------------------------------------------------------- settings, calendar


def settings(con: duckdb.DuckDBPyConnection) -> dict[str, str]:
    out = dict(DEFAULTS)
    out.update(dict(con.execute("SELECT key, value FROM loop_settings").fetchall()))
    return out


def set_setting(con: duckdb.DuckDBPyConnection, key: str, value) -> None:
    if key not in DEFAULTS:
        raise LifecycleError(f"unknown setting {key!r} (known: {', '.join(DEFAULTS)})")
    con.execute("INSERT OR REPLACE INTO loop_settings VALUES (?, ?)", [key, str(value).lower()])


def read_holiday_file(path: Path) -> list[tuple[dt.date, bool, str]]:
    """One date per line: ``2026-10-01 国庆节``; a line whose name says 上班/补班/workday marks a
    make-up working day (调休) that counts even on a weekend. ``#`` starts a comment."""
    out = []
    for no, raw in enumerate(Path(path).read_text(encoding="utf-8-sig").splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        head, _, name = line.replace(",", " ").replace("\t", " ").partition(" ")
        try:
            day = dt.date.fromisoformat(head.strip())
        except ValueError:
            raise LifecycleError(f"{path}: line {no}: {head!r} is not a date YYYY-MM-DD") from None
        name = name.strip()
        workday = any(w in name for w in ("上班", "补班", "workday"))
        out.append((day, workday, name))
    return out


def load_holidays(con: duckdb.DuckDBPyConnection, path: Path) -> int:
    """Replace the holiday calendar with the file's dates. Returns the number of dates."""
    rows = read_holiday_file(path)
    con.execute("DELETE FROM holidays")
    if rows:
        con.executemany("INSERT OR REPLACE INTO holidays VALUES (?, ?, ?)", [list(r) for r in rows])
    return len(rows)


@dataclass
class Calendar:
    holidays: set[dt.date]
    workdays: set[dt.date]

    @classmethod
    def of(cls, con: duckdb.DuckDBPyConnection) -> "Calendar":
        rows = con.execute("SELECT day, workday FROM holidays").fetchall()
        return cls({d for d, w in rows if not w}, {d for d, w in rows if w})

    def is_working(self, day: dt.date) -> bool:
        if day in self.workdays:
            return True
        return day.weekday() < 5 and day not in self.holidays

    def add_working_days(self, start: dt.date, n: int) -> dt.date:
        """The n-th working day after ``start`` (the start day itself does not count)."""
        day, left = start, n
        while left > 0:
            day += dt.timedelta(days=1)
            if self.is_working(day):
                left -= 1
        return day


def deadline_from(con: duckdb.DuckDBPyConnection, opened: dt.date, key: str = "window_days") -> dt.date:
    return Calendar.of(con).add_working_days(opened, int(settings(con)[key]))


# ---------------------------------------------------------------------------- the log


def file_record(path: Path, name: str | None = None) -> dict:
    """An attachment as the log keeps it: its name, SHA-256 and size."""
    h, n = hashlib.sha256(), 0
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
            n += len(chunk)
    return {"name": name or Path(path).name, "sha256": h.hexdigest(), "bytes": n}


def attachment_records(paths: Iterable[Path]) -> list[dict]:
    """Attachments named on the command line by the bureau's own operator (``--attach``)."""
    out = []
    for p in paths:
        p = Path(p)
        if not p.is_file():
            raise LifecycleError(f"attachment {p} not found")
        out.append(file_record(p))
    return out


def log_event(con, finding_id, clock, actor, action, from_status, to_status, reason="", attachments=None) -> None:
    """Append one event: ``event_at`` from the computer's clock, ``as_of`` the simulated day if any."""
    con.execute(
        "INSERT INTO finding_events (finding_id, event_at, actor, action, from_status, to_status, reason, attachments,"
        " as_of) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [
            finding_id,
            wall_now(),
            actor,
            action,
            from_status,
            to_status,
            reason or "",
            json.dumps(attachments or [], ensure_ascii=False),
            as_of_of(clock),
        ],
    )


def history(con: duckdb.DuckDBPyConnection, finding_id: str) -> list[dict]:
    rows = con.execute(
        "SELECT event_id, event_at, actor, action, from_status, to_status, reason, attachments, as_of FROM finding_events"
        " WHERE finding_id = ? ORDER BY event_id",
        [finding_id],
    ).fetchall()
    keys = ("event_id", "event_at", "actor", "action", "from_status", "to_status", "reason", "attachments", "as_of")
    return [dict(zip(keys, r)) | {"attachments": json.loads(r[7] or "[]")} for r in rows]


# ---------------------------------------------------------------------------- after a screening run


#: the findings the last screening run on this connection superseded (a temporary table, made
#: again by every run): the engine settles their lines' money with the run's new findings
SUPERSEDED = "screen_superseded"


def on_screened(
    con: duckdb.DuckDBPyConnection, stage: str, run_id: int, clock: Clock | None = None, night: bool = False
) -> int:
    """Called by the engine inside the screening transaction, after the run's findings are stored
    (``r_all`` still holds the run's rules).

    1. Findings of the stage whose rule now has another version are ``superseded`` when still
       open and not final; decided and final ones stay as they are.
    2. New findings get their state row and a ``create`` event; new violations' appeal windows
       open today. Returns the number of superseded findings.

    ``night``: an incremental run; only this run's findings are looked at for a missing state
    row, not every finding held (a full run also gives one to any finding of a database made
    before the states were kept)."""
    clock = clock or default_clock
    now = clock()
    today = now.date()
    at, as_of = wall_now(), as_of_of(clock)
    # set-based: a new rule version may supersede many findings at once
    con.execute(
        f"""
        CREATE OR REPLACE TEMP TABLE {SUPERSEDED} AS
        SELECT f.finding_id, f.status FROM findings f
        LEFT JOIN finding_state s USING (finding_id)
        WHERE f.stage = ? AND f.status IN ({", ".join(repr(s) for s in OPEN_STATUSES)})
          AND s.statement_id IS NULL
          AND EXISTS (SELECT 1 FROM r_all r WHERE r.rule_id = f.rule_id)
          AND NOT EXISTS (SELECT 1 FROM r_all r WHERE r.rule_id = f.rule_id AND r.rule_version = f.rule_version)
        """,
        [stage],
    )
    n_sup = con.execute(f"SELECT count(*) FROM {SUPERSEDED}").fetchall()[0][0]
    if n_sup:
        con.execute(
            f"UPDATE findings SET status = 'superseded' WHERE finding_id IN (SELECT finding_id FROM {SUPERSEDED})"
        )
        con.execute(
            f"UPDATE finding_state SET deadline = NULL WHERE finding_id IN (SELECT finding_id FROM {SUPERSEDED})"
        )
        con.execute(
            f"""INSERT INTO finding_events (finding_id, event_at, actor, action, from_status, to_status, reason, attachments, as_of)
               SELECT finding_id, CAST(? AS TIMESTAMP), ?, 'supersede', status, 'superseded',
                      '规则已更新版本，本疑点由新版本规则的结果取代', '[]', CAST(? AS DATE) FROM {SUPERSEDED} ORDER BY finding_id""",
            [at, f"screen run {run_id}", as_of],
        )
    deadline = deadline_from(con, today)
    con.execute(
        f"""
        INSERT INTO finding_state
        SELECT f.finding_id, CASE WHEN f.status = 'pending_appeal' THEN CAST(? AS DATE) END,
               CASE WHEN f.status = 'pending_appeal' THEN CAST(? AS DATE) END, 0, FALSE, NULL
        FROM findings f ANTI JOIN finding_state s USING (finding_id)
        {"WHERE f.first_run = ?" if night else ""}
        """,
        [today, deadline, run_id] if night else [today, deadline],
    )
    # the new findings' create events; their ids are taken from the sequence first, in one
    # narrow statement, so the rows are written on every thread (a nextval() in the insert kept
    # it on one: ten copies of every rule, 337k events, 0.25 s)
    first = _take_event_ids(
        con, con.execute("SELECT count(*) FROM findings WHERE first_run = ?", [run_id]).fetchall()[0][0]
    )
    event_id = "CAST(? AS BIGINT) + row_number() OVER () - 1" if first is not None else "nextval('finding_event_seq')"
    con.execute(
        f"""
        INSERT INTO finding_events (event_id, finding_id, event_at, actor, action, from_status, to_status, reason, attachments, as_of)
        SELECT {event_id}, f.finding_id, CAST(? AS TIMESTAMP), 'screen run ' || f.first_run, 'create', NULL, f.status,
               '规则 ' || f.rule_id || ' 第 ' || f.rule_version || ' 版', '[]', CAST(? AS DATE)
        FROM findings f WHERE f.first_run = ?
        """,
        ([first] if first is not None else []) + [at, as_of, run_id],
    )
    return n_sup


def _take_event_ids(con: duckdb.DuckDBPyConnection, n: int) -> int | None:
    """Take ``n`` event ids from ``finding_event_seq`` at once; the first of them when they are
    consecutive, else None (another connection took ids in between: the ids taken stay unused
    and the caller asks the sequence row by row)."""
    if n <= 0:
        return None
    lo, hi = con.execute(
        "SELECT min(v), max(v) FROM (SELECT nextval('finding_event_seq') AS v FROM range(?))", [n]
    ).fetchall()[0]
    return int(lo) if hi - lo + 1 == n else None


# ---------------------------------------------------------------------------- moves


@dataclass
class FindingRef:
    finding_id: str
    status: str
    institution: str
    rule_id: str
    severity: str
    deadline: dt.date | None
    appeal_round: int
    confirmed: bool
    statement_id: int | None

    def name(self) -> str:
        return f"finding {self.finding_id[:12]} ({self.rule_id}, {self.institution})"

    def state(self) -> str:
        return status_label(self.status)


def resolve(con: duckdb.DuckDBPyConnection, key: str) -> FindingRef:
    """A finding by its id or a unique prefix of at least 6 characters."""
    key = (key or "").strip()
    if len(key) < 6:
        raise LifecycleError(f"finding {key!r}: give the finding id (at least 6 characters)")
    rows = con.execute(
        """SELECT f.finding_id, f.status, f.fixmedins_code, f.rule_id, f.severity, s.deadline,
                  coalesce(s.appeal_round, 0), coalesce(s.confirmed, FALSE), s.statement_id
           FROM findings f LEFT JOIN finding_state s USING (finding_id)
           WHERE starts_with(f.finding_id, ?) LIMIT 2""",
        [key.lower()],
    ).fetchall()
    if not rows:
        raise LifecycleError(f"finding {key}: no such finding")
    if len(rows) > 1:
        raise LifecycleError(f"finding {key}: several findings start with this; give more characters")
    return FindingRef(*rows[0])


def refusal(con: duckdb.DuckDBPyConnection, f: FindingRef, action: str, today: dt.date) -> str | None:
    """Why ``action`` may not happen to ``f`` today (None: it may)."""
    verb = f"{action} ({ACTION_CN.get(action, action)})"
    if f.statement_id is not None:
        return f"{f.name()} is {f.state()} and final in deduction statement {f.statement_id}; it cannot {verb}"
    if action == "appeal" and f.status == "expired":
        return f"{f.name()}: the appeal window closed on {f.deadline or '?'}; it is {f.state()} and cannot be appealed"
    to = TRANSITIONS.get((f.status, action))
    if to is None:
        allowed = sorted(a for (s, a) in TRANSITIONS if s == f.status and a != "expire")
        hint = f" (from {f.status} only: {', '.join(allowed)})" if allowed else " (no move is possible from this state)"
        return f"{f.name()} is {f.state()}; it cannot {verb}{hint}"
    if action == "appeal":
        if f.status == "upheld":
            s = settings(con)
            if s["second_appeal"] != "true":
                return f"{f.name()} is {f.state()}; a second appeal (复议) is not enabled in the settings"
            if f.appeal_round >= 2:
                return f"{f.name()} is {f.state()} after its second appeal (复议); it cannot be appealed again"
        if f.deadline is None or today > f.deadline:
            return (
                f"{f.name()} is {f.state()}; its appeal window closed on {f.deadline} "
                f"(today is {today}); it cannot be appealed"
            )
    return None


def transition(
    con: duckdb.DuckDBPyConnection,
    finding: str | FindingRef,
    action: str,
    by: str,
    reason: str = "",
    attachments: list[dict] | None = None,
    clock: Clock | None = None,
    amount: Decimal | str | None = None,
) -> str:
    """Move one finding; returns its new status or raises :class:`LifecycleError`.

    ``amount`` (confirm only): the reviewer confirms less than the amount at risk; the
    finding's line claims are scaled so they add up to exactly that amount.

    The caller settles the money afterwards (:func:`medaudit.money.settle_deductions`) — one
    settlement per batch of moves keeps an Excel import of thousands of rows fast.
    """
    clock = clock or default_clock
    today = clock().date()
    f = finding if isinstance(finding, FindingRef) else resolve(con, finding)
    if not (by or "").strip():
        raise LifecycleError(f"{f.name()}: say who does this (--by NAME)")
    if action in ("appeal", "uphold", "overturn", "dismiss") and not (reason or "").strip():
        raise LifecycleError(f"{f.name()}: a reason is required to {action}")
    why = refusal(con, f, action, today)
    if why:
        raise LifecycleError(why)
    if amount is not None:
        if action != "confirm":
            raise LifecycleError(f"{f.name()}: an amount is only given to confirm a suspect")
        reason = _confirm_amount(con, f, amount) + (f"；{reason}" if reason else "")
    to = TRANSITIONS[(f.status, action)]
    con.execute("UPDATE findings SET status = ? WHERE finding_id = ?", [to, f.finding_id])
    s = settings(con)
    if action == "appeal":
        con.execute(
            "UPDATE finding_state SET appeal_round = appeal_round + 1, deadline = NULL WHERE finding_id = ?",
            [f.finding_id],
        )
    elif action == "uphold" and s["second_appeal"] == "true" and f.appeal_round < 2:
        con.execute(
            "UPDATE finding_state SET window_opened = ?, deadline = ? WHERE finding_id = ?",
            [today, deadline_from(con, today, "second_window_days"), f.finding_id],
        )
    elif action == "confirm":
        con.execute(
            "UPDATE finding_state SET confirmed = TRUE, window_opened = ?, deadline = ? WHERE finding_id = ?",
            [today, deadline_from(con, today), f.finding_id],
        )
    elif action in ("overturn", "dismiss", "uphold"):
        con.execute("UPDATE finding_state SET deadline = NULL WHERE finding_id = ?", [f.finding_id])
    log_event(con, f.finding_id, clock, by.strip(), action, f.status, to, reason, attachments)
    return to


def _confirm_amount(con: duckdb.DuckDBPyConnection, f: FindingRef, amount) -> str:
    """Scale a suspect's line claims to the confirmed amount; returns the log's note."""
    from .. import money

    try:
        amount = money.parse_amount(amount, f"{f.name()}: the confirmed amount")
    except money.AmountError as e:
        raise LifecycleError(str(e)) from None
    lines = con.execute(
        "SELECT bkkp_sn, claim FROM finding_lines WHERE finding_id = ? AND role = 'violating' AND claim > 0 "
        "ORDER BY claim DESC, bkkp_sn",
        [f.finding_id],
    ).fetchall()
    total = sum((c for _, c in lines), Decimal(0))
    at_risk = total.quantize(Decimal("0.01"), rounding=ROUND_HALF_UP)
    if amount <= 0 or amount > at_risk:
        raise LifecycleError(
            f"{f.name()}: the confirmed amount must be more than 0 and at most the amount at risk "
            f"{at_risk}, got {amount}"
        )
    if amount == at_risk:
        return f"确认扣款 {amount} 元"
    unit = Decimal("0.000000000001")
    new = [(sn, (c * amount / total).quantize(unit, rounding=ROUND_DOWN)) for sn, c in lines]
    # the remainder of the truncation goes to the largest claim, so the claims add up exactly
    new[0] = (new[0][0], amount - sum(c for _, c in new[1:]))
    con.executemany(
        "UPDATE finding_lines SET claim = ? WHERE finding_id = ? AND bkkp_sn = ? AND role = 'violating'",
        [[c, f.finding_id, sn] for sn, c in new],
    )
    con.execute("UPDATE findings SET claimed_amt = ? WHERE finding_id = ?", [amount, f.finding_id])
    return f"确认扣款 {amount} 元（疑点金额 {at_risk} 元）"


def expire_due(con: duckdb.DuckDBPyConnection, clock: Clock | None = None) -> int:
    """Close the windows that passed: pending appeals past their deadline become ``expired``.
    Returns how many. Every command of the loop calls this first."""
    clock = clock or default_clock
    now = clock()
    con.execute(
        """CREATE OR REPLACE TEMP TABLE __due AS
           SELECT f.finding_id, s.deadline FROM findings f JOIN finding_state s USING (finding_id)
           WHERE f.status = 'pending_appeal' AND s.statement_id IS NULL AND s.deadline < ?""",
        [now.date()],
    )
    n = con.execute("SELECT count(*) FROM __due").fetchall()[0][0]
    if n:
        con.execute("UPDATE findings SET status = 'expired' WHERE finding_id IN (SELECT finding_id FROM __due)")
        con.execute(
            """INSERT INTO finding_events (finding_id, event_at, actor, action, from_status, to_status, reason, attachments, as_of)
               SELECT finding_id, CAST(? AS TIMESTAMP), 'system', 'expire', 'pending_appeal', 'expired',
                      '申诉期已于 ' || strftime(deadline, '%Y-%m-%d') || ' 截止，未收到申诉', '[]', CAST(? AS DATE)
               FROM __due ORDER BY finding_id""",
            [wall_now(), as_of_of(clock)],
        )
    con.execute("DROP TABLE __due")
    return n


def is_final_outcome(
    status: str, appeal_round: int, deadline: dt.date | None, second_appeal: bool, today: dt.date
) -> bool:
    """Whether a standing finding's outcome can no longer change (a 复议 window may still be open).
    ``today`` may be an earlier simulated day (``finalize --as-of``): a finding whose window was
    still open on that day is not final on it, even if it has expired since."""
    if status == "expired":
        return deadline is None or today > deadline
    if status == "upheld":
        return not second_appeal or appeal_round >= 2 or deadline is None or today > deadline
    return False


# ---------------------------------------------------------------------------- one move, as every front end makes it


def apply(
    con: duckdb.DuckDBPyConnection,
    findings: str | list[str],
    action: str,
    by: str,
    reason: str = "",
    attachments: list[dict] | None = None,
    clock: Clock | None = None,
    amount: Decimal | str | None = None,
    institution: str | None = None,
) -> list[tuple[FindingRef, str]]:
    """Move one finding or several the same way, in one transaction, as the command line
    (``appeal submit``, ``review decide``) and the web portal both do: close the windows that
    passed, resolve each finding, refuse one that is not ``institution``'s (when given), apply
    :func:`transition`, settle the money, commit. All or nothing: the first refusal raises
    :class:`LifecycleError` and nothing moves. Returns (the finding as it was, its new status)."""
    ids = [findings] if isinstance(findings, str) else list(findings)
    if not ids:
        raise LifecycleError("no finding given")
    if len(set(ids)) != len(ids):
        raise LifecycleError("a finding is given twice")
    from .. import db, money

    out = []
    with db.transaction(con):
        expire_due(con, clock)
        for key in ids:
            f = resolve(con, key)
            if institution is not None and f.institution != institution:
                raise LifecycleError(f"{f.name()} belongs to institution {f.institution}, not {institution}")
            out.append((f, transition(con, f, action, by, reason, attachments, clock=clock, amount=amount)))
        money.settle_deductions(con)
    return out


def working_days_left(con: duckdb.DuckDBPyConnection, today: dt.date, deadline: dt.date | None) -> int | None:
    """Working days from tomorrow up to the deadline, both counted (0: the deadline is today;
    None: no window or it closed). An appeal filed on the deadline day is in time."""
    if deadline is None or today > deadline:
        return None
    cal, n, day = Calendar.of(con), 0, today
    while day < deadline:
        day += dt.timedelta(days=1)
        n += cal.is_working(day)
    return n


#: how :func:`queue` may sort: by the amount at stake (largest first) or by how long the finding
#: has waited in its state (oldest first); the default groups by institution, month and rule
QUEUE_SORTS = {
    "default": "f.fixmedins_code, f.period, f.rule_id, f.finding_id",
    "amount": "amount DESC, f.finding_id",
    "age": "waiting_since ASC NULLS LAST, f.finding_id",
}
DECISION_ACTIONS = ("uphold", "overturn", "confirm", "dismiss")


def queue(
    con: duckdb.DuckDBPyConnection,
    statuses: Iterable[str] | None = ("appealed", "pending_review"),
    *,
    institution: str | None = None,
    period: str | None = None,
    rule: str | None = None,
    dept: str | None = None,
    doctor: str | None = None,
    min_amount: Decimal | None = None,
    max_amount: Decimal | None = None,
    stage: str | None = None,
    sort: str = "default",
    limit: int | None = None,
    watched_only: bool = False,
    watched_first: bool = False,
) -> list[dict]:
    """Findings by state and filters, as the review queue (``review list``) and the web portal's
    lists show them. ``amount`` is what is at stake: the amount at risk of a suspect awaiting
    review, else the finding's deduction. ``waiting_since`` is when it entered its state (its
    last audit-log event). Values are bound, never put into the SQL text."""
    if sort not in QUEUE_SORTS:
        raise LifecycleError(f"sort must be one of {', '.join(QUEUE_SORTS)}, got {sort!r}")
    where: list[str] = ["TRUE"]
    args: list[object] = []
    states = list(statuses) if statuses is not None else []
    if states:
        unknown = [s for s in states if s not in STATUS_CN]
        if unknown:
            raise LifecycleError(f"unknown state {', '.join(unknown)} (known: {', '.join(STATUS_CN)})")
        where.append(f"f.status IN ({', '.join('?' for _ in states)})")
        args += states
    for col, v in (
        ("f.fixmedins_code", institution),
        ("f.period", period),
        ("f.rule_id", rule),
        ("f.dept_code", dept),
        ("f.dr_code", doctor),
        ("f.stage", stage),
    ):
        if v:
            where.append(f"{col} = ?")
            args.append(v)
    amount = "CASE WHEN f.status = 'pending_review' THEN f.claimed_amt ELSE f.deduction_amt END"
    if min_amount is not None:
        where.append(f"{amount} >= ?")
        args.append(min_amount)
    if max_amount is not None:
        where.append(f"{amount} <= ?")
        args.append(max_amount)
    # the watchlist (重点监控): ``watched`` names the watched entities a finding belongs to
    from ..supervision.watch import WATCHED_JOIN

    if watched_only:
        where.append("wf.watched IS NOT NULL")
    order = ("wf.watched IS NULL, " if watched_first else "") + QUEUE_SORTS[sort]
    lim = ""
    if limit is not None:
        lim = " LIMIT ?"
        args.append(int(limit))
    cur = con.execute(
        f"""WITH ev AS (
                SELECT finding_id, max(event_at) AS waiting_since,
                       arg_max(reason, event_id) FILTER (WHERE action = 'appeal') AS appeal_reason,
                       arg_max(action, event_id) FILTER (WHERE action IN ('uphold', 'overturn', 'confirm', 'dismiss'))
                           AS decision,
                       arg_max(reason, event_id) FILTER (WHERE action IN ('uphold', 'overturn', 'confirm', 'dismiss'))
                           AS decision_reason
                FROM finding_events GROUP BY finding_id)
            SELECT f.finding_id, f.rule_id, f.rule_name, f.fixmedins_code, f.period, f.status, f.severity,
                   f.dept_code, f.dr_code, f.mdtrt_id, f.flagged_amt, f.claimed_amt, f.deduction_amt,
                   {amount} AS amount, f.evidence, s.deadline, coalesce(s.appeal_round, 0) AS appeal_round,
                   s.statement_id, ev.waiting_since, ev.appeal_reason, ev.decision, ev.decision_reason,
                   wf.watched
            FROM findings f LEFT JOIN finding_state s USING (finding_id) LEFT JOIN ev USING (finding_id)
            LEFT JOIN {WATCHED_JOIN} USING (finding_id)
            WHERE {" AND ".join(where)} ORDER BY {order}{lim}""",
        args,
    )
    keys = [d[0] for d in cur.description]
    return [dict(zip(keys, r)) for r in cur.fetchall()]


def lines_of(con: duckdb.DuckDBPyConnection, finding_id: str) -> list[dict]:
    """A finding's fee lines (violating first) with what each is: role, bkkp_sn, time, item code and
    name, quantity, price, the line's amount and the finding's claim on it."""
    cur = con.execute(
        """
        WITH fl AS (
            SELECT DISTINCT ON (bkkp_sn) bkkp_sn, mdtrt_id, fee_ocur_time, hilist_code, hilist_name, cnt, pric
            FROM fee_list_d WHERE bkkp_sn IN (SELECT bkkp_sn FROM finding_lines WHERE finding_id = ?)
            ORDER BY bkkp_sn, batch_id DESC)
        SELECT l.role, l.bkkp_sn, fl.fee_ocur_time, fl.hilist_code, fl.hilist_name, fl.cnt, fl.pric, l.line_amt, l.claim,
               l.carried
        FROM finding_lines l LEFT JOIN fl USING (bkkp_sn)
        WHERE l.finding_id = ? ORDER BY l.role DESC, fl.fee_ocur_time, l.bkkp_sn
        """,
        [finding_id, finding_id],
    )
    keys = [d[0] for d in cur.description]
    return [dict(zip(keys, r)) for r in cur.fetchall()]
