"""The fast path's context of a request: the visit's stored lines cached, the request's ``lines`` built.

**Context.** The part of a request's ``lines`` that comes from the database — the visit's fee
lines billed so far with refunds netted (built once by :func:`medaudit.engine.prepare_lines`
itself, over context tables holding that visit and the person's lines), the visit's stored
record, its stored diagnoses, the person's death date, the catalogue caps, and the person's lines of their other
visits (:class:`PersonLines`; the rule types that judge a person across visits, period_limit,
read those of their items, as the SQL path adds them to its ``request_fee_list_d``) — is loaded
on a visit's first request and kept in memory (:class:`ContextCache`). The request's orders
(earlier, ``curr_drord_flag`` 0, and new) are never cached: each request states them, exactly
as on the SQL path, so the answer depends only on the request and the database, never on which
requests came before.

``medaudit serve --preload`` loads every stored visit's context and the catalogue's price rows
at startup in one set-based pass (:meth:`ContextCache.preload`), so no request pays the first
load, and no request queries the database at all: a visit that is not in memory then is not in
the database either (a stay still being written), and its context is empty but for the
person's death date and their other visits' lines.

**Consistency.** DuckDB lets one process write a database file, and ``medaudit serve`` holds
it while it runs: a batch is loaded (or re-loaded) with the service stopped, and a restart
starts with an empty cache. Inside the process, an entry loaded on first use lives ``ttl``
seconds (default 300); preloaded ones live until :meth:`ContextCache.clear`, which drops
everything (call it after writing fee lines through the service's own connection). An order
whose ``rx_id`` names a line already in the database (the order replaces that line, and the
line's refunds net against it) goes to the SQL path, which rebuilds netting with the
replacement.
"""

from __future__ import annotations

import datetime as dt
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

import duckdb

from ... import db as dbm
from ... import engine, semantics
from ..alerts import ORDER_SETL
from ..sql_path import CONTEXT, OWNERS_SQL, STAGE, quoted_catalog

Q4 = Decimal("0.0001")

LINE_FIELDS = (
    "bkkp_sn",
    "mdtrt_id",
    "setl_id",
    "psn_no",
    "fixmedins_code",
    "fee_ocur_time",
    "fee_date",
    "hilist_code",
    "hilist_name",
    "list_type",
    "med_chrgitm_type",
    "chrgitm_lv",
    "cnt",
    "pric",
    "amt",
    "ownpay",
    "deductible",
    "pric_uplmt_amt",
    "bilg_dept_codg",
    "bilg_dr_code",
    "hosp_appr_flag",
    "dscg_tkdrug_flag",
    "prd_days",
    "setl_time",
)


#: the shared definitions (:mod:`medaudit.semantics`): level from hosp_lv, age, own-pay, deductible
inst_level = semantics.inst_level.py
age_years = semantics.age_years.py
age_days = semantics.age_days.py


def _date(x: Any) -> dt.date | None:
    if x is None:
        return None
    if isinstance(x, dt.datetime):
        return x.date()
    if isinstance(x, dt.date):
        return x
    return dt.date.fromisoformat(str(x)[:10])


def _ts(x: Any) -> dt.datetime:
    if isinstance(x, dt.datetime):
        return x.replace(tzinfo=None)
    if isinstance(x, dt.date):
        return dt.datetime(x.year, x.month, x.day)
    return dt.datetime.fromisoformat(str(x))


def _dec(x: Any) -> Decimal | None:
    """A value as the contract's DECIMAL(18,4) holds it."""
    if x is None:
        return None
    if type(x) is not Decimal:  # a Decimal is its own text; a float is read by its shortest text
        x = Decimal(str(x))
    return x.quantize(Q4, rounding=ROUND_HALF_UP)


# ---------------------------------------------------------------------------- context


@dataclass
class VisitContext:
    """What the database says about a visit (none of the request's orders)."""

    visit: dict | None  # the stored mdtrt_d row
    lines: list[dict]  # the stored fee lines, refunds netted (LINE_FIELDS)
    raw_ids: set[str]  # every stored fee row id of the visit (refunds too)
    diags: list[str]  # stored diagnosis codes of the visit
    deaths: dict[str, dt.date]  # earliest known death date per person (its visits and psn_death)
    loaded: float
    #: the person's stored lines of their other visits (for types that judge a person across visits)
    person: PersonLines | None = None
    #: (the visit's attributes, ``lines`` with them joined) of the last request: requests of one
    #: visit state the same attributes, so the stored lines are joined once, not per request.
    #: Rows of ``lines`` are shared by requests: nothing may change them.
    joined: tuple | None = None
    #: the institutions the database holds the visit for (mdtrt_d, setl_d, fee_list_d); empty: not stored
    owners: frozenset = frozenset()


