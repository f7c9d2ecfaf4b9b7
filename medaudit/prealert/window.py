"""The preloaded history, windowed: only as far back as the served rules look.

``medaudit serve --preload`` keeps every stored visit's context in memory. A hospital's
database grows by a year of visits a year, the rules look back far less: period_limit's
longest ``period_days``, readmission's ``max_gap_days`` (each type's
:class:`medaudit.types.base.Reach`, combined per type by :func:`medaudit.incremental.reach_of`).
So the preload reads a copy of the database that holds only

- the visits with a line, an admission or a discharge on or after the window's **start**
  (whole visits: a long stay's early lines stay with it), their lines, settlements,
  diagnoses and operations;
- every death (``psn_death`` and the death dates recorded on visits, old ones included) and the
  whole catalogue;

where ``start = anchor - reach - margin``, ``anchor`` the earlier of today and the newest stored
line (a database loaded last month still serves this month), ``reach`` the served rules'
longest look-back in days (``--history-days`` to give it), ``margin`` 7 days.

**Exact all the same.** A check is answered from the window only when the window holds
everything it looks at (:meth:`HistoryWindow.covers`): its visit is not a stored visit left out
of the window, and its new orders and admission are on or after ``start + reach``. Anything
else (an order dated long ago, a visit stored before the window) goes to the SQL path, which
reads the whole database. The stored visits left out are remembered as a sorted array of 64-bit
hashes of their ids (8 bytes a visit; a hash collision only sends a check to the SQL path).

Rules whose findings depend on a month's or everyone's lines (``Reach.scope`` ``month`` or
``all``) leave nothing to window: the whole history is preloaded, as before.
"""

from __future__ import annotations

import bisect
import datetime as dt
import logging
from array import array
from dataclasses import dataclass, field

import duckdb

from .. import db as dbm

log = logging.getLogger(__name__)

MARGIN_DAYS = 7
#: tables copied in full (the person's death date counts for ever; the catalogue has no visit)
WHOLE = ("psn_death", "hilist")


def _mask(s: str) -> int:
    return hash(s) & 0xFFFF_FFFF_FFFF_FFFF


def reach_days(rules: list) -> int | None:
    """The longest look-back of the rules in days (None: a rule looks at a month's or every line)."""
    from ..incremental import reach_of

    days = 0
    for r in reach_of(rules).values():
        if r.scope != "person":
            return None
        days = max(days, r.days + (31 if r.whole_months else 0))
    return days


def _day(x) -> dt.date | None:
    if x is None or x == "":
        return None
    if isinstance(x, dt.datetime):
        return x.date()
    if isinstance(x, dt.date):
        return x
    try:
        return dt.date.fromisoformat(str(x)[:10])
    except ValueError:
        return None


@dataclass
class HistoryWindow:
    start: dt.date  # the first day preloaded
    reach: int  # days the served rules look back
    kept_visits: int = 0
    left_out: int = 0  # stored visits not preloaded
    _old: array = field(default_factory=lambda: array("Q"))

    @property
    def exact_from(self) -> dt.date:
        """Orders (and admissions) on or after this day are answered exactly from the window."""
        return self.start + dt.timedelta(days=self.reach)

    def maybe_old(self, mdtrt_id: str) -> bool:
        """The visit may be a stored visit left out of the window."""
        h = _mask(mdtrt_id)
        i = bisect.bisect_left(self._old, h)
        return i < len(self._old) and self._old[i] == h

    def covers(self, req) -> bool:
        """Everything the check of ``req`` looks at is in the window (see the module's doc)."""
        if self.maybe_old(req.visit["mdtrt_id"]):
            return False
        first = self.exact_from
        begin = _day(req.visit.get("begntime"))
        if begin is not None and begin < first:
            return False
        for o in req.orders:
            if o.get("new"):
                d = _day(o.get("fee_ocur_time"))
                if d is None or d < first:
                    return False
        return True

    def describe(self) -> dict:
        return {
            "start": self.start.isoformat(),
            "reach_days": self.reach,
            "exact_from": self.exact_from.isoformat(),
            "visits_preloaded": self.kept_visits,
            "visits_left_out": self.left_out,
        }


def build(
    con: duckdb.DuckDBPyConnection, rules: list, days: int | None = None, today: dt.date | None = None
) -> tuple[duckdb.DuckDBPyConnection, HistoryWindow] | None:
    """An in-memory database holding the window of ``con``'s history, and the window; None when
    nothing is left out (no stored visit before the window, or rules that look at everything)."""
    reach = reach_days(rules) if days is None else days
    if reach is None:
        return None
    newest = con.execute("SELECT max(fee_ocur_time)::DATE FROM fee_list_d").fetchall()[0][0]
    if newest is None:
        return None
    anchor = min(today or dt.date.today(), newest)
    start = anchor - dt.timedelta(days=reach + MARGIN_DAYS)
    cur = con.cursor()
    try:
        cur.execute(
            """CREATE OR REPLACE TEMP TABLE __win_visits AS
               SELECT DISTINCT mdtrt_id FROM fee_list_d WHERE fee_ocur_time >= ?
               UNION SELECT mdtrt_id FROM mdtrt_d WHERE begntime >= ? OR endtime >= ?""",
            [start, start, start],
        )
        old = cur.execute(
            """SELECT mdtrt_id FROM (SELECT mdtrt_id FROM mdtrt_d UNION SELECT mdtrt_id FROM setl_d
                                     UNION SELECT mdtrt_id FROM fee_list_d)
               WHERE mdtrt_id IS NOT NULL AND mdtrt_id NOT IN (SELECT mdtrt_id FROM __win_visits)"""
        ).fetchall()
        if not old:
            return None
        kept = cur.execute("SELECT count(*) FROM __win_visits").fetchall()[0][0]
        w = duckdb.connect(":memory:")
        w.execute("SET memory_limit = ?", [con.execute("SELECT current_setting('memory_limit')").fetchall()[0][0]])
        dbm.ensure_schema(w)
        dbm.install_macros(w)
        for t in ("mdtrt_d", "setl_d", "fee_list_d", "setl_list_diag_d", "setl_list_oprn_d"):
            _copy(cur, w, t, f"SELECT * FROM {t} WHERE mdtrt_id IN (SELECT mdtrt_id FROM __win_visits)")
        for t in WHOLE:
            _copy(cur, w, t, f"SELECT * FROM {t}")
        # the death dates recorded on visits left out (a person's death counts for ever)
        _copy(
            cur,
            w,
            "psn_death",
            """SELECT NULL::INTEGER AS batch_id, NULL::INTEGER AS source_row, psn_no,
                                             min(die_date)::DATE AS die_date FROM mdtrt_d
                                      WHERE die_date IS NOT NULL AND mdtrt_id NOT IN (SELECT mdtrt_id FROM __win_visits)
                                      GROUP BY psn_no""",
        )
        cur.execute("DROP TABLE __win_visits")
    finally:
        cur.close()
    hashes = array("Q", sorted({_mask(r[0]) for r in old}))
    window = HistoryWindow(start, reach, kept_visits=kept, left_out=len(old), _old=hashes)
    log.info("preloaded history windowed: %s", window.describe())
    return w, window


def _copy(src, dst, table: str, select: str) -> None:
    """Rows of ``select`` on ``src`` into ``table`` of ``dst`` (streamed as Arrow batches)."""
    reader = src.sql(select).to_arrow_reader(50_000)
    dst.register("__copy", reader)
    try:
        dst.execute(f"INSERT INTO {table} BY NAME SELECT * FROM __copy")
    finally:
        dst.unregister("__copy")
