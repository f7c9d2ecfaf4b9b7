"""The DuckDB store: one file holds loaded batches, rejected rows, screening runs and findings."""

from __future__ import annotations

import datetime as dt
import gc
import re
import weakref
import contextlib
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Protocol

import duckdb

from . import resources
from .contract import SQL_TYPE, TABLES

DEFAULT_DB = "medaudit.duckdb"


class Executes(Protocol):
    """What runs SQL text: all :func:`install_macros` needs (the Spark dialect hands it a recorder
    of the script, :mod:`medaudit.spark.dialect`)."""

    def execute(self, query: str, parameters: object = None, /) -> object: ...


class Rows(Protocol):
    def fetchall(self) -> list[tuple[Any, ...]]: ...


class Connection(Protocol):
    """The part of a DuckDB connection the engine's screening steps use (prepare_lines,
    register_rules, create_hits, run_type): the Spark runner's connection gives the same
    (:class:`medaudit.spark.runner.SparkCon`) and runs them unchanged."""

    def execute(self, query: str, parameters: object = None, /) -> Rows: ...

    def executemany(self, query: str, parameters: object, /) -> object: ...

    def register(self, view_name: str, python_object: object, /) -> object: ...

    def unregister(self, view_name: str, /) -> object: ...


_IDENT = re.compile(r"[a-z_][a-z0-9_]{0,62}")


def ident(name: str) -> str:
    """The one way an identifier (table or column name) enters SQL text: checked, then quoted.

    Only names of the data contract or the schema ever reach here; anything else (a column
    name read from a file) is refused rather than escaped, so no input can become SQL.
    """
    if not isinstance(name, str) or not _IDENT.fullmatch(name):
        raise ValueError(f"not a safe SQL identifier: {name!r}")
    return f'"{name}"'


#: DuckDB optimisers no medaudit connection runs. ``common_subplan`` (new in DuckDB 2.0) keeps a
#: subquery a statement reads twice as a materialised copy: the type queries that find candidate
#: groups first and then window over their lines only read the matched lines twice on purpose,
#: and a copy of every matched line cost more than the second read (inventory_mismatch over a
#: night's 12M lines of month context: 11-12 s with the copy, spilled to disk, 1.3 s without).
DISABLED_OPTIMIZERS: tuple[str, ...] = ("common_subplan",)


def disable_optimizers(con: Connection, *extra: str) -> None:
    """Run the connection's statements without :data:`DISABLED_OPTIMIZERS` and ``extra``."""
    con.execute("SET disabled_optimizers = ?", [",".join((*DISABLED_OPTIMIZERS, *extra))])


@contextmanager
def optimizers_off(con: Connection, *names: str) -> Iterator[None]:
    """Run the statements inside without DuckDB's optimisers ``names`` (besides
    :data:`DISABLED_OPTIMIZERS`), then as before. Other engines (the Spark runner's connection)
    run the statements unchanged."""
    if not isinstance(con, duckdb.DuckDBPyConnection):
        yield
        return
    disable_optimizers(con, *names)
    try:
        yield
    finally:
        disable_optimizers(con)


def joins_as_written(con: Connection) -> contextlib.AbstractContextManager[None]:
    """Run the statements inside with DuckDB's join order as the SQL writes it (big table first,
    the small ones it is joined to after). For statements whose filters DuckDB cannot estimate
    (the refund netting of ``lines``), its reordering built the hash table on a million fee
    lines and probed it with 57,000 visits: 2.2 -> 1.4 CPU s at 1M lines."""
    return optimizers_off(con, "join_order")


def hash_as_written(con: Connection) -> contextlib.AbstractContextManager[None]:
    """Run the statements inside with DuckDB hashing the right side of each join as the plan
    writes it, not the side it estimates smaller (its ``build_side_probe_side`` optimiser). A
    rule type's matched lines (lines x items, filtered) are estimated thousands of times too
    low (4,955 for 6.6 million at 10M lines): duplicate_charge hashed every included line to
    probe it with the few main lines, 3.2 CPU s against 1.3. For the statements that need it
    only (most types' joins are better flipped: off for all of them, the screen took 81 CPU s
    against 63)."""
    return optimizers_off(con, "build_side_probe_side")