@dataclass
class PersonLines:
    """A person's stored lines (refunds netted, LINE_FIELDS), each with the stored visit it belongs to."""

    rows: list[tuple[dict, dict]]
    _kept: dict = field(default_factory=dict)

    def kept(self, key: str, keep) -> list[dict]:
        """The lines whose code ``keep`` keeps, joined with their own visits (made once per ``key``;
        shared by requests: nothing may change them)."""
        out = self._kept.get(key)
        if out is None:
            out = self._kept[key] = [
                _join({**ln, "_new": False}, *visit_attrs(v)) for ln, v in self.rows if keep(ln["hilist_code"])
            ]
        return out


class ContextCache:
    """Visit contexts loaded from the database on first use, kept ``ttl`` seconds (LRU, ``size`` visits)."""

    def __init__(self, con: duckdb.DuckDBPyConnection, ttl: float = 300.0, size: int = 50_000):
        self.base = con
        self.ttl, self.size = ttl, size
        self._lock = threading.Lock()
        self._cur: duckdb.DuckDBPyConnection | None = None
        self._data: OrderedDict[str, VisitContext] = OrderedDict()
        self.catalog = con.execute("SELECT current_database()").fetchall()[0][0]
        self.loads = self.hits = 0
        self._caps: dict[str, list[tuple]] = {}
        #: after :meth:`preload`: every stored visit and the whole catalogue are in memory, so a
        #: visit not here is not in the database and nothing needs a query (until :meth:`clear`)
        self.complete = False
        self._deaths: dict[str, dt.date] = {}
        self._persons: dict[str, PersonLines] = {}
        #: after :meth:`preload`: the institutions of the stored visits that have no mdtrt_d row
        self._owners: dict[str, frozenset] = {}

    def clear(self) -> None:
        with self._lock:
            self._data.clear()
            self._caps = {}
            self.complete = False
            self._deaths = {}
            self._persons = {}
            self._owners = {}

    def has(self, mdtrt_id: str) -> bool:
        """:meth:`get` of this visit would not touch the database."""
        if self.complete:
            return True
        c = self._data.get(mdtrt_id)
        return c is not None and time.monotonic() - c.loaded < self.ttl

    def _cursor(self) -> duckdb.DuckDBPyConnection:
        if self._cur is None:
            cur = self.base.cursor()
            dbm.install_macros(cur)
            cat = quoted_catalog(self.catalog)
            for t, name in CONTEXT.items():
                cur.execute(f"CREATE OR REPLACE TEMP TABLE {name} AS SELECT * FROM {cat}.main.{t} LIMIT 0")
            self._cur = cur
        return self._cur

    def get(self, mdtrt_id: str, psn_no: str) -> VisitContext:
        now = time.monotonic()
        with self._lock:
            c = self._data.get(mdtrt_id)
            if c is not None and (self.complete or now - c.loaded < self.ttl):
                self._data.move_to_end(mdtrt_id)
                self.hits += 1
                return c
            if self.complete:  # not in the database (a visit still being written): nothing stored yet
                self.hits += 1
                deaths = {psn_no: self._deaths[psn_no]} if psn_no in self._deaths else {}
                return VisitContext(
                    None,
                    [],
                    set(),
                    [],
                    deaths,
                    now,
                    self._persons.get(psn_no),
                    owners=self._owners.get(mdtrt_id, frozenset()),
                )
            c = self._load(mdtrt_id, psn_no, now)
            self._data[mdtrt_id] = c
            self._data.move_to_end(mdtrt_id)
            while len(self._data) > self.size:
                self._data.popitem(last=False)
            self.loads += 1
            return c

    def _load(self, mdtrt_id: str, psn_no: str, now: float) -> VisitContext:
        cur = self._cursor()
        cat = quoted_catalog(self.catalog)
        res = cur.execute(
            f"SELECT * EXCLUDE (batch_id, source_row) FROM {cat}.main.mdtrt_d WHERE mdtrt_id = ?", [mdtrt_id]
        ).fetchall()
        cols = [d[0] for d in cur.description]
        visit = dict(zip(cols, res[0])) if res else None
        persons = sorted({psn_no} | ({visit["psn_no"]} if visit else set()))
        # the visit's stored lines and the person's lines of their other visits, netted in one pass
        # by the batch engine's own prepare_lines over context tables holding just those rows
        c = CONTEXT
        cur.execute(";\n".join(f"DELETE FROM {t}" for t in c.values()))
        cur.execute(
            f"INSERT INTO {c['fee_list_d']} SELECT * FROM {cat}.main.fee_list_d WHERE mdtrt_id = ? OR psn_no = ?",
            [mdtrt_id, psn_no],
        )
        raw = [
            r[0]
            for r in cur.execute(f"SELECT bkkp_sn FROM {c['fee_list_d']} WHERE mdtrt_id = ?", [mdtrt_id]).fetchall()
        ]
        lines: list[dict] = []
        others: list[tuple[dict, dict]] = []
        if cur.execute(f"SELECT count(*) FROM {c['fee_list_d']}").fetchall()[0][0]:
            cur.execute(
                f"INSERT INTO {c['mdtrt_d']} SELECT * FROM {cat}.main.mdtrt_d WHERE mdtrt_id IN "
                f"(SELECT mdtrt_id FROM {c['fee_list_d']})"
            )
            cur.execute(
                f"INSERT INTO {c['setl_d']} SELECT * FROM {cat}.main.setl_d "
                f"WHERE setl_id IN (SELECT setl_id FROM {c['fee_list_d']})"
            )
            if visit is None and raw:  # lines of a visit the database does not know: joined to a stand-in
                cur.execute(
                    f"INSERT INTO {c['mdtrt_d']} (mdtrt_id, psn_no, fixmedins_code, begntime, med_type, insutype, gend) "
                    "VALUES (?, ?, '', now()::TIMESTAMP, '', '', '')",
                    [mdtrt_id, psn_no],
                )
            engine.prepare_lines(cur, STAGE, tables=CONTEXT)
            res = cur.execute(f"SELECT * EXCLUDE (batch_id, source_row) FROM {c['mdtrt_d']}").fetchall()
            vcols = [d[0] for d in cur.description]
            visits = {v["mdtrt_id"]: v for v in (dict(zip(vcols, r)) for r in res)}
            for r in cur.execute(f"SELECT {', '.join(LINE_FIELDS)} FROM lines").fetchall():
                ln = dict(zip(LINE_FIELDS, r))
                if ln["mdtrt_id"] == mdtrt_id:
                    lines.append(ln)
                else:
                    others.append((ln, visits[ln["mdtrt_id"]]))
        diags = [
            r[0]
            for r in cur.execute(
                f"SELECT diag_code FROM {cat}.main.setl_list_diag_d WHERE mdtrt_id = ?", [mdtrt_id]
            ).fetchall()
        ]
        marks = ", ".join("?" for _ in persons)
        deaths = {
            p: d
            for p, d in cur.execute(
                f"""SELECT psn_no, min(die_date) FROM (
                    SELECT psn_no, die_date FROM {cat}.main.psn_death WHERE psn_no IN ({marks})
                    UNION ALL SELECT psn_no, die_date FROM {cat}.main.mdtrt_d
                    WHERE psn_no IN ({marks}) AND die_date IS NOT NULL) GROUP BY psn_no""",
                [*persons, *persons],
            ).fetchall()
            if d is not None
        }
        owners = frozenset(
            r[0] for r in cur.execute(OWNERS_SQL.format(cat=cat), [mdtrt_id] * 3).fetchall() if r[0] is not None
        )
        return VisitContext(
            visit, lines, set(raw), diags, deaths, now, PersonLines(others) if others else None, owners=owners
        )

    def preload(self) -> int:
        """Load every stored visit's context and the catalogue's price rows in one set-based pass
        (the batch engine's prepare_lines over the whole database), so no request pays a first
        load or queries the database at all. Returns visits."""
        cur = self.base.cursor()
        dbm.install_macros(cur)
        cat = quoted_catalog(self.catalog)
        engine.prepare_lines(cur, STAGE)  # the stored tables themselves
        by_visit: dict[str, list[dict]] = {}
        for r in cur.execute(f"SELECT {', '.join(LINE_FIELDS)} FROM lines").fetchall():
            by_visit.setdefault(r[1], []).append(dict(zip(LINE_FIELDS, r)))
        raw: dict[str, set[str]] = {}
        for m, sn in cur.execute(f"SELECT mdtrt_id, bkkp_sn FROM {cat}.main.fee_list_d").fetchall():
            raw.setdefault(m, set()).add(sn)
        diags: dict[str, list[str]] = {}
        for m, c in cur.execute(f"SELECT mdtrt_id, diag_code FROM {cat}.main.setl_list_diag_d").fetchall():
            diags.setdefault(m, []).append(c)
        deaths = {
            p: d
            for p, d in cur.execute(
                f"""SELECT psn_no, min(die_date) FROM (
                    SELECT psn_no, die_date FROM {cat}.main.psn_death
                    UNION ALL SELECT psn_no, die_date FROM {cat}.main.mdtrt_d WHERE die_date IS NOT NULL)
                GROUP BY psn_no"""
            ).fetchall()
            if d is not None
        }
        caps: dict[str, list[tuple]] = {}
        for code, *row in cur.execute(
            f"SELECT hilist_code, begndate, enddate, lv1_pric, lv2_pric, lv3_pric FROM {cat}.main.hilist"
        ).fetchall():
            caps.setdefault(code, []).append(tuple(row))
        owners: dict[str, set] = {}
        for m, inst in cur.execute(
            f"""SELECT mdtrt_id, fixmedins_code FROM {cat}.main.mdtrt_d UNION SELECT mdtrt_id, fixmedins_code
                    FROM {cat}.main.setl_d UNION SELECT mdtrt_id, fixmedins_code FROM {cat}.main.fee_list_d"""
        ).fetchall():
            if inst is not None:
                owners.setdefault(m, set()).add(inst)
        res = cur.execute(f"SELECT * EXCLUDE (batch_id, source_row) FROM {cat}.main.mdtrt_d").fetchall()
        cols = [d[0] for d in cur.description]
        cur.close()
        now = time.monotonic()
        with self._lock:
            self._data.clear()
            self.size = max(self.size, len(res))  # what was preloaded stays
            stored = {row[cols.index("mdtrt_id")]: dict(zip(cols, row)) for row in res}
            people: dict[str, list[tuple[dict, dict]]] = {}
            for m, lines in by_visit.items():
                if m in stored:
                    for ln in lines:
                        people.setdefault(ln["psn_no"], []).append((ln, stored[m]))
            self._persons = {p: PersonLines(rows) for p, rows in people.items()}
            for m, v in stored.items():
                lines = by_visit.get(m, [])
                persons = {v["psn_no"], *(x["psn_no"] for x in lines)}
                self._data[m] = VisitContext(
                    v,
                    lines,
                    raw.get(m, set()),
                    diags.get(m, []),
                    {p: deaths[p] for p in persons if p in deaths},
                    now,
                    self._persons.get(v["psn_no"]),
                    owners=frozenset(owners.get(m, ())),
                )
            self._owners = {m: frozenset(x) for m, x in owners.items() if m not in stored}
            self._caps = caps
            self._caps["\0any"] = [(bool(caps),)]
            self._deaths = deaths
            self.complete = True
        return len(res)

    def has_catalog(self) -> bool:
        with self._lock:
            if "\0any" not in self._caps:
                cat = quoted_catalog(self.catalog)
                self._caps["\0any"] = self._cursor().execute(f"SELECT count(*) > 0 FROM {cat}.main.hilist").fetchall()
            return bool(self._caps["\0any"][0][0])

    def caps(self, code: str) -> list[tuple]:
        """The catalogue's rows of a code: (begndate, enddate, lv1, lv2, lv3)."""
        with self._lock:
            if code not in self._caps:
                if self.complete:  # the whole catalogue is here: the code has no rows
                    return []
                cat = quoted_catalog(self.catalog)
                self._caps[code] = (
                    self._cursor()
                    .execute(
                        f"SELECT begndate, enddate, lv1_pric, lv2_pric, lv3_pric FROM {cat}.main.hilist WHERE hilist_code = ?",
                        [code],
                    )
                    .fetchall()
                )
            return self._caps[code]


