"""Credit files (信用档案) of institutions, doctors and persons.

Every confirmed violation — a finding in a final deduction statement (扣款单; confirmed suspects
reach statements the same way) — becomes one entry in the file of its institution, of its
doctor (``findings.dr_code``: the ordering doctor ``bilg_dr_code``, else the attending
``chfpdr_code``, within the institution) and of its person (``psn_no``): the day it was
confirmed (the statement's ``as_of`` day, else the day it was written), the nature, the amount
deducted, the points and the source. Points come from a table per nature
(:data:`DEFAULT_POINTS`, changed with ``medaudit credit points``); an entry keeps the points it
was given.

Entries are append-only: nothing updates or deletes them, and ``UNIQUE (entity, finding_id)``
with the ``NOT EXISTS`` of :func:`record` means a finding counts once per entity, however often
statements are written or ``credit update`` runs. Each entry carries the ``event_id`` of the
``supervision_events`` row that wrote it (who, when, why). ``deduct finalize`` records the
entries of its statements in its own transaction.

Entities are written ``H001`` (institution), ``H001/D01`` (a doctor of an institution) and
``person:P1`` (a person).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from decimal import Decimal

import duckdb

from . import store

DEFAULT_POINTS = {
    "虚构服务": 12,
    "重复收费": 3,
    "不合理诊疗": 3,
    "超支付标准": 2,
    "超支付范围": 2,
    "不合理收费": 2,
    "其他": 1,
}
KINDS = ("institution", "doctor", "person")


@dataclass(frozen=True)
class Entity:
    kind: str
    institution: str | None
    code: str

    @property
    def key(self) -> str:
        return {"institution": self.code, "doctor": f"{self.institution}/{self.code}", "person": f"person:{self.code}"}[
            self.kind
        ]


def parse_entity(text: str) -> Entity:
    """``H001``, ``H001/D01`` or ``person:P1`` (one line error otherwise)."""
    t = (text or "").strip()
    if not t or any(c.isspace() for c in t):
        raise store.SupervisionError(f"entity {text!r}: write H001 (institution), H001/D01 (doctor) or person:P1")
    if t.startswith("person:"):
        code = t[len("person:") :]
        if code:
            return Entity("person", None, code)
    elif t.count("/") == 1:
        inst, dr = t.split("/")
        if inst and dr:
            return Entity("doctor", inst, dr)
    elif "/" not in t and ":" not in t:
        return Entity("institution", t, t)
    raise store.SupervisionError(f"entity {text!r}: write H001 (institution), H001/D01 (doctor) or person:P1")


def points_table(con: duckdb.DuckDBPyConnection) -> dict[str, int]:
    out = dict(DEFAULT_POINTS)
    out.update({n: int(p) for n, p in con.execute("SELECT nature, points FROM credit_points").fetchall()})
    return out


def set_points(con: duckdb.DuckDBPyConnection, nature: str, points: int, by: str, reason: str) -> None:
    """Change the points of a nature for entries written from now on (logged; old entries keep theirs)."""
    nature = (nature or "").strip()
    if not nature:
        raise store.SupervisionError("--set NATURE=POINTS: the nature is empty")
    if isinstance(points, bool) or not isinstance(points, int) or not 0 <= points <= 1000:
        raise store.SupervisionError(f"--set {nature}=…: points must be a whole number 0..1000, got {points!r}")
    if not (reason or "").strip():
        raise store.SupervisionError("--reason is required to change the points table")
    old = points_table(con).get(nature)
    with store.transaction(con):
        store.log(con, by, "credit_points", nature, reason, {"from": old, "to": points})
        con.execute("INSERT OR REPLACE INTO credit_points VALUES (?, ?)", [nature, points])


# the entries of the findings of some statements not in a file yet, one row per entity (constant SQL)
_NEW = """
WITH items AS (
    SELECT i.finding_id, i.amount, i.statement_id, s.period,
           coalesce(s.as_of, CAST(s.created_at AS DATE)) AS entry_date,
           f.fixmedins_code, f.dr_code, f.psn_no, coalesce(f.nature, '其他') AS nature
    FROM deduction_items i JOIN deduction_statements s USING (statement_id) JOIN findings f USING (finding_id)
    WHERE i.statement_id IN (SELECT statement_id FROM __credit_scope)
), ents AS (
    SELECT fixmedins_code AS entity, 'institution' AS entity_kind, * FROM items
    UNION ALL
    SELECT fixmedins_code || '/' || dr_code, 'doctor', * FROM items WHERE nullif(dr_code, '') IS NOT NULL
    UNION ALL
    SELECT 'person:' || psn_no, 'person', * FROM items WHERE nullif(psn_no, '') IS NOT NULL
)
SELECT e.entity, e.entity_kind, e.fixmedins_code, e.entry_date, e.period, e.nature, e.amount,
       coalesce(p.points, 0) AS points, 'statement' AS source, CAST(e.statement_id AS VARCHAR) AS source_id, e.finding_id
