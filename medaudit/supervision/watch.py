"""The watchlist (重点监控).

Entities (``H001``, ``H001/D01``, ``person:P1``) enter it

- automatically, when ``medaudit watch update`` (or ``--as-of DAY``) finds that
  - their credit points of the last ``points_window_days`` days (entries dated after the day
    ``points_window_days`` before, up to the day itself) reach ``points_threshold``, or
  - ``peer_outlier`` findings (post-hoc, not superseded, dismissed or overturned) name them in
    at least ``outlier_months`` of the last ``outlier_window`` settlement months (the day's month
    and those before it) — the finding's doctor when it has one, else its institution;
- by hand, ``watch add ENTITY --reason``.

An automatic entry leaves on the first ``watch update`` day that is ``clean_days`` or more
after both its entry day and its last trigger (its latest credit entry, the last day of its
latest outlier month), and when it no longer meets an entry threshold. A hand entry leaves by
hand only (``watch remove ENTITY --reason``, which also ends an automatic entry). Every entry
and exit is a row of ``watchlist`` (never deleted: left ones keep their ``left_on``) and an
event in ``supervision_events``.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass

import duckdb

from ..hospital_loop import lifecycle
from . import store
from .credit import Entity, parse_entity

DEFAULTS = {
    "points_threshold": 12,
    "points_window_days": 365,
    "outlier_months": 3,
    "outlier_window": 6,
    "clean_days": 180,
}
LIMITS = {
    "points_threshold": (1, 100000),
    "points_window_days": (1, 3660),
    "outlier_months": (1, 120),
    "outlier_window": (1, 120),
    "clean_days": (1, 3660),
}

#: the watched entities of each finding (constant SQL): ``LEFT JOIN {WATCHED_JOIN} USING (finding_id)``
#: gives ``wf.watched`` (``H001, H001/D01``; NULL: none of its institution, doctor, person is watched)
WATCHED_JOIN = """(SELECT f.finding_id, string_agg(w.entity, ', ' ORDER BY w.entity) AS watched
    FROM findings f JOIN watchlist w ON w.left_on IS NULL
     AND w.entity IN (f.fixmedins_code, f.fixmedins_code || '/' || f.dr_code, 'person:' || f.psn_no)
    GROUP BY 1) wf"""


def settings(con: duckdb.DuckDBPyConnection) -> dict[str, int]:
    out = dict(DEFAULTS)
    out.update({k: int(v) for k, v in con.execute("SELECT key, value FROM watch_settings").fetchall() if k in DEFAULTS})
    return out


def set_settings(con: duckdb.DuckDBPyConnection, values: dict[str, int], by: str, reason: str) -> dict[str, int]:
    for k, v in values.items():
        if k not in DEFAULTS:
            raise store.SupervisionError(f"unknown watch setting {k!r} (known: {', '.join(DEFAULTS)})")
        lo, hi = LIMITS[k]
        if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
            raise store.SupervisionError(f"--{k.replace('_', '-')} must be a whole number {lo}..{hi}, got {v!r}")
    if not (reason or "").strip():
        raise store.SupervisionError("--reason is required to change the watch settings")
    new = settings(con) | values
    if new["outlier_months"] > new["outlier_window"]:
        raise store.SupervisionError(
            f"--outlier-months {new['outlier_months']} is more than --outlier-window "
            f"{new['outlier_window']}: no entity could ever enter"
        )
    with store.transaction(con):
        store.log(con, by, "watch_settings", "watch", reason, {"from": settings(con), "to": new})
        for k, v in values.items():
            con.execute("INSERT OR REPLACE INTO watch_settings VALUES (?, ?)", [k, str(v)])
    return new


def _months_back(day: dt.date, n: int) -> tuple[str, str]:
    y, m = day.year, day.month - (n - 1)
    while m <= 0:
        y, m = y - 1, m + 12
    return f"{y:04d}-{m:02d}", f"{day.year:04d}-{day.month:02d}"


_OUTLIERS = """
SELECT CASE WHEN nullif(f.dr_code, '') IS NOT NULL THEN f.fixmedins_code || '/' || f.dr_code ELSE f.fixmedins_code END,
       CASE WHEN nullif(f.dr_code, '') IS NOT NULL THEN 'doctor' ELSE 'institution' END, f.fixmedins_code,
       list(DISTINCT f.period ORDER BY f.period)