def date_literal(day: dt.date) -> str:
    """A typed date as SQL text (``DATE '2026-03-01'``), for the few places a value cannot be
    bound with ``?`` (a view's definition, an identifier-like bound inside a CTAS the planner
    must see as a constant to skip row groups). Only a ``datetime.date`` is accepted, never text,
    so no input string can reach the SQL through here."""
    if isinstance(day, dt.datetime):
        day = day.date()
    if not isinstance(day, dt.date):
        raise TypeError(f"not a date: {day!r}")
    return f"DATE '{day.isoformat()}'"


# Money columns are DECIMAL(18,2) once rounded; line-level claims keep 12 decimals until the end.
_SCHEMA = """
CREATE TABLE IF NOT EXISTS load_log (
    batch_id INTEGER PRIMARY KEY,
    content_hash VARCHAR UNIQUE,
    source VARCHAR,
    loaded_at TIMESTAMP,
    summary VARCHAR
);
CREATE TABLE IF NOT EXISTS rejected_rows (
    batch_id INTEGER,
    file VARCHAR,
    table_name VARCHAR,
    row_no INTEGER,
    column_name VARCHAR,
    value VARCHAR,
    reason VARCHAR
);
-- rows that loaded but look wrong (line amount not cnt x pric, settlement not known yet)
CREATE TABLE IF NOT EXISTS data_quality (
    batch_id INTEGER,
    file VARCHAR,
    table_name VARCHAR,
    row_no INTEGER,
    row_key VARCHAR,
    column_name VARCHAR,
    value VARCHAR,
    reason VARCHAR
);
CREATE TABLE IF NOT EXISTS screen_runs (
    run_id INTEGER PRIMARY KEY,
    stage VARCHAR,
    started_at TIMESTAMP,
    finished_at TIMESTAMP,
    rules_digest VARCHAR,
    n_rules INTEGER,
    n_hits INTEGER,
    n_new_findings INTEGER
);
CREATE TABLE IF NOT EXISTS findings (
    finding_id VARCHAR PRIMARY KEY,
    rule_id VARCHAR,
    rule_version VARCHAR,
    rule_name VARCHAR,
    rule_type VARCHAR,
    stage VARCHAR,
    severity VARCHAR,
    nature VARCHAR,
    basis VARCHAR,
    fixmedins_code VARCHAR,
    dept_code VARCHAR,
    dr_code VARCHAR,
    psn_no VARCHAR,
    mdtrt_id VARCHAR,
    setl_id VARCHAR,
    period VARCHAR,
    finding_key VARCHAR,
    flagged_amt DECIMAL(18,2),
    claimed_amt DECIMAL(18,2),
    deduction_amt DECIMAL(18,2),
    evidence VARCHAR,
    status VARCHAR,
    first_run INTEGER,
    last_run INTEGER,
    created_at TIMESTAMP
);
CREATE TABLE IF NOT EXISTS finding_lines (
    finding_id VARCHAR,
    bkkp_sn VARCHAR,
    role VARCHAR,
    line_amt DECIMAL(18,4),
    claim DECIMAL(38,12),
    carried DECIMAL(38,12),
    excess_units DECIMAL(18,4)  -- units beyond the limit (excess_qty types), for the report's 明细行
);
-- a database made before excess_units was kept
ALTER TABLE finding_lines ADD COLUMN IF NOT EXISTS excess_units DECIMAL(18,4);
"""


