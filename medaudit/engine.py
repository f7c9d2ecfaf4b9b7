"""Screening: every rule type runs as one set-based query over all its rules.

The run, for one stage:

1. :func:`prepare_lines` builds ``visits``, ``diag``, ``deaths`` and ``lines`` (the screened
   fee lines of the stage, refunds netted) as temporary tables.
2. :func:`register_rules` turns the library into tables: ``r_all`` (one row per rule) and, per
   type, ``p_<type>`` (one row per rule and item, with the type's parameters). Rules with the
   same body (type, parameters, items, validity, scope) are evaluated once: ``rule_fan`` lists
   the others, and step 4 gives each of them the findings of the rule evaluated.
3. Per type, ``m_<type>`` holds the lines matched to the items of its rules (validity period
   and scope applied), and the type's query writes hit rows into ``hits``.
4. :func:`store_findings` groups the hits into findings with stable ids, keeps findings seen in
   earlier runs as they are (their state is the hospital's and the reviewer's), and
   :func:`medaudit.money.settle_deductions` decides which finding carries each line's money.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import re
import shutil
import tempfile
import textwrap
import time
from dataclasses import dataclass, field
from typing import Callable, Mapping, Sequence

import duckdb
import orjson
import polars as pl

from . import db, incremental, money, resources, semantics
from .hospital_loop import lifecycle
from .incremental import Context, Scope
from .library import Item, Library, Rule
from .types import REGISTRY
from .types.base import HIT_COLUMNS, INPUTS, RuleType

#: institution level 0..3 from ``hosp_lv`` (:data:`medaudit.semantics.inst_level`)
LEVEL_SQL = semantics.inst_level.sql("hosp_lv")

#: Columns of ``lines`` (what every rule type may read), with their meaning.
LINE_COLUMNS = {
    "bkkp_sn": "line id",
    "mdtrt_id": "visit",
    "setl_id": "settlement",
    "psn_no": "person",
    "fixmedins_code": "institution",
    "fee_ocur_time": "when the fee occurred",
    "fee_date": "its calendar date",
    "day_repeat": "FALSE: no other line of the visit bills this code that day (TRUE may rarely be a hash collision)",
    "hilist_code": "national list code",
    "hilist_name": "national list name",
    "list_type": "101 drugs, 102 herbal, 201 items, 301 consumables",
    "med_chrgitm_type": "charge category",
    "chrgitm_lv": "01 A, 02 B, 03 C",
    "cnt": "NET quantity (refunds subtracted)",
    "pric": "unit price",
    "amt": "NET line amount",
    "ownpay": "net fully self-paid part",
    "deductible": "amt - ownpay; 0 for class C or switched to self-pay",
    "pric_uplmt_amt": "the price cap that applied",
    "bilg_dept_codg": "ordering department",
    "bilg_dr_code": "ordering doctor",
    "hosp_appr_flag": "1 approved, 2 self-pay",
    "dscg_tkdrug_flag": "1 discharge medication",
    "prd_days": "days of supply",
    "setl_time": "settlement time (NULL while unsettled)",
    "gend": "person's gender",
    "brdy": "birth date",
    "insutype": "insurance type",
    "hosp_lv": "institution level code",
    "inst_level": "0..3",
    "med_type": "visit type",
    "inpatient": "med_type starts with 2",
    "begntime": "visit start",
    "endtime": "visit end",
    "los": "length of stay",
    "age_years": "completed years on the fee date",
    "age_days": "days since birth on the fee date",
    "visit_dept": "admitting department",
    "chfpdr_code": "attending doctor",
}

STAGE_FILTER = {
    # settled claims: the line's settlement exists and was not refunded
    "post_hoc": "s.setl_id IS NOT NULL",
    # stays still open: no end time, or not settled yet
    "in_process": "(v.endtime IS NULL OR s.setl_id IS NULL)",
    # pre-alert builds its own lines from the order and the visit so far
    "pre_alert": "TRUE",
}


def prepare_context(
    con: db.Connection,
    ctx: Context | None = None,
    tables: Mapping[str, str] | None = None,
    part: tuple[int, int] | None = None,
) -> None:
    """``visits``, ``diag`` and ``deaths``: the visit-level facts every stage uses.

    With an incremental context (:mod:`medaudit.incremental`), ``visits`` and ``diag`` hold the
    visits that reach the context's first day less its padding (a readmission's previous stay).
    ``tables``: contract tables read under another name (pre-alert's request context:
    ``{"mdtrt_d": "request_mdtrt_d", ...}``); the others by their own.
    ``part``: ``(i, k)``, the visits of the i-th of k parts of the persons (:func:`person_part`)."""
    t = {n: (tables or {}).get(n, n) for n in ("mdtrt_d", "setl_list_diag_d", "psn_death")}
    where = ""
    if part is not None:
        _check_part_bounds(con, part[1])
        where = f"WHERE {person_part('v.psn_no', *part)}"
    elif ctx is not None and not ctx.everything:
        where = (
            f"WHERE v.mdtrt_id IN (SELECT mdtrt_id FROM spans WHERE is_open OR last_date >= "
            f"{db.date_literal(ctx.lo or dt.date.max)} - {int(ctx.pad_days)})"
        )
    con.execute(
        f"""
        CREATE OR REPLACE TEMP TABLE visits AS
        SELECT v.* EXCLUDE (batch_id, source_row),
               {LEVEL_SQL} AS inst_level,
               starts_with(med_type, '2') AS inpatient,
               -- at least 1 also when recorded: a same-day stay entered as ipt_days 0 used one bed day
               -- (NULL while the stay is open and no ipt_days is recorded: greatest() skips NULLs)
               CASE WHEN ipt_days IS NULL AND endtime IS NULL THEN NULL
                    ELSE greatest(coalesce(ipt_days, date_diff('day', CAST(begntime AS DATE), CAST(endtime AS DATE))), 1)
               END AS los
        FROM {t["mdtrt_d"]} v {where};
        CREATE OR REPLACE TEMP TABLE diag AS
        SELECT mdtrt_id, diag_code, diag_name, maindiag_flag = '1' AS is_main FROM {t["setl_list_diag_d"]}
        {"WHERE mdtrt_id IN (SELECT mdtrt_id FROM visits)" if where else ""}
        UNION
        SELECT mdtrt_id, dscg_maindiag_code, NULL, TRUE FROM {"visits" if where else t["mdtrt_d"]} WHERE dscg_maindiag_code IS NOT NULL;
        CREATE OR REPLACE TEMP TABLE deaths AS
        SELECT psn_no, min(die_date) AS die_date FROM (
            SELECT psn_no, die_date FROM {t["psn_death"]}
            UNION ALL SELECT psn_no, die_date FROM {t["mdtrt_d"]} WHERE die_date IS NOT NULL
        ) GROUP BY psn_no;
        """
    )


def prepare_lines(
    con: db.Connection,
    stage: str = "post_hoc",
    ctx: Context | None = None,
    tables: Mapping[str, str] | None = None,
    part: tuple[int, int] | None = None,
    of_ctx: str | None = None,
    columns: str = "*",
    context: bool = True,
    adj: str | None = None,
) -> int:
    """Build ``lines`` for a stage. Returns the number of screened lines.

    ``ctx``: an incremental run's context (:mod:`medaudit.incremental`): only the fee lines of
    its visits are read, from its first day on (the row groups before it are skipped).
    ``tables``: contract tables read under another name (see :func:`prepare_context`).
    ``part``: ``(i, k)``: the lines of the i-th of k parts of the persons (a big batch screened
    part by part, :func:`screen`).
    ``of_ctx``: with ``ctx``, only the context visits flagged ``in_person`` or ``in_month``;
    ``columns``: the columns kept (a select list of the engine's, ``*`` all); ``context=False``:
    ``visits``, ``diag`` and ``deaths`` are there already (:func:`_screen_night`);
    ``adj``: the refund adjustments made once for several builds (:func:`line_adjustments`)
    instead of computing them from the lines read (the same-day repeats are always the lines
    read's own: a visit's lines are all in one part)."""
    if of_ctx not in (None, "in_person", "in_month"):
        raise ValueError(f"not a context flag: {of_ctx!r}")
    if context:
        prepare_context(con, ctx, tables, part)
    named = dict(tables or {})
    fee_list_d = src = named.get("fee_list_d", "fee_list_d")
    setl_d = named.get("setl_d", "setl_d")
    if part is not None:
        # the part's fee lines by their own person: the loader holds every fee line to a stored
        # visit of the same person, so these are the lines of the part's visits; a filter the
        # scan evaluates itself (a semi join with the visits cost 2 to 3 times as much CPU on 10M lines)
        src = "fee_src"
        _check_part_bounds(con, part[1])
        con.execute(f"""CREATE OR REPLACE TEMP VIEW fee_src AS SELECT * FROM {fee_list_d}
                        WHERE {person_part("psn_no", *part)}""")
        # and the part's settlements only (not every settlement of the batch hashed each part):
        # the loader holds a settlement to its visit's person and a fee line's settlement to the
        # line's visit (loader.check_against_visit), so a line's settlement is in its part
        con.execute(f"""CREATE OR REPLACE TEMP VIEW setl_src AS SELECT * FROM {setl_d}
                        WHERE {person_part("psn_no", *part)}""")
        setl_d = "setl_src"
    elif ctx is not None and not ctx.everything:
        src = "fee_src"
        con.execute(f"""CREATE OR REPLACE TEMP VIEW fee_src AS SELECT * FROM {fee_list_d}
                        WHERE fee_ocur_time >= {db.date_literal(ctx.lo or dt.date.max)}
                          AND mdtrt_id IN (SELECT mdtrt_id FROM ctx_visits {f"WHERE {of_ctx}" if of_ctx else ""})""")
    # Refunds touch few lines (0.3% here): the netting works on the refunds and the lines they
    # refund only, and every line takes its adjustment by one join with that small table; the
    # wide columns are read once, in the final SELECT (no copy of fee_list_d is carried through
    # the netting). The joins run as written: the fee lines probe the small tables.
    _drop_temp(con, "lines")  # a table, or a screen in parts' view of its files
    with db.joins_as_written(con):
        _build_lines(con, src, stage, setl_d, columns, adj)
    return con.execute("SELECT count(*) FROM lines").fetchall()[0][0]


def _drop_temp(con: db.Connection, name: str) -> None:
    """Drop the temporary table or view ``name`` (a constant of the engine), whichever it is
    (DuckDB's CREATE OR REPLACE does not replace one kind with the other). The Spark runner's
    tables are all views, replaced as they are made: nothing to drop there."""
    if not isinstance(con, duckdb.DuckDBPyConnection):
        return
    for (kind,) in con.execute(
        """SELECT 'VIEW' FROM duckdb_views() WHERE temporary AND view_name = $n
           UNION ALL SELECT 'TABLE' FROM duckdb_tables() WHERE temporary AND table_name = $n""",
        {"n": name},
    ).fetchall():
        con.execute(f"DROP {kind} temp.main.{name}")


#: the session variable that holds the person ids cutting a screen in parts (:func:`set_part_bounds`)
PART_BOUNDS = "medaudit_part_bounds"


def set_part_bounds(con: db.Connection, k: int) -> None:
    """Cut the persons of the loaded fee lines into ``k`` ranges of their ids holding about as many
    lines each (k - 1 ids, quantiles of a sample of 100,000 lines), kept in the session variable
    :data:`PART_BOUNDS` for :func:`person_part`. The ids are data: they reach the queries as a
    bound value, never as SQL text. Ranges rather than a hash of the id: a part's filter is then a
    comparison with constants, which the scan checks against each row group's min and max, and
    the loader stores a batch's fee lines by month and person (:data:`medaudit.loader.CLUSTER`),
    so each part reads its own row groups and not every fee line (52.4M lines in 5 parts: a
    part's read of 7 columns 0.6 CPU s against 2.0 by a hash)."""
    con.execute(
        f"""SET VARIABLE {PART_BOUNDS} = (
                SELECT coalesce(quantile_disc(psn_no, ?::DOUBLE[]), []::VARCHAR[]) FROM (
                    SELECT psn_no FROM fee_list_d USING SAMPLE reservoir(100000 ROWS) REPEATABLE (15)))""",
        [[j / k for j in range(1, k)]],
    )


def person_part(psn_no: str, i: int, k: int) -> str:
    """SQL: whether the person ``psn_no`` is in the i-th of k parts (a range of person ids,
    :func:`set_part_bounds`, which must have cut k parts first; a person's visits, lines and
    findings all fall in one part). The bounds are read with ``getvariable``, which DuckDB folds
    into constants when it binds the query, so the scan prunes row groups by them."""
    i, k = int(i), int(k)
    if not 0 <= i < k:
        raise ValueError(f"no part {i} of {k}")
    bound = f"getvariable('{PART_BOUNDS}')"
    lo = f"{psn_no} >= {bound}[{i}]" if i > 0 else ""
    hi = f"{psn_no} < {bound}[{i + 1}]" if i < k - 1 else ""
    return " AND ".join(x for x in (lo, hi) if x) or "TRUE"


def _check_part_bounds(con: db.Connection, k: int) -> None:
    """Cut k parts (:func:`set_part_bounds`) unless the session holds bounds for k parts already
    (any bounds cut every person into exactly one part; fresh ones only balance the parts)."""
    if k == 1:
        return
    held = con.execute(f"SELECT len(getvariable('{PART_BOUNDS}'))").fetchall()[0][0]
    if held != k - 1:
        set_part_bounds(con, k)


#: the refund adjustments of a screen in parts, made once (:func:`line_adjustments`) and read
#: by each part's build of ``lines``
ADJ = "line_adj"


def _day_repeat_sql(src: str) -> str:
    """The hashes of the (visit, code, day)s that ``src`` (fee lines) bills on two lines or more
    (a collision only adds one): ``lines.day_repeat`` FALSE then says no other line of the visit
    bills the code that day, so types that look for such groups (duplicate_line,
    frequency_limit) group the few others only. Counted over the billed lines (a refund can only
    take a line away, so a net twin is a billed twin)."""
    return f"""SELECT hash(mdtrt_id, hilist_code, CAST(fee_ocur_time AS DATE)) AS h FROM {src}
               WHERE cnt > 0 GROUP BY 1 HAVING count(*) > 1"""


def _adjustment_ctes(src: str) -> str:
    """The CTEs ending in ``adj``: per refunded line of ``src`` (a fee-line table or view), the
    units, amount and own-pay its refunds take back (linked and unlinked). Refunds touch few
    lines (0.3% here), so ``adj`` is small; a refund nets only lines of its own visit."""
    return f"""
        neg AS (
            SELECT mdtrt_id, hilist_code, fee_ocur_time, cnt, det_item_fee_sumamt, fulamt_ownpay_amt, init_feedetl_sn
            FROM {src} WHERE cnt < 0),
        linked AS (      -- refunds that name the line they refund
            SELECT init_feedetl_sn AS bkkp_sn, -sum(cnt) AS q, -sum(det_item_fee_sumamt) AS a,
                   -sum(coalesce(fulamt_ownpay_amt, 0)) AS o,
                   -- refunded units whose own-pay part is not stated: it goes back pro rata
                   coalesce(-sum(cnt) FILTER (WHERE fulamt_ownpay_amt IS NULL), 0) AS qu
            FROM neg WHERE init_feedetl_sn IS NOT NULL GROUP BY 1),
        unlinked AS (    -- refunds without it: same visit, code and day, latest lines first
            SELECT mdtrt_id, hilist_code, CAST(fee_ocur_time AS DATE) AS d, -sum(cnt) AS uq
            FROM neg WHERE init_feedetl_sn IS NULL GROUP BY ALL),
        unl AS (         -- the units of each line in such a group that the unlinked refunds take back
            SELECT bkkp_sn, greatest(least(cnt - lq, uq - (cum - (cnt - lq))), 0) AS unq FROM (
                SELECT o.bkkp_sn, o.cnt, coalesce(k.q, 0) AS lq, u.uq, sum(o.cnt - coalesce(k.q, 0)) OVER (
                    PARTITION BY o.mdtrt_id, o.hilist_code, CAST(o.fee_ocur_time AS DATE)
                    ORDER BY o.fee_ocur_time DESC, o.bkkp_sn DESC ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) AS cum
                FROM {src} o JOIN unlinked u
                  ON u.mdtrt_id = o.mdtrt_id AND u.hilist_code = o.hilist_code AND u.d = CAST(o.fee_ocur_time AS DATE)
                LEFT JOIN linked k ON k.bkkp_sn = o.bkkp_sn
                WHERE o.cnt >= 0)),
        adj AS (         -- per refunded line: linked units, amount, own-pay, units without own-pay; unlinked units
            SELECT coalesce(k.bkkp_sn, u.bkkp_sn) AS bkkp_sn, coalesce(k.q, 0) AS lq, coalesce(k.a, 0) AS la,
                   coalesce(k.o, 0) AS lo, coalesce(k.qu, 0) AS lqu, coalesce(u.unq, 0) AS unq
            FROM linked k FULL JOIN unl u ON u.bkkp_sn = k.bkkp_sn)"""


def line_adjustments(con: db.Connection, src: str = "fee_list_d") -> None:
    """``line_adj``: the refund adjustments of every line of ``src``, for several builds of
    ``lines`` over parts of it (:func:`prepare_lines`' ``adj``). A refund nets only lines of its
    own visit (the loader holds a linked refund to its line's visit; unlinked ones match on
    visit, code and day), so the adjustments of the whole are each part's. Built once, a screen
    in k parts reads the fee lines once per part instead of three times (the netting's two
    passes over them, then the lines themselves), and the lines of the month-wide types' hits
    are built again with them (:func:`_keep_hit_facts`)."""
    with db.joins_as_written(con):
        con.execute(f"CREATE OR REPLACE TEMP TABLE {ADJ} AS WITH {_adjustment_ctes(src)} SELECT * FROM adj")


def _build_lines(
    con: db.Connection,
    src: str,
    stage: str,
    setl_d: str = "setl_d",
    columns: str = "*",
    adj: str | None = None,
    repeats: bool = True,
) -> None:
    # some columns only: the query as a subquery, its unused columns pruned by the optimiser
    slim = columns.strip() != "*"
    # the refund adjustments: computed here from ``src``, or read from the table made once
    # (:func:`line_adjustments`); the same-day repeats always from ``src`` (a visit's lines are
    # all in it: one part's persons, whose range the scan reads alone), or none (``repeats``
    # False: a build that keeps only the findings' facts of some lines, day_repeat NULL)
    adjust = _adjustment_ctes(src) if adj is None else f"adj AS (SELECT * FROM {adj})"
    day_rep = _day_repeat_sql(src) if repeats else "SELECT CAST(NULL AS UBIGINT) AS h WHERE FALSE"
    con.execute(
        f"""
        CREATE OR REPLACE TEMP TABLE lines AS
        {f"SELECT {columns} FROM (" if slim else ""}
        WITH {adjust},
        day_rep AS ({day_rep}),   -- see _day_repeat_sql
        net AS (
            SELECT f.bkkp_sn, f.mdtrt_id, f.setl_id, f.fee_ocur_time, f.hilist_code, f.hilist_name, f.list_type,
                   f.med_chrgitm_type, f.chrgitm_lv, f.pric, f.pric_uplmt_amt, f.bilg_dept_codg, f.bilg_dr_code,
                   f.hosp_appr_flag, f.dscg_tkdrug_flag, f.prd_days, f.psn_no, f.fixmedins_code,
                   -- a line without refunds keeps its figures (no 128-bit arithmetic on every line)
                   -- (each branch typed on its own: a CASE takes its widest branch's type, and the
                   -- refund arithmetic's DECIMAL(38,x) would put every line through 128 bits)
                   CASE WHEN j.bkkp_sn IS NULL THEN CAST(f.cnt AS DECIMAL(18,4))
                        ELSE CAST(f.cnt - j.lq - j.unq AS DECIMAL(18,4)) END AS cnt,
                   CASE WHEN j.bkkp_sn IS NULL THEN CAST(f.det_item_fee_sumamt AS DECIMAL(18,4))
                        ELSE CAST(f.det_item_fee_sumamt - j.la - j.unq * f.pric AS DECIMAL(18,4)) END AS amt,
                   -- own-pay: stated refunds subtract what they state; the others (and every
                   -- unlinked refund) take back the line's own-pay in proportion to the units
                   CASE WHEN j.bkkp_sn IS NULL THEN CAST(coalesce(f.fulamt_ownpay_amt, 0) AS DECIMAL(18,4))
                        ELSE CAST(coalesce(f.fulamt_ownpay_amt, 0) - j.lo
                                  - coalesce(xdiv(coalesce(f.fulamt_ownpay_amt, 0) * (j.lqu + j.unq), f.cnt), 0)
                                  AS DECIMAL(18,4)) END AS ownpay0
            FROM {src} f LEFT JOIN adj j ON j.bkkp_sn = f.bkkp_sn
            WHERE f.cnt >= 0)
        SELECT n.* EXCLUDE (ownpay0, fixmedins_code, psn_no),
               n.psn_no, n.fixmedins_code,
               CAST(n.fee_ocur_time AS DATE) AS fee_date,
               {"d.h IS NOT NULL" if repeats else "CAST(NULL AS BOOLEAN)"} AS day_repeat,
               {semantics.ownpay.sql("n.amt", "n.ownpay0")} AS ownpay,
               {semantics.deductible.sql("n.amt", "n.ownpay0", "n.chrgitm_lv", "n.hosp_appr_flag")} AS deductible,
               s.setl_time,
               v.inst_level, v.med_type, v.inpatient, v.begntime, v.endtime,
               {_visit_columns_sql("v", "CAST(n.fee_ocur_time AS DATE)")}
        FROM net n
        JOIN visits v USING (mdtrt_id)
        LEFT JOIN (SELECT setl_id, setl_time FROM {setl_d} WHERE coalesce(refd_setl_flag, '0') <> '1') s
               ON s.setl_id = n.setl_id
        LEFT JOIN day_rep d ON d.h = hash(n.mdtrt_id, n.hilist_code, CAST(n.fee_ocur_time AS DATE))
        WHERE n.cnt > 0
          -- a line of a stay not settled yet has no setl_id (NOT IN would be NULL and drop it)
          AND (n.setl_id IS NULL OR n.setl_id NOT IN (SELECT setl_id FROM {setl_d} WHERE refd_setl_flag = '1'))
          AND {STAGE_FILTER[stage]}
        {")" if slim else ""}
        """
    )


#: the visit's columns of ``lines`` that few rule types read (sex, birth date and the ages,
#: insurance type, hospital level, length of stay, admitting department, attending doctor). A
#: full screen builds ``lines`` without them (about a fifth of its bytes: 3.4 instead of 4.2 GB
#: at 10.48M lines, where the whole table came within a sixth of DuckDB's default limit and a
#: third of the builds after a process's first spilled) and hands the types whose query names one of them, and the findings'
#: hit lines, :data:`LINES_V` instead: the same lines joined to their visits
#: (:func:`_visit_columns_view`), so those types join the visits on their matched lines only.
VISIT_COLUMNS = ("gend", "brdy", "insutype", "hosp_lv", "los", "visit_dept", "chfpdr_code", "age_years", "age_days")
LINES_V = "lines_v"
#: the columns of a slim ``lines`` (:func:`prepare_lines`' ``columns``)
SLIM_COLUMNS = f"* EXCLUDE ({', '.join(VISIT_COLUMNS)})"
#: columns of ``lines`` that no built-in type reads: the line's class and approval (already
#: folded into ``deductible``) and its self-paid part. A full screen builds ``lines`` without
#: those that no type of its rules names (:func:`slim_columns`): 3 of its 30 columns, about a
#: tenth of the time its build spends writing the table
SPARE_COLUMNS = ("chrgitm_lv", "hosp_appr_flag", "ownpay")


def slim_columns(con: db.Connection, types: Sequence[RuleType]) -> str:
    """The select list of a full screen's ``lines`` for ``types``: :data:`SLIM_COLUMNS`, and
    without each of :data:`SPARE_COLUMNS` that none of them names. A type reads a column of its
    lines only by naming it (in its query, its inputs from the lines, or, for an analyst's
    query, the rule's own query: ``RuleType.names_read``); a ``*`` passes on the columns there
    are, and a column missed would fail the type's query at once (a binder error, not a silent
    difference). Decided from the texts alone: no query is planned."""
    named: set[str] = set()
    for rt in types:
        if rt.compose is not None or rt.prepare is not None:
            names = type_names(rt)
            read = rt.names_read(con, names) if rt.names_read is not None else None
            if read is None:  # may read any column
                return SLIM_COLUMNS
            named |= read | _names_in(SPARE_COLUMNS, rt.compose(names, con) if rt.compose is not None else "")
        named |= _names_in(SPARE_COLUMNS, *_texts(rt))
    return f"* EXCLUDE ({', '.join((*VISIT_COLUMNS, *(c for c in SPARE_COLUMNS if c not in named)))})"


def _texts(rt: RuleType) -> tuple[str, ...]:
    """The SQL texts a type wrote itself: its query and its inputs from the lines."""
    return (rt.query or "", *rt.line_inputs.values())


def _names_in(columns: Sequence[str], *texts: str) -> set[str]:
    """Which of ``columns`` the ``texts`` name (as whole words)."""
    return {c for c in columns if any(re.search(rf"\b{c}\b", t) for t in texts)}


def _visit_columns_sql(v: str, fee_date: str) -> str:
    """The select list of :data:`VISIT_COLUMNS` from the visit ``v`` of a line billed on ``fee_date``:
    one definition for ``lines`` built whole and for :data:`LINES_V`."""
    return (
        f"{v}.gend, {v}.brdy, {v}.insutype, {v}.hosp_lv, {v}.los, {v}.adm_dept_codg AS visit_dept, {v}.chfpdr_code, "
        f"age_years({v}.brdy, {fee_date}) AS age_years, {semantics.age_days.sql(f'{v}.brdy', fee_date)} AS age_days"
    )


def _visit_columns_view(con: db.Connection) -> None:
    """:data:`LINES_V`: ``lines`` (built without :data:`VISIT_COLUMNS`) with them again, from
    ``visits`` (every line of ``lines`` has its visit there: the build joins them)."""
    con.execute(
        f"""CREATE OR REPLACE TEMP VIEW {LINES_V} AS
            SELECT l.*, {_visit_columns_sql("v", "l.fee_date")} FROM lines l JOIN visits v USING (mdtrt_id)"""
    )


def reads_visit_columns(con: db.Connection, rt: RuleType) -> bool:
    """Whether the type's query reads a column of :data:`VISIT_COLUMNS` from its lines (``{lines}``
    or its matched lines ``{m}``), so that a full screen hands it :data:`LINES_V`. A query whose
    text names none of them does not; one that does is bound (not run) over the slim ``lines``
    (a type reading ``gend`` from the visits binds there; one reading it from its lines does not).
    A type that composes its statement or prepares tables of its own, such as an analyst's
    query, may read any. Decided once per type (the statement's text is the type's)."""
    if rt.name not in _READS_VISIT:
        if rt.prepare is not None or rt.compose is not None:
            _READS_VISIT[rt.name] = True
        elif not _names_in(VISIT_COLUMNS, *_texts(rt)):
            _READS_VISIT[rt.name] = False
        else:
            try:
                lines, own = line_inputs(con, rt, "lines")
                if rt.items != "none":
                    build_matched(con, rt, lines)
                con.execute(f"DESCRIBE {rt.sql(type_names(rt, lines=lines, **own), con)}")
                _READS_VISIT[rt.name] = False
            except duckdb.BinderException as e:
                if not any(f'"{c}"' in str(e) for c in VISIT_COLUMNS):
                    raise
                _READS_VISIT[rt.name] = True
    return _READS_VISIT[rt.name]


_READS_VISIT: dict[str, bool] = {}


def _slim_lines_for(con: db.Connection, rt: RuleType) -> str:
    """What a type reads as its lines when ``lines`` is slim: :data:`LINES_V` if it reads a visit
    column from them (:func:`reads_visit_columns`), else ``lines``."""
    return LINES_V if reads_visit_columns(con, rt) else "lines"


# ---------------------------------------------------------------------------- rule tables

#: the engine's working tables between a screen's steps, each made by one function and read
#: by the next under these names only: the rules (:func:`register_rules`: ``RULES`` one row a
#: rule, ``FAN`` the rules that share an evaluated rule's body) and the types' hit rows
#: (:func:`create_hits`, :func:`run_type`), grouped by :func:`findings_sql`
RULES, FAN, HITS = "r_all", "rule_fan", "hits"


def _param_dtype(kind: str):
    return {
        "int": pl.Int32,
        "number": pl.Decimal(18, 4),
        "str": pl.Utf8,
        "choice": pl.Utf8,
        "str_list": pl.List(pl.Utf8),
        "bool": pl.Boolean,
    }[kind]


def rule_body(r: Rule) -> bytes:
    """What decides a rule's hits: its type, parameters, items, validity and scope (not its id,
    name, version, severity or basis, which only label the findings), as JSON. Written by orjson
    (the items as they are, dataclasses): ten copies of the national rules' 15,622 items took the
    standard library's JSON 0.15 s a screen, orjson 0.04 s."""
    return orjson.dumps(
        {
            "type": r.type,
            "params": r.params,
            "items": r.items,
            "valid": [str(r.valid_from), str(r.valid_to)],
            "scope": r.scope,
        },
        option=orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS,
        default=str,
    )


def register_rules(con: db.Connection, rules: list[Rule], distinct_bodies: bool = False) -> dict[str, list[Rule]]:
    """Create ``r_all`` and one ``p_<type>`` per type. Returns the rules by type (rule_key = position).

    ``distinct_bodies``: rules with the same body (:func:`rule_body`) are evaluated once: only
    the first of them gets rows in ``p_<type>`` and is among the type's ``{r}``; ``rule_fan``
    says which rule each other one copies, and :func:`store_findings` gives it the same findings.
    """
    reps: dict[bytes, int] = {}
    fan: list[tuple[int, int]] = []  # (rule evaluated, rule that copies its hits)
    for key, r in enumerate(rules):
        rep = reps.setdefault(rule_body(r), key) if distinct_bodies else key
        if rep != key:
            fan.append((rep, key))
    copies = {key for _rep, key in fan}
    con.execute(f"CREATE OR REPLACE TEMP TABLE {FAN} (rep_key INTEGER, rule_key INTEGER)")
    if fan:  # one statement (an executemany ran one a row: 459 copies, 0.07 s)
        con.execute(
            f"INSERT INTO {FAN} SELECT unnest(?::INTEGER[]), unnest(?::INTEGER[])",
            [[rep for rep, _ in fan], [key for _, key in fan]],
        )
    r_rows = []
    for key, r in enumerate(rules):
        r_rows.append(
            {
                "rule_key": key,
                "rule_id": r.id,
                "rule_version": r.version,
                "rule_name": r.name,
                "rule_type": r.type,
                "severity": r.severity,
                "nature": r.nature,
                "basis": r.basis,
                "valid_from": r.valid_from,
                "valid_to": r.valid_to,
                "scope_med_types": r.scope.get("med_types"),
                "scope_levels": r.scope.get("hosp_levels"),
                "scope_institutions": r.scope.get("institutions"),
            }
        )
    r_df = pl.DataFrame(
        r_rows,
        schema={
            "rule_key": pl.Int32,
            "rule_id": pl.Utf8,
            "rule_version": pl.Utf8,
            "rule_name": pl.Utf8,
            "rule_type": pl.Utf8,
            "severity": pl.Utf8,
            "nature": pl.Utf8,
            "basis": pl.Utf8,
            "valid_from": pl.Date,
            "valid_to": pl.Date,
            "scope_med_types": pl.List(pl.Utf8),
            "scope_levels": pl.List(pl.Int32),
            "scope_institutions": pl.List(pl.Utf8),
        },
    )
    con.register("__r", r_df.to_arrow())
    con.execute(f"CREATE OR REPLACE TEMP TABLE {RULES} AS SELECT * FROM __r")
    con.unregister("__r")

    by_type: dict[str, list[tuple[int, Rule]]] = {}
    for key, r in enumerate(rules):
        if key not in copies:
            by_type.setdefault(r.type, []).append((key, r))
    for tname, keyed in by_type.items():
        rt = REGISTRY[tname]
        schema = {
            "rule_key": pl.Int32,
            "code": pl.Utf8,
            "prefix": pl.Utf8,
            "match_all": pl.Boolean,
            "item_name": pl.Utf8,
        }
        for p in rt.params:
            schema[p.name] = _param_dtype(p.kind)
        cols: dict[str, list] = {k: [] for k in schema}
        for key, r in keyed:
            items: list[Item | None] = [*r.items] if r.items else [None]
            for it in items:
                cols["rule_key"].append(key)
                cols["code"].append(it.code if it else None)
                cols["prefix"].append(it.prefix if it else None)
                cols["match_all"].append(it is None)
                cols["item_name"].append(it.name if it else None)
                for p in rt.params:
                    v = it.params.get(p.name) if it else None
                    cols[p.name].append(v if v is not None else r.params.get(p.name))
        df = pl.DataFrame(cols, schema=schema)
        con.register("__p", df.to_arrow())
        con.execute(f"CREATE OR REPLACE TEMP TABLE p_{tname} AS SELECT * FROM __p")
        con.unregister("__p")
    return {t: [r for _k, r in keyed] for t, keyed in by_type.items()}


def matched_sql(
    rt: RuleType, has_code: bool, has_prefix: bool, has_all: bool, lines: str = "lines", may_repeat: bool = True
) -> str:
    """The SELECT behind ``m_<type>`` (also shown by ``medaudit rules show``).

    ``may_repeat`` False says no line can match two items of one rule (see :func:`build_matched`);
    the once-per-rule window, the costliest part of matching, is then left out.
    """
    return semantics.matched_sql(
        f"p_{rt.name}", lines, has_code, has_prefix, has_all, dedupe=rt.dedupe_lines and may_repeat
    )


def items_may_overlap(con: db.Connection, p: str) -> bool:
    """Whether a line can match two items of one rule of the parameter table ``p``, judged from
    the items themselves: match-all beside another item, a code listed twice, a code under one
    of the rule's prefixes, or a prefix under another (or the same) prefix. Prefixes X and Z
    alone cannot both match a code, so such a rule needs no once-per-rule window."""
    return con.execute(
        f"""
        WITH i AS (SELECT rule_key, code, prefix, match_all, row_number() OVER (ORDER BY rule_key) AS n FROM {p}),
        pre AS (SELECT rule_key, prefix, n FROM i WHERE prefix IS NOT NULL),
        lens AS (SELECT DISTINCT length(prefix) AS len FROM pre)
        SELECT EXISTS (SELECT 1 FROM i GROUP BY rule_key HAVING count(*) > 1 AND bool_or(match_all))
            OR EXISTS (SELECT 1 FROM i WHERE code IS NOT NULL GROUP BY rule_key, code HAVING count(*) > 1)
            OR EXISTS (SELECT 1 FROM i c CROSS JOIN lens JOIN pre b
                       ON b.rule_key = c.rule_key AND b.prefix = left(c.code, lens.len) WHERE c.code IS NOT NULL)
            OR EXISTS (SELECT 1 FROM pre a CROSS JOIN lens JOIN pre b
                       ON b.rule_key = a.rule_key AND b.prefix = left(a.prefix, lens.len) AND b.n <> a.n)
        """
    ).fetchall()[0][0]


def build_matched(con: db.Connection, rt: RuleType, lines: str = "lines") -> None:
    """``m_<type>``: lines x items of the type's rules, in force on the fee date and in scope."""
    p = f"p_{rt.name}"
    has_code, has_prefix, has_all = con.execute(
        f"SELECT bool_or(code IS NOT NULL), bool_or(prefix IS NOT NULL), bool_or(match_all) FROM {p}"
    ).fetchall()[0]
    may_repeat = items_may_overlap(con, p)
    # A view, not a table: the type's own filters (a death date, a wrong gender) are pushed into
    # the matching, so a rule over every line (after_death) costs no copy of all lines per rule.
    con.execute(
        f"CREATE OR REPLACE TEMP VIEW m_{rt.name} AS "
        f"{matched_sql(rt, has_code, has_prefix, has_all, lines, may_repeat=may_repeat)}"
    )


def type_names(rt: RuleType, **tables: str) -> dict[str, str]:
    """What a type's query is formatted with: its matched lines ``{m}``, parameter table ``{p}``,
    rules ``{r}`` and the tables it reads (:data:`medaudit.types.base.INPUTS`), each by the name
    the engine gives it (``tables`` overrides: ``lines="lines_person"``)."""
    own = [n for n in rt.line_inputs if n != "lines"]
    unknown = set(tables) - set(INPUTS) - set(own)
    if unknown:
        raise ValueError(f"not a table a rule type reads: {', '.join(sorted(unknown))}")
    return {
        "m": f"m_{rt.name}",
        "p": f"p_{rt.name}",
        "r": f"(SELECT * FROM {RULES} WHERE rule_type = '{rt.name}' AND rule_key NOT IN (SELECT rule_key FROM {FAN}))",
        **{t: tables.get(t, t) for t in INPUTS},
        # the type's own inputs from the lines (RuleType.line_inputs): views of :func:`line_inputs`
        **{n: tables.get(n, line_input_name(rt, n)) for n in own},
    }


def line_input_name(rt: RuleType, name: str) -> str:
    """The table or view that holds the line input ``name`` of the type (``RuleType.line_inputs``);
    also the name of its folder of part files (:func:`_screen_in_parts`), so checked plain."""
    view = f"li_{rt.name}_{name}"
    if not re.fullmatch(r"[a-z0-9_]+", view):
        raise ValueError(f"not a plain name for a line input: {view!r}")
    return view


def line_input_sql(rt: RuleType, name: str, names: Mapping[str, str]) -> str:
    """The query of the type's line input ``name``, formatted with the engine's ``names``."""
    return textwrap.dedent(rt.line_inputs[name]).format(**names)


def line_inputs(
    con: db.Connection, rt: RuleType, lines: str = "lines", made: Mapping[str, str] | None = None, **tables: str
) -> tuple[str, dict[str, str]]:
    """The type's inputs from the lines (``RuleType.line_inputs``) by the names its query reads
    them under: ``made`` (a screen in parts has written them per part), or else each a view over
    ``lines`` made here. Returns the lines the type reads (its ``lines`` input as made by a
    screen in parts; elsewhere ``lines`` itself, the input being a prefilter the findings do not
    depend on: over lines in memory, inventory_mismatch's cost 0.7 CPU s more than it saved at
    10.48M lines) and the names of its other inputs."""
    if not rt.line_inputs:
        return lines, {}
    if made is None:
        names = type_names(rt, lines=lines, **tables)
        made = {}
        for name in rt.line_inputs:
            if name == "lines":
                continue
            view = line_input_name(rt, name)
            con.execute(f"CREATE OR REPLACE TEMP VIEW {view} AS {line_input_sql(rt, name, names)}")
            made[name] = view
    return made.get("lines", lines), {n: t for n, t in made.items() if n != "lines"}


def create_hits(con: db.Connection) -> None:
    cols = ", ".join(f"{k} {v}" for k, v in HIT_COLUMNS.items())
    con.execute(f"CREATE OR REPLACE TEMP TABLE {HITS} ({cols})")


def run_type(
    con: db.Connection, rt: RuleType, lines: str = "lines", made: Mapping[str, str] | None = None, **tables: str
) -> int:
    """Match, then run the type's one query over the screened lines ``lines``; its rows go into
    ``hits``. Returns rows added. ``tables``: inputs read under another name (see
    :func:`type_names`; a part of a big screen hands its own fee lines as ``fee_list_d``).
    ``made``: the type's inputs from the lines, made already (see :func:`line_inputs`).

    Types that take no items (visit- and person-level ones) read ``{visits}``/``{lines}`` and
    ``{r}``/``{p}`` themselves; no ``m_<type>`` is built for them.
    """
    lines, own = line_inputs(con, rt, lines, made, **tables)
    if rt.items != "none":
        build_matched(con, rt, lines)
    names = type_names(rt, lines=lines, **tables, **own)
    if rt.prepare is not None:
        rt.prepare(con, tables=names)
    before = con.execute(f"SELECT count(*) FROM {HITS}").fetchall()[0][0]
    with db.hash_as_written(con) if rt.hash_as_written else contextlib.nullcontext():
        con.execute(f"INSERT INTO {HITS} BY NAME {rt.sql(names, con)}")
    return con.execute(f"SELECT count(*) FROM {HITS}").fetchall()[0][0] - before


# ---------------------------------------------------------------------------- findings

# findings of types that never claim money (profiling) are warnings at every stage: there is
# no deduction for a reviewer to confirm or for the hospital to appeal
INITIAL_STATUS = """CASE WHEN '{stage}' <> 'post_hoc' OR r.rule_type IN ({no_money}) THEN 'warning'
                         WHEN r.severity = 'violation' THEN 'pending_appeal' ELSE 'pending_review' END"""


#: what the findings take from their lines (the line id first): what a big batch screened in
#: parts keeps of each part's lines that hits name (:func:`screen`)
LINE_INFO = (
    "bkkp_sn, fee_ocur_time, amt, psn_no, fixmedins_code, bilg_dept_codg, bilg_dr_code, setl_id, setl_time, "
    "visit_dept, chfpdr_code"
)


def findings_sql(
    stage: str,
    run_id: int,
    lines: str = "lines",
    hits: str = HITS,
    rules: str = RULES,
    fan: str = FAN,
    group_all: bool = False,
) -> str:
    """The script that groups ``hits`` into findings: ``new_findings`` (their ids, and the rule
    and finding key each is of), ``new_finding_rows`` (their rows: claims, evidence; nothing
    carried yet) and ``new_finding_lines``: what :func:`store_findings` runs, and what the Spark
    runner (:mod:`medaudit.spark`) renders for Spark. ``lines``: where the hit lines' facts are
    read (at least the columns of :data:`LINE_INFO`). A finding of one hit line (about half)
    takes its values from that line without the grouping (52.4M lines, 1.68M findings: 25.7 ->
    12.8 CPU s for the findings' rows, the same rows); ``group_all``: every finding through the
    grouping (the tests' reference for that shortcut)."""
    return f"""
        -- a hit line is usually one row of ``hits``; the keys with more (a line a type names
        -- twice in one finding) are grouped, the others taken as they are: the grouping of
        -- every row cost more than the rest of this step (by the key's hash: a collision only
        -- sends a key through the grouping, which gives a single row the same values)
        CREATE OR REPLACE TEMP TABLE hit_twice AS
        SELECT hash(rule_key, finding_key, bkkp_sn) AS k FROM {hits} GROUP BY 1 HAVING count(*) > 1;

        -- the hit lines with what the findings take from their lines, read from ``lines`` once
        -- (the finding lines of every rule sharing a body come from here too)
        CREATE OR REPLACE TEMP TABLE hit_lines_l AS
        WITH hit_lines AS (
            SELECT h.rule_key, h.finding_key, h.bkkp_sn,
                   CASE WHEN h.role = 'violating' THEN 'violating' ELSE 'related' END AS role,
                   CAST(CASE WHEN h.role = 'violating' THEN coalesce(h.claim, 0) ELSE 0 END AS DECIMAL(38,12)) AS claim,
                   h.ev_line, h.ev_head, h.mdtrt_id, h.psn_no, h.fixmedins_code, h.dept_code, h.dr_code, h.period,
                   CASE WHEN h.role = 'violating' THEN h.excess_units END AS excess_units
            FROM {hits} h WHERE hash(h.rule_key, h.finding_key, h.bkkp_sn) NOT IN (SELECT k FROM hit_twice)
            UNION ALL
            SELECT h.rule_key, h.finding_key, h.bkkp_sn,
                   CASE WHEN bool_or(h.role = 'violating') THEN 'violating' ELSE 'related' END AS role,
                   CAST(coalesce(max(h.claim) FILTER (WHERE h.role = 'violating'), 0) AS DECIMAL(38,12)) AS claim,
                   -- ordered: the same evidence text every run (DISTINCT alone leaves the order to the threads)
                   string_agg(DISTINCT h.ev_line, '；' ORDER BY h.ev_line) AS ev_line,
                   any_value(h.ev_head) AS ev_head, any_value(h.mdtrt_id) AS mdtrt_id,
                   any_value(h.psn_no) AS psn_no, any_value(h.fixmedins_code) AS fixmedins_code,
                   any_value(h.dept_code) AS dept_code, any_value(h.dr_code) AS dr_code,
                   any_value(h.period) AS period,
                   max(h.excess_units) FILTER (WHERE h.role = 'violating') AS excess_units
            FROM {hits} h WHERE hash(h.rule_key, h.finding_key, h.bkkp_sn) IN (SELECT k FROM hit_twice)
            GROUP BY h.rule_key, h.finding_key, h.bkkp_sn)
        SELECT h.*, l.fee_ocur_time, l.amt, l.psn_no AS l_psn, l.fixmedins_code AS l_inst,
               l.bilg_dept_codg, l.bilg_dr_code, l.setl_id, l.setl_time, l.visit_dept, l.chfpdr_code,
               (h.role = 'violating') AS v
        FROM hit_lines h LEFT JOIN {lines} l ON l.bkkp_sn = h.bkkp_sn;

        -- the findings of more than one hit line (by the key's hash: a collision only sends a
        -- one-line finding through the grouping, which gives it the same values)
        CREATE OR REPLACE TEMP TABLE finding_multi AS
        SELECT hash(rule_key, finding_key) AS k FROM hit_lines_l GROUP BY 1 HAVING count(*) > {0 if group_all else 1};

        -- findings of the rules evaluated (hits hold theirs only; see register_rules)
        CREATE OR REPLACE TEMP TABLE rep_findings AS
        WITH hl AS (SELECT * FROM hit_lines_l WHERE hash(rule_key, finding_key) IN (SELECT k FROM finding_multi))
        SELECT
            hl.rule_key,
            -- the violating lines' ids in order (a sorted list: an ordered string_agg costs twice as much)
            coalesce(array_to_string(list_sort(list(hl.bkkp_sn) FILTER (WHERE hl.v AND hl.bkkp_sn IS NOT NULL)), ','), '') AS violating_sns,
            '{stage}' AS stage,
            coalesce(any_value(hl.fixmedins_code), arg_min(hl.l_inst, (NOT hl.v, hl.fee_ocur_time, hl.bkkp_sn))) AS fixmedins_code,
            -- a finding about an entity (hits without a visit) takes no department, doctor,
            -- person or settlement from its lines: they are many, and not what it is about
            coalesce(any_value(hl.dept_code), arg_min(coalesce(hl.bilg_dept_codg, hl.visit_dept), (NOT hl.v, hl.fee_ocur_time, hl.bkkp_sn)) FILTER (WHERE hl.mdtrt_id IS NOT NULL)) AS dept_code,
            coalesce(any_value(hl.dr_code), arg_min(coalesce(hl.bilg_dr_code, hl.chfpdr_code), (NOT hl.v, hl.fee_ocur_time, hl.bkkp_sn)) FILTER (WHERE hl.mdtrt_id IS NOT NULL)) AS dr_code,
            coalesce(any_value(hl.psn_no), arg_min(hl.l_psn, (NOT hl.v, hl.fee_ocur_time, hl.bkkp_sn)) FILTER (WHERE hl.mdtrt_id IS NOT NULL)) AS psn_no,
            any_value(hl.mdtrt_id) AS mdtrt_id,
            arg_min(hl.setl_id, (NOT hl.v, hl.fee_ocur_time, hl.bkkp_sn)) FILTER (WHERE hl.mdtrt_id IS NOT NULL) AS setl_id,
            coalesce(any_value(hl.period), strftime(arg_min(hl.setl_time, (NOT hl.v, hl.fee_ocur_time, hl.bkkp_sn)), '%Y-%m'),
                     strftime(min(hl.fee_ocur_time), '%Y-%m')) AS period,
            hl.finding_key,
            CAST(round(coalesce(sum(hl.amt) FILTER (WHERE hl.v), 0), 2) AS DECIMAL(18,2)) AS flagged_amt,
            CAST(round(coalesce(sum(hl.claim), 0), 2) AS DECIMAL(18,2)) AS claimed_amt,
            CAST(0 AS DECIMAL(18,2)) AS deduction_amt,
            -- the lines' evidence in the order they were billed: a sorted list of (time, line, text)
            -- (an ordered string_agg cost a fifth more of this statement); none: NULL (Spark's
            -- list of no rows is empty, not NULL)
            concat_ws('；', nullif(any_value(hl.ev_head), ''),
                      CASE WHEN count(hl.ev_line) > 0 THEN array_to_string(list_transform(
                          list_sort(list(struct_pack(t := hl.fee_ocur_time, s := hl.bkkp_sn, e := hl.ev_line))
                                    FILTER (WHERE hl.ev_line IS NOT NULL)),
                          lambda x: x.e), '；') END) AS evidence,
            {run_id} AS first_run, {run_id} AS last_run, now()::TIMESTAMP AS created_at
        -- grouped by the rule's key alone: its labels (name, basis: long texts) are joined to
        -- the findings after, not hashed and compared as grouping keys on every hit line
        FROM hl
        GROUP BY hl.rule_key, hl.finding_key
        UNION ALL
        -- a finding of one hit line (about half of them): the same values without the grouping
        -- (each aggregate above of a single row; arg_min skips a NULL value as a lone row's is NULL)
        SELECT
            hl.rule_key,
            CASE WHEN hl.v AND hl.bkkp_sn IS NOT NULL THEN hl.bkkp_sn ELSE '' END AS violating_sns,
            '{stage}' AS stage,
            coalesce(hl.fixmedins_code, hl.l_inst) AS fixmedins_code,
            coalesce(hl.dept_code, CASE WHEN hl.mdtrt_id IS NOT NULL THEN coalesce(hl.bilg_dept_codg, hl.visit_dept) END) AS dept_code,
            coalesce(hl.dr_code, CASE WHEN hl.mdtrt_id IS NOT NULL THEN coalesce(hl.bilg_dr_code, hl.chfpdr_code) END) AS dr_code,
            coalesce(hl.psn_no, CASE WHEN hl.mdtrt_id IS NOT NULL THEN hl.l_psn END) AS psn_no,
            hl.mdtrt_id,
            CASE WHEN hl.mdtrt_id IS NOT NULL THEN hl.setl_id END AS setl_id,
            coalesce(hl.period, strftime(hl.setl_time, '%Y-%m'), strftime(hl.fee_ocur_time, '%Y-%m')) AS period,
            hl.finding_key,
            CAST(round(coalesce(CASE WHEN hl.v THEN hl.amt END, 0), 2) AS DECIMAL(18,2)) AS flagged_amt,
            CAST(round(coalesce(hl.claim, 0), 2) AS DECIMAL(18,2)) AS claimed_amt,
            CAST(0 AS DECIMAL(18,2)) AS deduction_amt,
            concat_ws('；', nullif(hl.ev_head, ''), hl.ev_line) AS evidence,
            {run_id} AS first_run, {run_id} AS last_run, now()::TIMESTAMP AS created_at
        FROM hit_lines_l hl WHERE hash(hl.rule_key, hl.finding_key) NOT IN (SELECT k FROM finding_multi);

        -- every rule evaluated, and each rule sharing its body (rule_fan), gets the same findings
        -- under its own id, labels and initial status
        CREATE OR REPLACE TEMP TABLE rule_map AS
        SELECT rule_key AS rep_key, rule_key FROM {rules} WHERE rule_key NOT IN (SELECT rule_key FROM {fan})
        UNION ALL SELECT rep_key, rule_key FROM {fan};

        -- the run's findings by id, narrow: what is new is picked by id (store_findings) before
        -- the rows are written, and each row is written once, from rep_findings
        -- (new_finding_rows), not copied into a table of the fanned-out rows first
        CREATE OR REPLACE TEMP TABLE new_findings AS
        SELECT md5(r.rule_id || '@' || r.rule_version || '|{stage}|' || f.finding_key || '|' || f.violating_sns) AS finding_id,
               m.rule_key AS __rule_key, f.rule_key AS __rep_key, f.finding_key
        FROM rep_findings f JOIN rule_map m ON m.rep_key = f.rule_key JOIN {rules} r ON r.rule_key = m.rule_key;

        -- the rows of new_findings
        CREATE OR REPLACE TEMP VIEW new_finding_rows AS
        SELECT n.finding_id,
               r.rule_id, r.rule_version, r.rule_name, r.rule_type, f.stage, r.severity, r.nature, r.basis,
               f.* EXCLUDE (rule_key, violating_sns, stage, first_run, last_run, created_at),
               {INITIAL_STATUS.format(stage=stage, no_money=", ".join(repr(t.name) for t in REGISTRY.values() if t.mode == "none") or "''")} AS status,
               f.first_run, f.last_run, f.created_at, n.__rule_key
        FROM new_findings n JOIN rep_findings f ON f.rule_key = n.__rep_key AND f.finding_key = n.finding_key
        JOIN {rules} r ON r.rule_key = n.__rule_key;


        -- the findings' lines (a view: read after store_findings has kept the new findings only):
        -- a (rule, finding key) is one finding of the run and a hit line is once per (rule
        -- evaluated, finding key), so the rows are distinct as they are
        CREATE OR REPLACE TEMP VIEW new_finding_lines AS
        SELECT f.finding_id, h.bkkp_sn, h.role, h.amt AS line_amt, h.claim, CAST(0 AS DECIMAL(38,12)) AS carried,
               CAST(h.excess_units AS DECIMAL(18,4)) AS excess_units
        FROM hit_lines_l h JOIN new_findings f ON f.__rep_key = h.rule_key AND f.finding_key = h.finding_key
        WHERE h.bkkp_sn IS NOT NULL;
        """


def store_findings(
    con: duckdb.DuckDBPyConnection, stage: str, run_id: int, lines: str = "lines", night: bool = False
) -> int:
    """Group ``hits`` into findings; insert the new ones, touch the known ones. Returns new findings.
    ``night``: an incremental run (its bookkeeping reads this run's findings, not all held)."""
    con.execute(findings_sql(stage, run_id, lines))
    con.execute(
        f"""
        -- findings already stored keep their rows, state and lines and only take this run as
        -- their last; what is left in new_findings is new
        UPDATE findings SET last_run = {run_id} WHERE finding_id IN (SELECT finding_id FROM new_findings);
        DELETE FROM new_findings WHERE finding_id IN (SELECT finding_id FROM findings);
        """
    )
    n_new = con.execute("SELECT count(*) FROM new_findings").fetchall()[0][0]
    con.execute(
        """
        INSERT INTO finding_lines BY NAME SELECT * FROM new_finding_lines;
        INSERT INTO findings BY NAME SELECT * EXCLUDE (__rule_key) FROM new_finding_rows;
        """
    )
    # hospital loop: a changed rule version supersedes the old open findings (final ones never
    # change); new findings get their state row, appeal window and 'create' audit event.
    lifecycle.on_screened(con, stage, run_id, night=night)
    # tips and complaints: the run's findings on visits a tip names are linked to the tip (a
    # visit named before it was loaded is screened by the run that loads it)
    from .supervision import tips

    tips.link_run(con, run_id)
    return n_new


@dataclass
class ScreenResult:
    run_id: int
    stage: str
    n_lines: int
    n_rules: int
    n_hits: int
    n_new_findings: int
    seconds_by_type: dict[str, float] = field(default_factory=dict)
    seconds_total: float = 0.0
    #: what the run screened and why, one line (``all loaded data (--all)``, ``what the 1 new batch(es) touch (7)``)
    scope: str = ""
    #: visits screened by an incremental run (None: everything)
    n_visits: int | None = None
    #: parts of persons the lines were screened in (1: all at once)
    n_parts: int = 1
    #: an incremental run's context (None: everything), for saying what it read and why
    context: Context | None = None


#: the lines a type of each reach screens in an incremental run whose ``lines`` serve several
#: reaches (see :mod:`medaudit.incremental`): handed to the type as its ``{lines}``
LINES_OF_REACH = {"all": "lines", "person": "lines_person"}  # any other reach: "lines_month"


def screen(
    con: duckdb.DuckDBPyConnection,
    library: Library,
    stage: str = "post_hoc",
    on_type: Callable[[str, int, int], None] | None = None,
    scope: Scope | None = None,
    own_transaction: bool = True,
    part_lines: int | None = None,
) -> ScreenResult:
    """Screen one stage with the library's rules: everything loaded (``scope`` None or ``all``),
    or what new batches touch with the history the rules need (:mod:`medaudit.incremental`);
    the findings are the same either way. A ``visits`` scope (a tip's visits) keeps only the
    findings that involve those visits (their visit, or one of their lines), each with the id a
    full screen gives it.

    ``own_transaction=False``: the caller holds a transaction and the run's writes are part of
    it (``tips add`` stores the tip, the run's findings and the links at once).

    ``part_lines``: a full screen of more fee lines than this runs in parts of persons (see
    :func:`_screen_in_parts`); default from the memory limit (:func:`person_parts`)."""
    t0 = time.perf_counter()
    rules = [r for r in library.rules if stage in r.stages]
    scope = scope or Scope("all")
    incremental.stage_spans(con)  # stored with the findings, in the transaction below
    digest = library.digest()  # hashes every rule's items: once a run
    plan = incremental.plan(con, stage, scope, digest, library.digest_v1)
    ctx = None
    if plan.nothing:
        con.execute("CREATE OR REPLACE TEMP TABLE ctx_visits (mdtrt_id VARCHAR, in_person BOOLEAN, in_month BOOLEAN)")
        ctx = Context(everything=False, has_month=False, n_visits=0, lo=None, pad_days=0)
    elif not plan.full:
        ctx = incremental.build_context(con, stage, scope, plan.batches, rules)
    # rules with the same body (copies under other ids, the same check in two libraries) are
    # evaluated once; each of them gets the findings (store_findings)
    by_type = register_rules(con, rules, distinct_bodies=True)
    create_hits(con)
    names = sorted(by_type) if not plan.nothing else []
    timings: dict[str, float] = {}
    n_parts = person_parts(con, part_lines) if ctx is None and names else 1
    # a night whose context holds whole months: the persons' windows and the months built apart
    # (a tip's visits keep the one ``lines``: their findings are picked by the visits' lines)
    apart = ctx is not None and ctx.has_month and not ctx.everything and scope.mode != "visits"
    if n_parts > 1:
        n_lines = _screen_in_parts(con, rules, names, stage, n_parts, on_type, timings)
    elif apart:
        assert ctx is not None
        n_lines = _screen_night(con, rules, names, stage, ctx, on_type, timings)
    else:
        n_lines = _screen_whole(con, rules, names, stage, ctx, on_type, timings)
    if scope.mode == "visits" and not plan.full and not plan.nothing:
        # the findings that involve the named visits, whole (all their hits); the others of
        # the context (the rest of a person's window, of a month) are left to the nightly runs
        con.execute(
            f"""CREATE OR REPLACE TEMP TABLE __keep AS
               SELECT DISTINCT rule_key, finding_key FROM {HITS}
               WHERE list_contains(?::VARCHAR[], mdtrt_id)
                  OR bkkp_sn IN (SELECT bkkp_sn FROM lines WHERE list_contains(?::VARCHAR[], mdtrt_id))""",
            [list(scope.visits), list(scope.visits)],
        )
        con.execute(f"""DELETE FROM {HITS} h WHERE NOT EXISTS (
                           SELECT 1 FROM __keep k WHERE k.rule_key = h.rule_key AND k.finding_key = h.finding_key);
                       DROP TABLE __keep;""")
    if on_type:
        on_type("", len(names), len(names))
    # hits of the rules evaluated, and the same again for each rule sharing a body (rule_fan)
    n_hits = con.execute(
        f"SELECT count(*) + (SELECT count(*) FROM {HITS} h JOIN {FAN} f ON f.rep_key = h.rule_key) FROM {HITS}"
    ).fetchall()[0][0]
    if own_transaction:
        con.execute("BEGIN TRANSACTION")
    try:
        run_id = con.execute("SELECT coalesce(max(run_id), 0) + 1 FROM screen_runs").fetchall()[0][0]
        n_new = store_findings(
            con,
            stage,
            run_id,
            "hit_line_info" if n_parts > 1 or apart or ctx is None else "lines",
            night=not plan.full,
        )
        if plan.full:  # everything again: every line's money settled again too
            money.settle_deductions(con)
        else:
            # a night's run: only the lines whose findings this run added or superseded move
            # (the run's hit lines hold every new finding's lines), not the months behind them
            con.execute(
                f"""CREATE OR REPLACE TEMP TABLE {money.TOUCHED_LINES} AS
                    SELECT bkkp_sn FROM hit_lines_l WHERE bkkp_sn IS NOT NULL
                    UNION SELECT bkkp_sn FROM finding_lines
                    WHERE finding_id IN (SELECT finding_id FROM {lifecycle.SUPERSEDED})"""
            )
            money.settle_deductions(con, touched=True)
            con.execute(f"DROP TABLE {money.TOUCHED_LINES}")
        con.execute(
            "INSERT INTO screen_runs VALUES (?, ?, now()::TIMESTAMP, now()::TIMESTAMP, ?, ?, ?, ?)",
            [run_id, stage, digest, len(rules), n_hits, n_new],
        )
        incremental.record(con, stage, plan.batches, run_id)
        incremental.commit_spans(con)
        if own_transaction:
            con.execute("COMMIT")
    except Exception:
        if own_transaction:
            con.execute("ROLLBACK")
        raise
    return ScreenResult(
        run_id,
        stage,
        n_lines,
        len(rules),
        n_hits,
        n_new,
        timings,
        time.perf_counter() - t0,
        scope=plan.why,
        n_visits=None if ctx is None else ctx.n_visits,
        n_parts=n_parts,
        context=ctx,
    )


def _screen_whole(
    con: duckdb.DuckDBPyConnection,
    rules: list[Rule],
    names: list[str],
    stage: str,
    ctx: Context | None,
    on_type: Callable[[str, int, int], None] | None,
    timings: dict[str, float],
) -> int:
    """Build ``lines`` once and run every type over it (an incremental run: each type over the
    lines of its reach). Returns the lines screened."""
    # a full screen's lines without the visit columns few types read (see VISIT_COLUMNS)
    slim = ctx is None
    columns = slim_columns(con, [REGISTRY[t] for t in names]) if slim else "*"
    n_lines = prepare_lines(con, stage, ctx, columns=columns)
    if slim:
        _visit_columns_view(con)
    reaches = incremental.reach_of(rules) if ctx is not None else {}
    views = ctx is not None and (ctx.everything or ctx.has_month)
    if views:
        # the person windows' lines kept apart once (they are few); the month's a view
        con.execute("""CREATE OR REPLACE TEMP TABLE lines_person AS SELECT * FROM lines
                       WHERE mdtrt_id IN (SELECT mdtrt_id FROM ctx_visits WHERE in_person);
                       CREATE OR REPLACE TEMP VIEW lines_month AS SELECT * FROM lines
                       WHERE mdtrt_id IN (SELECT mdtrt_id FROM ctx_visits WHERE in_month)""")
    for i, tname in enumerate(names):
        if on_type:
            on_type(tname, i, len(names))
        t = time.perf_counter()
        src = LINES_OF_REACH.get(reaches[tname].scope, "lines_month") if views else "lines"
        run_type(con, REGISTRY[tname], lines=_slim_lines_for(con, REGISTRY[tname]) if slim else src)
        if ctx is not None and reaches[tname].scope == "month":
            _keep_whole_months(con, tname)
        timings[tname] = time.perf_counter() - t
    if views:
        con.execute("DROP VIEW lines_month; DROP TABLE lines_person")
    if slim:
        _keep_line_info(con, first=True, slim=True)
    return n_lines


def _keep_whole_months(con: duckdb.DuckDBPyConnection, tname: str) -> None:
    """An incremental run keeps the month-scoped findings of the month-wide type ``tname`` (a
    registry name) for the months it read whole (``ctx_months``) only: the others' months are
    not whole in its context."""
    con.execute(f"""DELETE FROM {HITS} WHERE rule_key IN (SELECT rule_key FROM {RULES} WHERE rule_type = '{tname}')
                    AND coalesce(peer_month, period, '') NOT IN (SELECT month FROM ctx_months)""")


def _screen_night(
    con: duckdb.DuckDBPyConnection,
    rules: list[Rule],
    names: list[str],
    stage: str,
    ctx: Context,
    on_type: Callable[[str, int, int], None] | None,
    timings: dict[str, float],
) -> int:
    """A nightly run whose context holds whole months (:mod:`medaudit.incremental`): the types of
    person reach run over the lines of the persons' windows, built with every column; then the
    month-wide types over the lines of the months, built with only the columns those types read
    (and the facts findings take from hit lines, kept in ``hit_line_info`` as a screen in parts
    keeps them). At a city's scale the months are most of a night (10M of 12M lines) and every
    column of them outgrew the memory limit, so each type's scan read spilled blocks back. A
    refund nets only lines of its own visit (the loader holds linked refunds to their line's
    visit), so building the two sets apart nets every line as one build does. Returns the lines
    screened (a line of both sets once)."""
    reaches = incremental.reach_of(rules)
    local = [t for t in names if reaches[t].scope == "person"]
    wide = [t for t in names if t not in local]
    steps, done = len(names) + 2, iter(range(len(names) + 2))

    def run(tname: str) -> None:
        if on_type:
            on_type(tname, next(done), steps)
        t = time.perf_counter()
        run_type(con, REGISTRY[tname])
        if reaches[tname].scope == "month":
            _keep_whole_months(con, tname)
        timings[tname] = timings.get(tname, 0.0) + time.perf_counter() - t

    if on_type:
        on_type("(lines of the persons' windows)", next(done), steps)
    n_lines = prepare_lines(con, stage, ctx, of_ctx="in_person")
    for tname in local:
        run(tname)
    _keep_line_info(con, first=True)
    if not wide:
        return n_lines
    keep = _columns_read(con, [REGISTRY[t] for t in wide])
    if keep != "*" and not re.search(r"\bmdtrt_id\b", keep):
        keep += ", mdtrt_id"
    if on_type:
        on_type("(lines of the months)", next(done), steps)
    _drop_temp(con, "lines")
    prepare_lines(con, stage, ctx, of_ctx="in_month", columns=keep, context=False)
    n_lines += con.execute(
        "SELECT count(*) FROM lines WHERE mdtrt_id NOT IN (SELECT mdtrt_id FROM ctx_visits WHERE in_person)"
    ).fetchall()[0][0]
    for tname in wide:
        run(tname)
    _keep_line_info(con, first=False, known=True)
    return n_lines


def default_part_lines(con: duckdb.DuckDBPyConnection) -> int:
    """Fee lines per part of a big screen: one byte of the connection's memory limit in 500
    (``lines`` holds about 480 bytes a line, so a part's about fits; parts that spill cost more
    than more parts: 52.4M lines under 8 GB, one after the other on 2026-12-03, took 557 CPU s in
    4 parts and 579 in 3, where duplicate_charge alone went from 18 to 35). 10 million lines under
    the default (DuckDB 4.7 GiB here), 12.8 million under a budget of 8GB (DuckDB 6,103 MiB). A
    batch a little bigger than a part is screened whole all the same (:func:`whole_lines`)."""
    return max(100_000, resources.memory_limit_bytes(con) // 500)


def whole_lines(con: duckdb.DuckDBPyConnection) -> int:
    """Fee lines screened whole by default though more than a part: up to one byte of the memory
    limit in 400 (what does not fit spills, and that costs less than parts, which repeat each
    type's fixed costs and write the month-wide types' columns: 10.48M lines under 4.7 GiB whole
    52.0 s at a peak of 4.9 GiB, in two parts 59.6 s at 3.7 GiB). 12.6 million under 4.7 GiB."""
    return max(100_000, resources.memory_limit_bytes(con) // 400)


def person_parts(con: duckdb.DuckDBPyConnection, part_lines: int | None = None) -> int:
    """Into how many parts of persons a full screen of the loaded fee lines goes (1: none)."""
    n = con.execute("SELECT count(*) FROM fee_list_d").fetchall()[0][0]
    if part_lines:
        return max(1, -(-n // part_lines))
    if n <= whole_lines(con):
        return 1
    return max(1, -(-n // default_part_lines(con)))


def _screen_in_parts(
    con: duckdb.DuckDBPyConnection,
    rules: list[Rule],
    names: list[str],
    stage: str,
    k: int,
    on_type: Callable[[str, int, int], None] | None,
    timings: dict[str, float],
) -> int:
    """A full screen of a batch too big for one ``lines``, in k parts of persons.

    Every type of person reach (:class:`medaudit.types.base.Reach`: a finding depends on one
    person's visits only) runs over each part's ``lines`` in turn: the part's persons, their
    visits and diagnoses, built (without :data:`VISIT_COLUMNS`, as a whole screen's ``lines``),
    screened and dropped, so memory holds one part at a time and the types' joins and windows
    work on a part. Of each part's lines the facts findings take
    from their hit lines are kept (:data:`LINE_INFO`, in ``hit_line_info``). When the library
    has types that judge a month or everything (peers, a month's stock, an analyst's query),
    each part's lines are also written to Parquet files in the spill folder, and those types
    then run once over ``lines`` as a view of the files (columnar: each reads its own columns,
    and nothing holds every line in memory). A type that says what it reads of the lines
    (``RuleType.line_inputs``: a visit's amounts, the lines of some classes) gets only that
    written, each input to files of its own; the facts findings take from the hit lines of
    these types are looked up after them (:func:`_keep_hit_facts`), not written with every
    line. The findings equal those of one ``lines``
    (``tests/test_screen_parts.py``). Returns the lines screened."""
    reaches = incremental.reach_of(rules)
    local = [t for t in names if reaches[t].scope == "person"]
    wide = [t for t in names if t not in local]
    steps, n_lines = k * (len(local) + 1) + len(wide), 0
    done = iter(range(steps))

    def step(name: str, tname: str | None = None, made: Mapping[str, str] | None = None, **tables: str) -> None:
        """Report a step (``on_type``); run the type ``tname``, adding its time to its others."""
        if on_type:
            on_type(name, next(done), steps)
        if tname is not None:
            t = time.perf_counter()
            run_type(con, REGISTRY[tname], made=made, **tables)
            timings[tname] = timings.get(tname, 0.0) + time.perf_counter() - t

    folder = _parts_folder(con) if wide else None
    # the month-wide types that say what they read of the lines (RuleType.line_inputs) get that
    # written per part (grouped or filtered); the others every column they read of every line
    # (a type that can find the groups it may flag from their sums, RuleType.line_lookup, writes
    # those sums and reads the lines of such groups after the parts)
    lookup = [t for t in wide if REGISTRY[t].line_lookup is not None]
    by_input = [t for t in wide if REGISTRY[t].line_inputs and t not in lookup]
    every_line = [t for t in wide if t not in by_input and t not in lookup]
    keep, copy_from = "*", "lines"
    input_columns: dict[str, str] = {}  # the columns an input named ``lines`` keeps, by type
    columns = slim_columns(con, [REGISTRY[t] for t in names])
    try:
        set_part_bounds(con, k)  # the persons' ranges, cut afresh for the lines loaded now
        line_adjustments(con)  # the refunds of every part, netted once
        for i in range(k):
            step(f"(lines, part {i + 1} of {k})")
            # each part's lines without the visit columns few types read, as a whole screen's
            n_lines += prepare_lines(con, stage, part=(i, k), adj=ADJ, columns=columns)
            _visit_columns_view(con)
            since = _hit_rows(con)
            if folder is not None and every_line:
                if i == 0:
                    # the files hold the visit columns only if a wide type reads them from its lines
                    if any(reads_visit_columns(con, REGISTRY[t]) for t in every_line):
                        copy_from = LINES_V
                    keep = _columns_read(con, [REGISTRY[t] for t in every_line], copy_from, facts=False)
                _copy_part(con, keep, _part_path(folder, i), copy_from)
            for tname in lookup:
                assert folder is not None  # lookup types are wide types: there is a parts folder
                rt = REGISTRY[tname]
                assert rt.line_lookup is not None
                named = type_names(rt, lines=_slim_lines_for(con, rt))
                sums = textwrap.dedent(rt.line_lookup.sums).format(**named)
                _copy_part(con, "*", _part_path(folder, i, line_input_name(rt, "sums")), f"({sums})")
            for tname in by_input:
                assert folder is not None  # by_input are wide types: there is a parts folder
                rt = REGISTRY[tname]
                src = _slim_lines_for(con, rt)
                if i == 0 and "lines" in rt.line_inputs:
                    input_columns[tname] = _columns_read(con, [rt], src, facts=False)
                named = type_names(rt, lines=src)
                for name in rt.line_inputs:
                    query = f"({line_input_sql(rt, name, named)})"
                    cols = input_columns[tname] if name == "lines" else "*"
                    _copy_part(con, cols, _part_path(folder, i, line_input_name(rt, name)), query)
            for tname in local:
                # a type that reads the fee lines as billed reads the part's (a person's lines are
                # all in their part); the whole table's size would also turn its joins around. So
                # the settlements: the visits that took place (LIVE_VISITS) read them, and every
                # settlement of the batch grouped once a part and type cost seven of the types
                # half as much again as their part's lines (52.4M lines: identity_misuse 0.78 CPU s
                # on the 10.4M lines of a whole screen, 1.43 on a part's as many)
                step(
                    tname,
                    tname,
                    lines=_slim_lines_for(con, REGISTRY[tname]),
                    fee_list_d="fee_src",
                    setl_d="setl_src",
                )
            _keep_line_info(con, first=i == 0, slim=True, since=since)
        if folder is None:
            return n_lines
        # the visit-level facts of every person again, every part's lines as one view, and
        # each input from the lines as one
        _drop_temp(con, "lines")
        prepare_context(con)
        for tname in lookup:
            # the groups that may break its rules, their lines built as a part builds them, the
            # type over them, and its hit lines' facts from them (all of it the type's step)
            if on_type:
                on_type(tname, next(done), steps)
            t = time.perf_counter()
            _lookup_lines(con, REGISTRY[tname], stage, folder)
            since = _hit_rows(con)
            run_type(con, REGISTRY[tname])
            _keep_line_info(con, first=False, known=True, since=since)
            _drop_temp(con, "lines")
            timings[tname] = timings.get(tname, 0.0) + time.perf_counter() - t
        if every_line:
            _parts_view(con, "lines", folder)
        since = _hit_rows(con)
        for tname in wide:
            if tname in lookup:
                continue
            made = None
            if tname in by_input:
                made = {n: line_input_name(REGISTRY[tname], n) for n in REGISTRY[tname].line_inputs}
                for view in made.values():
                    _parts_view(con, view, folder, view)
            step(tname, tname, made=made)
        _drop_temp(con, "lines")
        _keep_hit_facts(con, stage, since)
        return n_lines
    finally:
        con.execute(f"DROP TABLE IF EXISTS {ADJ}; DROP TABLE IF EXISTS lookup_keys")
        if folder is not None:
            shutil.rmtree(folder, ignore_errors=True)


def _lookup_lines(con: duckdb.DuckDBPyConnection, rt: RuleType, stage: str, folder: str) -> None:
    """``lines`` (every column) of the groups the type ``rt`` may flag (``RuleType.line_lookup``),
    from the sums each part wrote to ``folder``: the groups' keys, then the fee lines that match
    them, built with the refund adjustments made once (:func:`line_adjustments`) and ``visits``
    of every person, as their parts built them. A (visit, code, day) is in one group whatever the
    group's key, so its same-day repeats are found among these lines."""
    look = rt.line_lookup
    assert look is not None
    sums = line_input_name(rt, "sums")
    _parts_view(con, sums, folder, sums)
    keys = textwrap.dedent(look.keys).format(**type_names(rt, lines="lines"), sums=sums)
    for column in look.match:
        if not re.fullmatch(r"[a-z_]+", column):
            raise ValueError(f"not a plain column name for a group's key: {column!r}")
    con.execute(f"CREATE OR REPLACE TEMP TABLE lookup_keys AS SELECT {', '.join(look.match)} FROM ({keys})")
    # each key's expression over the fee lines alone (in a join's condition a bare column name
    # could bind to the keys' own column of that name), then the lines of the keys
    # (the keys that are a fee line's own column pick its lines first: the others' expressions,
    # a month from the time, are computed on those lines only, not on every fee line)
    exprs = ", ".join(f"({expr}) AS __key_{c}" for c, expr in look.match.items())
    on = " AND ".join(f"k.{c} = f.__key_{c}" for c in look.match)
    plain = [c for c, expr in look.match.items() if expr.strip() == c]
    first = "SELECT * FROM fee_list_d WHERE cnt >= 0"
    if plain:
        cols = ", ".join(plain)
        first = f"""SELECT f.* FROM fee_list_d f SEMI JOIN (SELECT DISTINCT {cols} FROM lookup_keys) p
                    ON {" AND ".join(f"p.{c} = f.{c}" for c in plain)} WHERE f.cnt >= 0"""
    con.execute(
        f"""CREATE OR REPLACE TEMP VIEW fee_src AS
            SELECT f.* EXCLUDE ({", ".join(f"__key_{c}" for c in look.match)})
            FROM (SELECT *, {exprs} FROM ({first})) f SEMI JOIN lookup_keys k ON {on}"""
    )
    _drop_temp(con, "lines")
    with db.joins_as_written(con):
        _build_lines(con, "fee_src", stage, "setl_d", "*", ADJ)


def _keep_hit_facts(con: duckdb.DuckDBPyConnection, stage: str, since: int) -> None:
    """Add to ``hit_line_info`` the facts of the lines the hits from row ``since`` on name (the
    month-wide types' after a screen in parts) that are not there yet: those lines built again
    from the fee lines, with the refund adjustments made once (:func:`line_adjustments`) and
    ``visits`` of every person, so the same lines their part built (without the same-day
    repeats, which a visit's other lines decide and the facts do not hold). A few lines, looked
    up once, instead of these facts' columns of every line written to the part files."""
    con.execute(
        f"""CREATE OR REPLACE TEMP VIEW fee_src AS SELECT * FROM fee_list_d
            WHERE bkkp_sn IN (SELECT bkkp_sn FROM {HITS} WHERE rowid >= {int(since)})"""
    )
    _drop_temp(con, "lines")
    with db.joins_as_written(con):
        _build_lines(con, "fee_src", stage, "setl_d", SLIM_COLUMNS, ADJ, repeats=False)
    _keep_line_info(con, first=False, known=True, slim=True, since=since)
    _drop_temp(con, "lines")


def _hit_rows(con: duckdb.DuckDBPyConnection) -> int:
    """Rows in ``hits`` now: the row id the next type's first hit gets (see :func:`_keep_line_info`)."""
    return con.execute(f"SELECT count(*) FROM {HITS}").fetchall()[0][0]


def _part_path(folder: str, i: int, sub: str = "") -> str:
    """Where part ``i`` writes its files in the parts ``folder``: ``part<i>`` (every line's
    columns), or in ``sub``, the folder of a type's line input (made here; its name is plain,
    :func:`line_input_name`)."""
    if sub:
        os.makedirs(f"{folder}/{sub}", exist_ok=True)
        return f"{folder}/{sub}/part{int(i)}"
    return f"{folder}/part{int(i)}"


def _parts_view(con: duckdb.DuckDBPyConnection, view: str, folder: str, sub: str = "") -> None:
    """The temporary view ``view`` over every part's files of :func:`_part_path` (``sub`` as there)."""
    where = f"{folder}/{sub}" if sub else folder
    con.execute(f"CREATE OR REPLACE TEMP VIEW {view} AS SELECT * FROM read_parquet('{where}/part*/*.parquet')")


def _copy_part(con: duckdb.DuckDBPyConnection, columns: str, path: str, src: str = "lines") -> None:
    """Write the columns of ``src`` (``lines``, or :data:`LINES_V`) to Parquet files in the new folder ``path`` (in a folder of
    :func:`_parts_folder`, checked plain before it is quoted), one file a thread: the types that
    read them depend on no row order, and an ordered single file cost a third more CPU (10.48M
    lines in 4 parts: 15.3 to 16.1 CPU s against 11.5; a part without lines still writes one
    empty file, so the folders' files always bind)."""
    con.execute(f"COPY (SELECT {columns} FROM {src}) TO '{path}' (FORMAT parquet, PER_THREAD_OUTPUT)")


def _columns_read(
    con: duckdb.DuckDBPyConnection, types: list[RuleType], lines: str = "lines", facts: bool = True
) -> str:
    """The columns of ``lines`` (the table, or :data:`LINES_V`) the types' queries read, as a
    select list in its order (``*`` for a type that prepares tables of its own, such as an
    analyst's query). Read from DuckDB's plan of each query over the ``lines`` there is now, with only unused columns
    pruned: every column a scan of it reads, and every column its text (and its matched lines'
    view) names. A column missed would fail the query at once (a binder error, not
    a silent difference); ``tests/test_screen_parts.py`` runs every type both ways. ``facts``:
    with the columns of :data:`LINE_INFO` (the findings' facts read from these lines later)."""
    names = [
        c
        for (c,) in con.execute(
            "SELECT column_name FROM duckdb_columns() WHERE database_name = 'temp' AND table_name = ? ORDER BY column_index",
            [lines],
        ).fetchall()
    ]
    # what the findings take from hit lines (those of the visit, if not there, from the visits
    # again: the visit's id and the day billed, :func:`_keep_line_info`)
    wanted = {c.strip() for c in LINE_INFO.split(",")} | {"mdtrt_id", "fee_date"} if facts else set()
    for rt in types:
        if rt.prepare is not None:
            return "*"
        src, own = line_inputs(con, rt, lines)
        if rt.items != "none":
            build_matched(con, rt, src)
        # the plan with the unused columns pruned and nothing else rewritten: a scope check the
        # rules at hand would let the optimiser fold away still names its column (the query
        # must bind over the parts' files whatever the rules)
        optimisers = [n for (n,) in con.execute("SELECT name FROM duckdb_optimizers()").fetchall()]
        con.execute(
            "SET disabled_optimizers = ?",
            [",".join(n for n in optimisers if n not in ("unused_columns", "column_lifetime"))],
        )
        sql = rt.sql(type_names(rt, lines=src, **own), con)
        try:
            plan = json.loads(con.execute("EXPLAIN (FORMAT json) " + sql).fetchall()[0][1])
        finally:
            db.disable_optimizers(con)
        # and every column the query names (one in a REPLACE or EXCLUDE list binds though unused)
        matched = con.execute(
            "SELECT sql FROM duckdb_views() WHERE database_name = 'temp' AND view_name = ?", [f"m_{rt.name}"]
        ).fetchall()
        text = " ".join([sql, *rt.line_inputs.values(), *(v for (v,) in matched if rt.items != "none")])
        wanted |= {c for c in names if re.search(rf"\b{c}\b", text)}
        stack = list(plan)
        while stack:
            node = stack.pop()
            stack.extend(node.get("children", []))
            info = node.get("extra_info") or {}
            if "SCAN" in node.get("name", "") and str(info.get("Table", "")).endswith("lines"):
                text = json.dumps(info, ensure_ascii=False)
                wanted |= {c for c in names if re.search(rf"\b{c}\b", text)}
    return ", ".join(c for c in names if c in wanted)


#: characters a parts folder may have: its path is written into the COPY statement
_SAFE_PATH = re.compile(r"[A-Za-z0-9_./ -]+")


def _parts_folder(con: duckdb.DuckDBPyConnection) -> str:
    """A new folder for a screen's part files: in the connection's spill folder (the memory
    limit's overflow, :mod:`medaudit.resources`), else the system's temporary folder. Made by
    this process (``mkdtemp``) and checked to be plain characters before it is quoted into SQL."""
    spill = con.execute("SELECT current_setting('temp_directory')").fetchall()[0][0]
    base = spill if spill and os.path.isdir(spill) else None
    folder = tempfile.mkdtemp(prefix="medaudit-parts-", dir=base)
    if not _SAFE_PATH.fullmatch(folder):
        shutil.rmtree(folder, ignore_errors=True)
        folder = tempfile.mkdtemp(prefix="medaudit-parts-")
        if not _SAFE_PATH.fullmatch(folder):
            shutil.rmtree(folder, ignore_errors=True)
            raise RuntimeError(f"the temporary folder {folder!r} has characters a COPY statement cannot take")
    return folder


def _keep_line_info(
    con: duckdb.DuckDBPyConnection, first: bool, known: bool = False, slim: bool = False, since: int = 0
) -> None:
    """Add to ``hit_line_info`` the facts of the lines of ``lines`` that hits name; ``known``:
    some may be there already (the wide types' hits on lines the parts' types hit too).
    ``since``: the hits before this row are of earlier parts (``hits`` is only appended to while
    a screen runs, so its row ids are the order the rows came in), whose lines are not in this
    ``lines``: looking them up too grew with every part (52.4M lines in 5 parts: 1.6 to 5.9 CPU
    s a part).
    ``slim``: ``lines`` was built without :data:`VISIT_COLUMNS`; the hit lines (a tenth of the
    lines or less) take them from their visits, as :data:`LINES_V` gives them (at 10.48M lines,
    reading the findings' facts through ``LINES_V`` joined every line to its visit: 4.5 CPU s)."""
    hit = f"bkkp_sn IN (SELECT bkkp_sn FROM {HITS} WHERE rowid >= {int(since)})"
    if known:
        hit += " AND bkkp_sn NOT IN (SELECT bkkp_sn FROM hit_line_info)"
    pick = f"SELECT {LINE_INFO} FROM lines WHERE {hit}"
    if slim:
        pick = f"""SELECT {LINE_INFO} FROM (
                       SELECT l.*, {_visit_columns_sql("v", "l.fee_date")}
                       FROM (SELECT * FROM lines WHERE {hit}) l
                       JOIN visits v USING (mdtrt_id))"""
    if first:
        con.execute(f"CREATE OR REPLACE TEMP TABLE hit_line_info AS {pick}")
    else:
        con.execute(f"INSERT INTO hit_line_info {pick}")