FROM findings f
WHERE f.rule_type = 'peer_outlier' AND f.stage = 'post_hoc' AND f.status NOT IN ('superseded', 'dismissed', 'overturned')
  AND f.period BETWEEN ? AND ?
GROUP BY 1, 2, 3
"""


def triggers(con: duckdb.DuckDBPyConnection, on: dt.date, s: dict[str, int]) -> dict[str, tuple[str, str, str]]:
    """entity -> (kind, institution, why) for every entity meeting an entry threshold on ``on``."""
    out: dict[str, tuple[str, str, str]] = {}
    since = on - dt.timedelta(days=s["points_window_days"])
    for ent, kind, inst, pts in con.execute(
        """SELECT entity, any_value(entity_kind), any_value(fixmedins_code), sum(points) FROM credit_entries
               WHERE entry_date > ? AND entry_date <= ? GROUP BY 1 HAVING sum(points) >= ? ORDER BY 1""",
        [since, on, s["points_threshold"]],
    ).fetchall():
        out[ent] = (kind, inst, f"信用积分 {pts} ≥ {s['points_threshold']}（{since + dt.timedelta(days=1)} 至 {on}）")
    first, last = _months_back(on, s["outlier_window"])
    for ent, kind, inst, months in con.execute(_OUTLIERS, [first, last]).fetchall():
        if len(months) >= s["outlier_months"] and ent not in out:
            out[ent] = (
                kind,
                inst,
                f"水位异常（peer_outlier）出现在 {len(months)} 个月（{'、'.join(months)}），"
                f"近 {s['outlier_window']} 个月中 ≥ {s['outlier_months']} 个月",
            )
    return out


_ENTITY = (
    "CASE WHEN nullif(f.dr_code, '') IS NOT NULL THEN f.fixmedins_code || '/' || f.dr_code ELSE f.fixmedins_code END"
)


def last_triggers(con: duckdb.DuckDBPyConnection, on: dt.date) -> dict[str, dt.date]:
    """entity -> the latest day something counted against it, up to ``on``: a credit entry, or the
    last day of a month with an outlier finding naming it."""
    return dict(
        con.execute(
            f"""SELECT e, max(d) FROM (
                SELECT entity AS e, max(entry_date) AS d FROM credit_entries WHERE entry_date <= ? GROUP BY 1
                UNION ALL
                SELECT {_ENTITY}, last_day(CAST(strptime(max(f.period) || '-01', '%Y-%m-%d') AS DATE)) FROM findings f
                WHERE f.rule_type = 'peer_outlier' AND f.stage = 'post_hoc'
                  AND f.status NOT IN ('superseded', 'dismissed', 'overturned') AND f.period <= ? GROUP BY 1)
            GROUP BY 1""",
            [on, _months_back(on, 1)[1]],
        ).fetchall()
    )


@dataclass
class UpdateResult:
    entered: list[tuple[str, str]]  # (entity, why)
    left: list[tuple[str, str]]


def update(con: duckdb.DuckDBPyConnection, on: dt.date, by: str, as_of: dt.date | None = None) -> UpdateResult:
    """Apply the thresholds on day ``on``: entries and exits, one transaction, one event each
    (written set-wise: thousands of entries at once are a first run over a year of history)."""
    s = settings(con)
    res = UpdateResult([], [])
    with store.transaction(con):
        trig = triggers(con, on, s)
        open_rows = {
            r[1]: r
            for r in con.execute(
                "SELECT watch_id, entity, how, entered_on FROM watchlist WHERE left_on IS NULL"
            ).fetchall()
        }
        enter = []
        for ent, (kind, inst, why) in sorted(trig.items()):
            if ent not in open_rows:
                how = "points" if why.startswith("信用积分") else "outlier"
                enter.append(
                    {
                        "entity": ent,
                        "kind": kind,
                        "inst": inst,
                        "how": how,
                        "why": why,
                        "detail": json.dumps({"how": how, "on": str(on)}, ensure_ascii=False, sort_keys=True),
                    }
                )
                res.entered.append((ent, why))
        lasts = last_triggers(con, on)
        leave = []
        for ent, (wid, _, how, entered) in sorted(open_rows.items()):
            if how == "manual" or ent in trig:
                continue
            clean_since = max(d for d in (entered, lasts.get(ent)) if d is not None)
            if (on - clean_since).days >= s["clean_days"]:
                why = f"自 {clean_since} 起 {(on - clean_since).days} 天无新违规或水位异常（≥ {s['clean_days']} 天）"
                leave.append(
                    {
                        "entity": ent,
                        "wid": wid,
                        "why": why,
                        "detail": json.dumps({"how": how, "on": str(on)}, ensure_ascii=False, sort_keys=True),
                    }
                )
                res.left.append((ent, why))
        at = lifecycle.wall_now()
        if enter:
            _frame(con, "__watch_in", enter)
            first = con.execute("SELECT coalesce(max(event_id), 0) FROM supervision_events").fetchall()[0][0]
            con.execute(
                """INSERT INTO supervision_events (event_at, actor, action, subject, reason, detail, as_of)
                           SELECT ?, ?, 'watch_enter', entity, why, detail, ? FROM __watch_in ORDER BY entity""",
                [at, by, as_of],
            )
            con.execute(
                """INSERT INTO watchlist (entity, entity_kind, fixmedins_code, how, entered_on, reason, enter_event)
                           SELECT n.entity, n.kind, n.inst, n.how, ?, n.why, e.event_id FROM __watch_in n
                           JOIN supervision_events e ON e.subject = n.entity AND e.action = 'watch_enter' AND e.event_id > ?
                           ORDER BY n.entity""",
                [on, first],
            )
            con.execute("DROP TABLE __watch_in")
        if leave:
            _frame(con, "__watch_out", leave)
            first = con.execute("SELECT coalesce(max(event_id), 0) FROM supervision_events").fetchall()[0][0]
            con.execute(
                """INSERT INTO supervision_events (event_at, actor, action, subject, reason, detail, as_of)
                           SELECT ?, ?, 'watch_leave', entity, why, detail, ? FROM __watch_out ORDER BY entity""",
                [at, by, as_of],
            )
            con.execute(
                """UPDATE watchlist w SET left_on = ?, left_reason = o.why, leave_event = e.event_id
                           FROM __watch_out o JOIN supervision_events e ON e.subject = o.entity
                                AND e.action = 'watch_leave' AND e.event_id > ?
                           WHERE w.watch_id = o.wid""",
                [on, first],
            )
            con.execute("DROP TABLE __watch_out")
    return res


def _frame(con: duckdb.DuckDBPyConnection, name: str, rows: list[dict]) -> None:
    """A temp table from Python rows in one step (row-by-row inserts take milliseconds each)."""
    import polars as pl

    df = pl.DataFrame(rows)
    con.register("__rows", df)
    try:
        con.execute(f"CREATE OR REPLACE TEMP TABLE {name} AS SELECT * FROM __rows")
    finally:
        con.unregister("__rows")


def _exists(con: duckdb.DuckDBPyConnection, e: Entity) -> bool:
    args: list[str | None]
    if e.kind == "institution":
        sql, args = "SELECT count(*) FROM mdtrt_d WHERE fixmedins_code = ?", [e.code]
    elif e.kind == "doctor":
        sql, args = (
            "SELECT (SELECT count(*) FROM mdtrt_d WHERE fixmedins_code = ? AND chfpdr_code = ?) + "
            "(SELECT count(*) FROM fee_list_d WHERE fixmedins_code = ? AND bilg_dr_code = ?)",
            [e.institution, e.code, e.institution, e.code],
        )
    else:
        sql, args = "SELECT count(*) FROM mdtrt_d WHERE psn_no = ?", [e.code]
    return con.execute(sql, args).fetchall()[0][0] > 0


def add(con: duckdb.DuckDBPyConnection, entity: str, on: dt.date, by: str, reason: str) -> Entity:
    e = parse_entity(entity)
    if not (reason or "").strip():
        raise store.SupervisionError("--reason is required to put an entity under watch by hand")
    if not _exists(con, e):
        raise store.SupervisionError(f"{e.key}: no such {e.kind} in the loaded data")
    with store.transaction(con):
        cur = con.execute(
            "SELECT how, entered_on FROM watchlist WHERE entity = ? AND left_on IS NULL", [e.key]
        ).fetchall()
        if cur:
            raise store.SupervisionError(f"{e.key} is already watched (since {cur[0][1]}, {cur[0][0]})")
        ev = store.log(con, by, "watch_add", e.key, reason, {"on": on})
        con.execute(
            "INSERT INTO watchlist (entity, entity_kind, fixmedins_code, how, entered_on, reason, enter_event) "
            "VALUES (?, ?, ?, 'manual', ?, ?, ?)",
            [e.key, e.kind, e.institution, on, reason.strip(), ev],
        )
    return e


def remove(con: duckdb.DuckDBPyConnection, entity: str, on: dt.date, by: str, reason: str) -> Entity:
    e = parse_entity(entity)
    if not (reason or "").strip():
        raise store.SupervisionError("--reason is required to take an entity off the watchlist")
    with store.transaction(con):
        cur = con.execute("SELECT watch_id FROM watchlist WHERE entity = ? AND left_on IS NULL", [e.key]).fetchall()
        if not cur:
            raise store.SupervisionError(f"{e.key} is not on the watchlist")
        ev = store.log(con, by, "watch_remove", e.key, reason, {"on": on})
        con.execute(
            "UPDATE watchlist SET left_on = ?, left_reason = ?, leave_event = ? WHERE watch_id = ?",
            [on, reason.strip(), ev, cur[0][0]],
        )
    return e


def listing(con: duckdb.DuckDBPyConnection, include_left: bool = False) -> list[dict]:
    where = "" if include_left else "WHERE left_on IS NULL"
    cur = con.execute(f"""SELECT w.entity, w.entity_kind, w.how, w.entered_on, w.reason, w.left_on, w.left_reason,
                                 e.actor FROM watchlist w LEFT JOIN supervision_events e ON e.event_id = w.enter_event
                          {where} ORDER BY w.entered_on, w.entity, w.watch_id""")
    keys = [d[0] for d in cur.description]
    return [dict(zip(keys, r)) for r in cur.fetchall()]


def status(con: duckdb.DuckDBPyConnection, entity_key: str) -> dict | None:
    """The open watch entry of an entity (None: not watched)."""
    rows = con.execute(
        "SELECT how, entered_on, reason FROM watchlist WHERE entity = ? AND left_on IS NULL", [entity_key]
    ).fetchall()
    return dict(zip(("how", "entered_on", "reason"), rows[0])) if rows else None


def _have(con: duckdb.DuckDBPyConnection) -> set[str]:
    """Which of the watchlist and the tip links the file has (one opened read-only from before
    these tables existed has neither)."""
    return {
        r[0]
        for r in con.execute(
            "SELECT table_name FROM duckdb_tables() WHERE schema_name = 'main' AND NOT temporary "
            "AND table_name IN ('watchlist', 'tip_findings')"
        ).fetchall()
    }


def finding_marks(con: duckdb.DuckDBPyConnection, finding_id: str) -> tuple[str | None, list[int]]:
    """The watched entities of a finding and the tips it is linked to (``findings show``)."""
    return marks(con, [finding_id]).get(finding_id, (None, []))


def marks(con: duckdb.DuckDBPyConnection, finding_ids: list[str]) -> dict[str, tuple[str | None, list[int]]]:
    """Per finding: its watched entities (``H001, H001/D01``; None: none is watched now) and the
    tips it is linked to, for the findings that have either (``findings`` and ``findings show``)."""
    have = _have(con)
    out: dict[str, tuple[str | None, list[int]]] = {}
    ids = list(finding_ids)
    if "watchlist" in have and ids:
        for fid, w in con.execute(
            f"SELECT wf.finding_id, wf.watched FROM {WATCHED_JOIN} WHERE list_contains(?::VARCHAR[], wf.finding_id)",
            [ids],
        ).fetchall():
            out[fid] = (w, [])
    if "tip_findings" in have and ids:
        for fid, tips in con.execute(
            "SELECT finding_id, list(tip_id ORDER BY tip_id) FROM tip_findings "
            "WHERE list_contains(?::VARCHAR[], finding_id) GROUP BY 1",
            [ids],
        ).fetchall():
            out[fid] = (out.get(fid, (None, []))[0], list(tips))
    return out


def watched_filter(con: duckdb.DuckDBPyConnection) -> str:
    """A constant condition on ``findings.finding_id``: the finding belongs to an institution,
    doctor or person watched now (``findings --watched``, as ``review list --watched``)."""
    if "watchlist" not in _have(con):
        return "FALSE"
    return f"finding_id IN (SELECT wf.finding_id FROM {WATCHED_JOIN})"