class DatabaseInUse(Exception):
    """Another process holds the database file (DuckDB allows one writing process per file)."""

    def __init__(self, path: str | Path, pid: int | None, program: str):
        self.path, self.pid, self.program = str(path), pid, program
        who = f"process {pid}" if pid else "another process"
        super().__init__(f"the database {self.path} is in use by {who} ({program}); stop it or use another --db")


class DatabaseMissing(Exception):
    """A command that reads or decides on stored findings was given a database file that is not there.

    Only ``load``, ``screen`` and ``serve`` create a database; every other command opens an
    existing one (:func:`open_existing`), so a mistyped ``--db`` is an error, not a new empty file."""

    def __init__(self, path: str | Path, folder: bool = False):
        self.path = str(path)
        if folder:
            super().__init__(
                f"{self.path} is a folder, not a database file; give the file made by load or screen with --db"
            )
        else:
            super().__init__(
                f"no database at {self.path}; make one with `medaudit load BATCH --db {self.path}` "
                "(or `medaudit screen`), or give the right --db"
            )


_LOCK = re.compile(
    r"Could not set lock on file .*?Conflicting lock is held in (?P<prog>.*?) \(PID (?P<pid>\d+)\)", re.S
)


def _holder(pid: int | None, program: str) -> str:
    """What holds the lock, as a person would recognise it: its command line when this machine
    shows it (``medaudit serve --db x.duckdb``), else the program DuckDB names."""
    argv: list[str] = []
    if pid is not None:
        try:
            raw = Path(f"/proc/{int(pid)}/cmdline").read_bytes().split(b"\0")
            argv = [a.decode(errors="replace") for a in raw if a]
        except (OSError, ValueError):
            argv = []
    if argv:
        # python -m medaudit ... / .../bin/medaudit ...: show it as medaudit ...
        for i, a in enumerate(argv):
            if a == "medaudit" or a.endswith("/medaudit"):
                argv = ["medaudit", *argv[i + 1 :]]
                break
        text = " ".join(" ".join(argv).split())  # one line, whatever the arguments hold
        return text if len(text) <= 120 else text[:119] + "…"
    return f"{program or 'unknown program'}; medaudit serve?"


def connect(path: str | Path = DEFAULT_DB, read_only: bool = False) -> duckdb.DuckDBPyConnection:
    """Open the store. When another process holds the file, raises :class:`DatabaseInUse` (the
    CLI prints it as one line), not DuckDB's IOException."""
    try:
        con = _open(path, read_only)
    except duckdb.IOException as e:
        m = _LOCK.search(str(e))
        if not m:
            raise
        pid = int(m["pid"])
        raise DatabaseInUse(path, pid, _holder(pid, m["prog"])) from None
    try:
        resources.apply(con, str(path))  # memory limit and spill folder (medaudit/resources.py)
    except resources.ResourceError:
        con.close()
        raise
    disable_optimizers(con)
    if not read_only:
        try:
            ensure_schema(con)
            _ENSURED.add(con)  # outside any transaction: nothing can undo it (ensure_schema once)
        except DatabaseTooNew:
            con.close()
            raise
    elif schema_version(con) > SCHEMA_VERSION:
        con.close()
        raise DatabaseTooNew(
            f"this database was written by a newer medaudit (schema version above "
            f"{SCHEMA_VERSION}): upgrade medaudit to open it"
        )
    install_macros(con)
    return con


def _open(path: str | Path, read_only: bool) -> duckdb.DuckDBPyConnection:
    """``duckdb.connect``; when DuckDB refuses because this process still holds the file under
    another configuration (read-write against read-only), the holder may be a connection nobody
    can reach any more that only waits for Python's cycle collector (commands run one after
    another in one process: the tests' CLI runner, the web app): collect, then try once more.
    A connection still in use keeps the refusal."""
    try:
        return duckdb.connect(str(path), read_only=read_only)
    except duckdb.ConnectionException as e:
        if "different configuration" not in str(e):
            raise
        gc.collect()
        return duckdb.connect(str(path), read_only=read_only)