# ---------------------------------------------------------------------------- one check


class Lines:
    """What an evaluator reads besides its matched rows: the visit's lines, diagnoses, deaths, caps."""

    def __init__(self, lines: list[dict], diags: list[str], deaths: dict[str, dt.date], cache: ContextCache):
        self.lines, self.diags, self.deaths, self._cache = lines, diags, deaths, cache

    def has_catalog(self) -> bool:
        return self._cache.has_catalog()

    def catalog_rows(self, code: str) -> list[tuple]:
        return self._cache.caps(code)

    def cap(self, m: dict) -> Decimal | None:
        """``hilist_cap``: the catalogue price cap of the line's code for its level on its fee date
        (:func:`medaudit.semantics.catalogue_cap`)."""
        return semantics.catalogue_cap(self._cache.caps(m["hilist_code"]), m["fee_date"], m["inst_level"])


def build_lines(ctx: VisitContext, req, tag: str) -> tuple[list[dict], list[str], dict]:
    """``lines`` of one request as :func:`medaudit.engine.prepare_lines` builds it on the SQL path:
    the stored (netted) lines and the request's orders, with the visit's attributes joined."""
    v = req.visit
    if ctx.visit is not None:
        v = {**ctx.visit, **{k: x for k, x in v.items() if x is not None}}
    attrs, brdy = visit_attrs(v)
    key = tuple(attrs.values())
    joined = ctx.joined
    if joined is None or joined[0] != key:
        joined = ctx.joined = (key, [_join({**x, "_new": False}, attrs, brdy) for x in ctx.lines])
    rows = list(joined[1])
    for o in req.orders:
        amt = _dec(o.get("det_item_fee_sumamt"))
        ownpay0 = _dec(o.get("fulamt_ownpay_amt")) or Decimal("0.0000")  # coalesce(fulamt_ownpay_amt, 0)
        ownpay = semantics.ownpay.py(amt, ownpay0)
        ded = semantics.deductible.py(amt, ownpay0, o.get("chrgitm_lv"), o.get("hosp_appr_flag"))
        cnt = _dec(o["cnt"])
        if cnt is None or not cnt > 0:  # the request requires cnt (> 0): kept out as the SQL's filter would
            continue
        t = _ts(o["fee_ocur_time"])
        rows.append(
            _join(
                {
                    "bkkp_sn": f"{o['bkkp_sn']}{tag}",
                    "mdtrt_id": o.get("mdtrt_id") or v["mdtrt_id"],
                    "setl_id": o.get("setl_id") or ORDER_SETL + v["mdtrt_id"],
                    "psn_no": o.get("psn_no") or v["psn_no"],
                    "fixmedins_code": o.get("fixmedins_code") or v["fixmedins_code"],
                    "fee_ocur_time": t,
                    "fee_date": t.date(),
                    "hilist_code": o["hilist_code"],
                    "hilist_name": o.get("hilist_name"),
                    "list_type": o.get("list_type"),
                    "med_chrgitm_type": o.get("med_chrgitm_type"),
                    "chrgitm_lv": o.get("chrgitm_lv"),
                    "cnt": cnt,
                    "pric": _dec(o["pric"]),
                    "amt": amt,
                    "ownpay": ownpay,
                    "deductible": ded,
                    "pric_uplmt_amt": _dec(o.get("pric_uplmt_amt")),
                    "bilg_dept_codg": o.get("bilg_dept_codg"),
                    "bilg_dr_code": o.get("bilg_dr_code"),
                    "hosp_appr_flag": o.get("hosp_appr_flag"),
                    "dscg_tkdrug_flag": o.get("dscg_tkdrug_flag"),
                    "prd_days": _dec(o.get("prd_days")),
                    "setl_time": None,
                    "_new": bool(o.get("new")),
                },
                attrs,
                brdy,
            )
        )
    diags = [d["diag_code"] for d in req.diagnoses] if req.diagnoses else list(ctx.diags)
    if v.get("dscg_maindiag_code") is not None:
        diags.append(v["dscg_maindiag_code"])
    deaths = dict(ctx.deaths)
    if v.get("die_date") is not None:
        p, d = v["psn_no"], _date(v["die_date"])
        if d is not None:
            deaths[p] = min(deaths.get(p, d), d)
    return rows, diags, deaths


def visit_attrs(v: dict) -> tuple[dict, dt.date | None]:
    """The visit's columns ``lines`` carries on each of its lines (as prepare_lines joins them), and the birth date."""
    brdy = _date(v.get("brdy"))
    med_type = v.get("med_type")
    attrs = {
        "gend": v.get("gend"),
        "brdy": brdy,
        "insutype": v.get("insutype"),
        "hosp_lv": v.get("hosp_lv"),
        "inst_level": inst_level(v.get("hosp_lv")),
        "med_type": med_type,
        "inpatient": str(med_type).startswith("2") if med_type is not None else None,
        "begntime": v.get("begntime"),
        "endtime": v.get("endtime"),
        "visit_dept": v.get("adm_dept_codg"),
        "chfpdr_code": v.get("chfpdr_code"),
    }
    return attrs, brdy


def _join(row: dict, attrs: dict, brdy: dt.date | None) -> dict:
    """A line with its visit's attributes and the patient's age on its fee date."""
    row.update(attrs)
    row["age_years"] = age_years(brdy, row["fee_date"]) if brdy else None
    row["age_days"] = age_days(brdy, row["fee_date"]) if brdy else None
    return row