FROM ents e LEFT JOIN __credit_points p ON p.nature = e.nature
WHERE NOT EXISTS (SELECT 1 FROM credit_entries c WHERE c.entity = e.entity AND c.finding_id = e.finding_id)
ORDER BY e.entry_date, e.finding_id, e.entity_kind
"""


def record(con: duckdb.DuckDBPyConnection, by: str, statement_ids: list[int] | None = None, reason: str = "") -> int:
    """Append the entries of the statements' findings not in the files yet (every statement when
    ``statement_ids`` is None). Runs inside the caller's transaction; returns the entries written."""
    con.execute("CREATE OR REPLACE TEMP TABLE __credit_scope (statement_id INTEGER)")
    if statement_ids is None:
        con.execute("INSERT INTO __credit_scope SELECT statement_id FROM deduction_statements")
    elif statement_ids:
        con.executemany("INSERT INTO __credit_scope VALUES (?)", [[int(s)] for s in statement_ids])
    con.execute("CREATE OR REPLACE TEMP TABLE __credit_points (nature VARCHAR, points INTEGER)")
    con.executemany("INSERT INTO __credit_points VALUES (?, ?)", [[n, p] for n, p in points_table(con).items()])
    con.execute(f"CREATE OR REPLACE TEMP TABLE __credit_new AS {_NEW}")
    n, n_findings, sids = con.execute(
        "SELECT count(*), count(DISTINCT finding_id), list(DISTINCT CAST(source_id AS INTEGER) ORDER BY CAST(source_id AS INTEGER)) "
        "FROM __credit_new"
    ).fetchall()[0]
    if n:
        shown = ",".join(map(str, sids[:20])) + (f" and {len(sids) - 20} more" if len(sids) > 20 else "")
        ev = store.log(
            con,
            by,
            "credit_record",
            "statements " + shown,
            reason or "扣款单确认的违规记入信用档案",
            {"entries": n, "findings": n_findings, "statements": sids},
        )
        con.execute(
            "INSERT INTO credit_entries (entity, entity_kind, fixmedins_code, entry_date, period, nature, amount, points, "
            "source, source_id, finding_id, event_id) SELECT *, ? FROM __credit_new",
            [ev],
        )
    for t in ("__credit_scope", "__credit_points", "__credit_new"):
        con.execute(f"DROP TABLE {t}")
    return n


def update(con: duckdb.DuckDBPyConnection, by: str, reason: str = "") -> int:
    """``medaudit credit update``: the entries of every statement not recorded yet (statements
    written before credit files existed), in one transaction."""
    with store.transaction(con):
        return record(con, by, None, reason)


@dataclass
class CreditFile:
    entity: Entity
    entries: list[dict]
    total_points: int
    points_window: int  # points of the entries in the last ``window_days`` days before ``on``
    amount: Decimal
    on: dt.date
    window_days: int


def show(con: duckdb.DuckDBPyConnection, entity: Entity, on: dt.date, window_days: int = 365) -> CreditFile:
    rows = con.execute(
        """SELECT c.entry_id, c.entry_date, c.period, c.nature, c.amount, c.points, c.source, c.source_id, c.finding_id,
                  e.actor, e.event_at, e.reason
           FROM credit_entries c LEFT JOIN supervision_events e USING (event_id)
           WHERE c.entity = ? ORDER BY c.entry_date, c.entry_id""",
        [entity.key],
    ).fetchall()
    keys = (
        "entry_id",
        "entry_date",
        "period",
        "nature",
        "amount",
        "points",
        "source",
        "source_id",
        "finding_id",
        "actor",
        "event_at",
        "reason",
    )
    entries = [dict(zip(keys, r)) for r in rows]
    since = on - dt.timedelta(days=window_days)
    return CreditFile(
        entity,
        entries,
        sum(e["points"] for e in entries),
        sum(e["points"] for e in entries if since < e["entry_date"] <= on),
        sum((e["amount"] for e in entries), Decimal(0)),
        on,
        window_days,
    )