def open_existing(path: str | Path = DEFAULT_DB, read_only: bool = False) -> duckdb.DuckDBPyConnection:
    """:func:`connect` to a database that must exist already (raises :class:`DatabaseMissing`)."""
    p = Path(path)
    if p.is_dir():
        raise DatabaseMissing(path, folder=True)
    if not p.is_file():
        raise DatabaseMissing(path)
    return connect(path, read_only=read_only)


#: The database layout this code writes. A file records the version it was brought to
#: (``schema_meta``); every statement of :func:`ensure_schema` is idempotent (``IF NOT EXISTS``,
#: ``ADD COLUMN IF NOT EXISTS``), so opening an older file brings it up to date in place, and
#: ``tests/test_schema.py`` opens a file written by an earlier release (67787fa) and works on it.
#: Versions: 1 = the nightly-run tables (screened_batches, visit_span, span_batches),
#: finding_lines.excess_units, deduction_items.deadline, code_names; files without schema_meta
#: are older than 1. 2 = prealert_results.jr_id without its primary-key index (ids time-ordered;
#: :func:`medaudit.prealert.store.drop_result_index` rewrites an older file's table). 3 = supervision
#: over time (medaudit/supervision/store.py: supervision_events, assessment_runs/results/vetoes,
#: credit_entries, credit_points, watchlist, watch_settings, tips, tip_findings, tip_settings).
#: 4 = tip_findings.event_id (the event that linked a finding to a tip). 5 = findings and
#: finding_state without their primary-key index on finding_id (:func:`drop_primary_key`: the
#: index of random 32-character ids cost more than the rows themselves, in file space and at
#: every screen's commit; the ids stay unique by construction, see :func:`medaudit.engine.store_findings`).
#: 6 = finding_events without its primary-key index on event_id (the ids come from
#: finding_event_seq, unique by construction; with the index, a screen's 337,290 create events
#: after 33,729 took 0.26-0.29 s to insert, without it 0.14-0.15 s, and it grows with the log).
#: Raise it with every change of layout and add the change's statement to the
#: schema strings (never edit a released statement).
SCHEMA_VERSION = 6


class DatabaseTooNew(Exception):
    """The file was written by a newer medaudit (its schema version is higher than this code's)."""


def schema_version(con: duckdb.DuckDBPyConnection) -> int:
    """The version a database file records (0: older than versioning, or empty)."""
    has = con.execute(
        "SELECT count(*) FROM duckdb_tables() WHERE database_name = current_database() "
        "AND schema_name = 'main' AND table_name = 'schema_meta'"
    ).fetchall()[0][0]
    if not has:
        return 0
    row = con.execute("SELECT max(version) FROM schema_meta").fetchall()[0][0]
    return int(row or 0)


#: connections this process brought up to date (:func:`ensure_schema` ``once``): a load on a
#: connection from :func:`connect` does not plan the whole schema's DDL a second time
_ENSURED: "weakref.WeakSet[duckdb.DuckDBPyConnection]" = weakref.WeakSet()


def ensure_schema(con: duckdb.DuckDBPyConnection, once: bool = False) -> None:
    """Create what is missing and bring an older file up to date (every statement idempotent).
    ``once``: nothing to do when :func:`connect` made this connection (it ran this outside any
    transaction, so nothing can have undone it since; a call inside a transaction is not
    remembered, as a rollback would undo it)."""
    if once and con in _ENSURED:
        return
    found = schema_version(con)
    if found > SCHEMA_VERSION:
        raise DatabaseTooNew(
            f"this database was written by a newer medaudit (schema version {found}; this one "
            f"knows {SCHEMA_VERSION}): upgrade medaudit to open it"
        )
    for t in TABLES.values():
        cols = ", ".join(f"{ident(c.name)} {SQL_TYPE[c.type]}" for c in t.columns)
        con.execute(f"CREATE TABLE IF NOT EXISTS {ident(t.name)} (batch_id INTEGER, source_row INTEGER, {cols})")
    con.execute(_SCHEMA)
    # what each screening run covered and each visit's date span (incremental runs)
    from . import incremental

    con.execute(incremental.SCHEMA)
    # the hospital loop's tables (finding states, audit log, settings, deduction statements)
    from .hospital_loop import deduct, lifecycle

    con.execute(lifecycle.SCHEMA)
    for table in ("findings", "finding_state"):  # version 5: without the finding_id index
        drop_primary_key(con, table)
    # version 6: the audit log without the event_id index (its ids still drawn from the sequence)
    drop_primary_key(con, "finding_events", defaults={"event_id": "nextval('finding_event_seq')"})
    con.execute(deduct.SCHEMA)
    # the pre-alert service's results, feedback and API keys, and the views that show the
    # doctor's answer on the matching post-hoc finding (medaudit/prealert/store.py)
    from .prealert import store as prealert_store

    con.execute(prealert_store.SCHEMA)
    prealert_store.drop_result_index(con)  # files made before results ids were time-ordered
    # supervision over time: assessments, credit files, the watchlist and their audit log
    from .supervision import store as supervision_store

    con.execute(supervision_store.SCHEMA)
    from .supervision import tips as supervision_tips

    con.execute(supervision_tips.SCHEMA)
    if found < SCHEMA_VERSION:
        con.execute("CREATE TABLE IF NOT EXISTS schema_meta (version INTEGER)")
        con.execute("INSERT INTO schema_meta VALUES (?)", [SCHEMA_VERSION])


def drop_primary_key(con: duckdb.DuckDBPyConnection, table: str, defaults: dict[str, str] | None = None) -> bool:
    """Rewrite ``table`` (a constant of the schema, never input) without its primary key: same
    rows, same columns in the same order (DuckDB cannot drop a constraint, so the table is made
    again). A random id's index (``findings.finding_id``, an MD5 text) grows with every row: in a
    table of 3 million such ids and two small columns, 337,000 more took 1.2 s to insert and
    commit with it against 0.1 s without, and the file held 485 MB against 59. Inside the caller's transaction if there is
    one (all or nothing), else in its own. Returns whether it did (once per file).

    ``defaults``: column defaults the new table gets back in the same transaction (a copy of the
    rows keeps none), each a constant expression of the schema (``finding_events.event_id``: its
    sequence)."""
    if not re.fullmatch(r"[a-z_]+", table):
        raise ValueError(f"not a table of the schema: {table!r}")
    for column in defaults or {}:
        if not re.fullmatch(r"[a-z_]+", column):
            raise ValueError(f"not a column of the schema: {column!r}")
    keyed = con.execute(
        """SELECT count(*) FROM duckdb_constraints()
           WHERE table_name = ? AND constraint_type = 'PRIMARY KEY'
             AND database_name = current_database() AND schema_name = 'main'""",
        [table],
    ).fetchall()[0][0]
    if not keyed:
        return False
    rewrite = f"""CREATE TABLE {table}__new AS SELECT * FROM {table};
                  DROP TABLE {table};
                  ALTER TABLE {table}__new RENAME TO {table};"""
    for column, expression in (defaults or {}).items():
        rewrite += f"\nALTER TABLE {table} ALTER COLUMN {column} SET DEFAULT {expression};"
    with transaction(con):
        con.execute(rewrite)
    return True


@contextmanager
def transaction(con: duckdb.DuckDBPyConnection) -> Iterator[None]:
    """The statements inside as one transaction: the caller's if it holds one (they are part of
    it), else their own, committed at the end and rolled back on any error."""
    if in_transaction(con):
        yield
        return
    con.execute("BEGIN")
    try:
        yield
        con.execute("COMMIT")
    except BaseException:
        con.execute("ROLLBACK")
        raise


def in_transaction(con: duckdb.DuckDBPyConnection) -> bool:
    """Whether the connection is inside a transaction it began (``BEGIN``). Asked without side
    effects: outside one each statement is its own transaction, so two reads of the transaction
    id differ (a ``BEGIN`` that fails inside one would abort the caller's transaction)."""
    a = con.execute("SELECT txid_current()").fetchall()[0][0]
    return con.execute("SELECT txid_current()").fetchall()[0][0] == a


def install_macros(con: Executes) -> None:
    """SQL helpers shared by every rule type (temporary: they live with the connection)."""
    from .semantics import age_years

    con.execute(
        """
        -- exact decimal division for non-negative amounts (DuckDB's DECIMAL / DECIMAL is DOUBLE):
        -- 12 decimals, truncated, so rounding half-up to 0.01 later is exact at every boundary.
        CREATE OR REPLACE TEMP MACRO xdiv(a, b) AS
            CASE WHEN b = 0 THEN NULL ELSE
            CAST(((CAST(CAST(a AS DECIMAL(38,8)) * 100000000 AS HUGEINT) * 1000000000000)
                  // CAST(CAST(b AS DECIMAL(38,8)) * 100000000 AS HUGEINT)) AS DECIMAL(38,0))
            * CAST(0.000000000001 AS DECIMAL(13,12)) END;
        -- money as a clerk writes it: 180.00
        CREATE OR REPLACE TEMP MACRO yuan(x) AS CAST(CAST(round(x, 2) AS DECIMAL(18,2)) AS VARCHAR);
        -- a quantity without trailing zeros: 1, 2.5
        CREATE OR REPLACE TEMP MACRO qty(x) AS
            regexp_replace(regexp_replace(CAST(CAST(x AS DECIMAL(18,4)) AS VARCHAR), '(\\.\\d*?)0+$', '\\1'), '\\.$', '');
        -- completed years between two dates
        CREATE OR REPLACE TEMP MACRO age_years(birth, d) AS {age_years};
        -- 项目【子宫造影】(002101030300000), 药品【...】(...), 耗材【...】(...)
        CREATE OR REPLACE TEMP MACRO item_ref(list_type, name, code) AS
            CASE WHEN list_type IN ('101', '102') THEN '药品' WHEN list_type = '301' THEN '耗材' ELSE '项目' END
            || '【' || coalesce(name, '') || '】(' || code || ')';
        CREATE OR REPLACE TEMP MACRO insutype_cn(t) AS
            CASE t WHEN '310' THEN '职工基本医疗保险' WHEN '390' THEN '城乡居民基本医疗保险'
                   WHEN '340' THEN '离休人员医疗保障' WHEN '410' THEN '工伤保险' WHEN '510' THEN '生育保险'
                   ELSE '其他' END;
        CREATE OR REPLACE TEMP MACRO med_type_cn(t) AS
            CASE t WHEN '11' THEN '普通门诊' WHEN '12' THEN '门诊挂号' WHEN '13' THEN '急诊'
                   WHEN '14' THEN '门诊慢特病' WHEN '21' THEN '普通住院' WHEN '22' THEN '外伤住院'
                   WHEN '24' THEN '急诊转住院' WHEN '28' THEN '日间手术' WHEN '41' THEN '定点药店购药'
                   WHEN '51' THEN '生育门诊' WHEN '52' THEN '生育住院'
                   ELSE CASE WHEN starts_with(t, '2') THEN '住院' ELSE '门诊' END END;
        CREATE OR REPLACE TEMP MACRO level_cn(n) AS
            CASE n WHEN 3 THEN '三级' WHEN 2 THEN '二级' WHEN 1 THEN '一级' ELSE '未定级' END;
        CREATE OR REPLACE TEMP MACRO gender_cn(g) AS
            CASE g WHEN '1' THEN '男' WHEN '2' THEN '女' WHEN '0' THEN '未知' ELSE '未说明' END;
        """.replace("{age_years}", age_years.sql("birth", "d"))
    )
