"""Screening on Apache Spark: the engine's own steps, run through a connection that speaks Spark.

:class:`SparkCon` stands where the engine expects a DuckDB connection. The engine's functions
(:func:`medaudit.engine.prepare_lines`, :func:`~medaudit.engine.register_rules`,
:func:`~medaudit.engine.run_type`, :func:`~medaudit.engine.findings_sql`) run unchanged; each
statement they issue is rendered for Spark (:mod:`medaudit.spark.dialect`) and run there:

* ``CREATE TEMP TABLE x AS SELECT`` -> a cached Spark view ``x``; ``CREATE TEMP VIEW`` -> a view;
* ``INSERT INTO hits BY NAME SELECT`` -> the type's hit rows, checkpointed, appended to ``hits``;
* a ``SELECT`` that reads only the rule tables (``r_all``, ``p_<type>``, ``rule_fan``) runs on
  the in-memory DuckDB that built them from the library (they are small); the rule tables are
  handed to Spark as broadcast views.

Input: a loaded batch as Parquet, one folder per table (:data:`TABLES`), as written by
:func:`export_parquet`. Output: ``findings/`` and ``finding_lines/`` Parquet folders and
``run.json``; :func:`load_findings` brings them into a DuckDB file (idempotent: same ids, nothing new).
"""

from __future__ import annotations

import datetime as dt
import json
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import duckdb
import sqlglot
from sqlglot import exp

from .. import db as dbm
from .. import engine
from ..contract import TABLES as CONTRACT_TABLES
from ..library import Library
from ..types import REGISTRY
from ..types.base import HIT_COLUMNS
from .dialect import render

#: the Parquet layout a Spark run reads: ``<root>/<table>/*.parquet``, one folder per loaded table
TABLES = tuple(CONTRACT_TABLES)
RULE_TABLE_PREFIXES = ("p_", engine.RULES, engine.FAN)
#: rule types whose query cannot run on Spark, and why (refused by name, never skipped silently)
REFUSED: dict[str, str] = {
    "sql": "its rules are DuckDB SQL written by users, run in a DuckDB sandbox (no Spark rendering)",
}


#: views partitioned by person when they are built (cross-visit types group and window by psn_no)
PERSON_PARTITIONED = frozenset({"lines"})
#: a recursive query (period_limit's walk: one step per unit of the longest run of close units)
#: that still adds rows after this many steps is stopped
MAX_RECURSION_STEPS = 100_000


def rename_tables(node: exp.Expr, names: dict[str, str]) -> exp.Expr:
    """References to the tables ``names`` (name -> view) read the views instead, under the alias
    they had, else under the name (so ``src.*`` and ``src.col`` still resolve)."""
    for t in list(node.find_all(exp.Table)):
        if t.name in names and not t.args.get("db"):
            t.replace(exp.table_(names[t.name], alias=t.alias or t.name))
    return node


class SparkRunError(Exception):
    """A Spark run that cannot start or finish (the message says what and where)."""


def _duck_type_to_spark(t: str) -> str:
    return sqlglot.exp.DataType.build(t, dialect="duckdb").sql(dialect="spark")


class SparkCon:
    """The subset of a DuckDB connection the engine's screening steps use, over a SparkSession."""

    def __init__(self, spark, rules_con: duckdb.DuckDBPyConnection):
        self.spark = spark
        self.duck = rules_con
        self.schema: dict[str, dict[str, str]] = {}
        self._rows: list[tuple] = []
        self.rule_tables: set[str] = set()
        self._n_rec = 0
        self._rec_views: list[str] = []

    # -- views
    def view(self, name: str, df, cache: bool = False, broadcast: bool = False):
        from pyspark.sql.functions import broadcast as bc

        if broadcast:
            df = bc(df)
        if cache:
            df = df.cache()
        df.createOrReplaceTempView(name)
        self.schema[name] = {f.name: "VARCHAR" for f in df.schema.fields}
        return df

    def _push_rule_table(self, name: str) -> None:
        """A rule table built in DuckDB -> a broadcast Spark view of the same name."""
        rows = self.duck.sql(f"SELECT * FROM {dbm.ident(name)}").fetchall()
        fields = [
            f"`{col}` {_duck_type_to_spark(typ)}"
            for col, typ, *_ in self.duck.execute(f"DESCRIBE {dbm.ident(name)}").fetchall()
        ]
        df = self.spark.createDataFrame(rows, schema=", ".join(fields))
        self.view(name, df, cache=True, broadcast=True)
        self.rule_tables.add(name)

    # -- the DuckDB connection surface the engine uses
    def register(self, name: str, arrow) -> None:
        self.duck.register(name, arrow)

    def unregister(self, name: str) -> None:
        self.duck.unregister(name)

    def executemany(self, sql: str, rows) -> None:
        self.duck.executemany(sql, rows)
        for t in sqlglot.parse_one(sql, read="duckdb").find_all(exp.Table):
            if t.name.startswith(RULE_TABLE_PREFIXES):
                self._push_rule_table(t.name)

    def fetchall(self) -> list[tuple]:
        return self._rows

    def execute(self, sql: str, params: object = None) -> SparkCon:
        if params:
            raise SparkRunError("parameters are not passed to Spark statements")
        for stmt in sqlglot.parse(sql, read="duckdb"):
            if stmt is not None:
                self._run(stmt)
        return self

    def _reads_rule_tables_only(self, tree: exp.Expr) -> bool:
        ctes = {c.alias_or_name for c in tree.find_all(exp.CTE)}
        tables = {t.name for t in tree.find_all(exp.Table)} - ctes
        return bool(tables) and all(t.startswith(RULE_TABLE_PREFIXES) or t.startswith("__") for t in tables)

    def _run(self, stmt: exp.Expr) -> None:
        if isinstance(stmt, exp.Create):
            name = stmt.this.this.name if isinstance(stmt.this, exp.Schema) else stmt.this.name
            kind = (stmt.args.get("kind") or "").upper()
            body = stmt.expression
            if self._reads_rule_tables_only(stmt) or name.startswith(RULE_TABLE_PREFIXES):
                # the rule tables are built in DuckDB from the library, then handed to Spark
                self.duck.execute(stmt.sql(dialect="duckdb"))
                self._push_rule_table(name)
                return
            if body is None:  # CREATE TABLE x (columns): an empty table
                cols = [
                    f"CAST(NULL AS {_duck_type_to_spark(c.args['kind'].sql(dialect='duckdb'))}) AS `{c.name}`"
                    for c in stmt.this.expressions
                ]
                df = self.spark.sql(f"SELECT {', '.join(cols)} WHERE FALSE")
                self.view(name, df)
                return
            df = self._df(body)
            if name in PERSON_PARTITIONED and "psn_no" in df.columns:
                # lines partitioned by person: the cross-visit types' windows and joins (keys
                # that include psn_no) then need no shuffle of the lines
                df = df.repartition("psn_no")
            self.view(name, df, cache=(kind == "TABLE"))
            return
        if isinstance(stmt, exp.Insert):
            target = stmt.this.this.name if isinstance(stmt.this, exp.Schema) else stmt.this.name
            if target != engine.HITS:
                raise SparkRunError(f"unexpected INSERT INTO {target} in a Spark run")
            self.insert_hits(self._df(stmt.expression))
            self._drop_rec_views()  # the hits are checkpointed: the unrolled CTEs' views are done
            return
        if isinstance(stmt, (exp.Select, exp.Union)):
            if self._reads_rule_tables_only(stmt):
                self._rows = self.duck.execute(stmt.sql(dialect="duckdb")).fetchall()
            else:
                self._rows = [tuple(r) for r in self._df(stmt).collect()]
            return
        raise SparkRunError(f"statement not run on Spark: {stmt.sql(dialect='duckdb')[:120]}")

    def _df(self, tree: exp.Expr):
        """One DuckDB SELECT as a Spark DataFrame (a ``WITH RECURSIVE`` unrolled first)."""
        w = tree.args.get("with_")
        if w is not None and w.args.get("recursive"):
            tree = self._unroll_recursive(tree)
        return self.spark.sql(render(tree.sql(dialect="duckdb"), self.schema))

    def _unroll_recursive(self, tree: exp.Expr) -> exp.Expr:
        """``WITH RECURSIVE a AS (...), r(cols) AS (anchor UNION ALL step), b AS (...) SELECT ...``
        (Spark SQL 3.5 has no recursion): each CTE becomes a Spark view, in order; the recursive
        one is iterated here, the step run on the rows the previous step added until it adds none,
        exactly as DuckDB evaluates it. The query text stays DuckDB's one definition; returns the
        main SELECT over the views."""
        self._n_rec += 1
        prefix = f"rec{self._n_rec}_"
        views: dict[str, str] = {}

        for cte in tree.args["with_"].expressions:
            name, body = cte.alias, cte.this.copy()
            cols = [c.name for c in (cte.args["alias"].columns or [])]
            if any(t.name == name and not t.args.get("db") for t in body.find_all(exp.Table)):
                df = self._iterate(name, rename_tables(body, views), cols)
                self.view(prefix + name, df)
            else:
                df = self.spark.sql(render(rename_tables(body, views).sql(dialect="duckdb"), self.schema))
                self.view(prefix + name, df.toDF(*cols) if cols else df, cache=bool(cte.args.get("materialized")))
            views[name] = prefix + name
            self._rec_views.append(prefix + name)
        main = tree.copy()
        main.set("with_", None)
        return rename_tables(main, views)

    def _drop_rec_views(self) -> None:
        for v in dict.fromkeys(self._rec_views):
            self.spark.catalog.dropTempView(v)  # uncaches it too
            self.schema.pop(v, None)
        self._rec_views.clear()

    def _iterate(self, name: str, body: exp.Expr, cols: list[str]):
        if not isinstance(body, exp.Union) or body.args.get("distinct") is not False:
            raise SparkRunError(f"WITH RECURSIVE {name}: only an anchor UNION ALL a step is run on Spark")
        anchor, step = body.this, body.expression
        if any(t.name == name for t in anchor.find_all(exp.Table)):
            raise SparkRunError(f"WITH RECURSIVE {name}: the anchor reads {name} itself")
        delta = f"rec{self._n_rec}_{name}__delta"
        df = self.spark.sql(render(anchor.sql(dialect="duckdb"), self.schema))
        df = (df.toDF(*cols) if cols else df).localCheckpoint(eager=True)
        cols = df.columns
        step_sql = None
        parts = []
        for _ in range(MAX_RECURSION_STEPS):
            if df.isEmpty():
                break
            parts.append(df)
            self.view(delta, df)
            self._rec_views.append(delta)
            if step_sql is None:  # rendered once: the step reads the previous step's rows as the view `delta`
                step_sql = render(rename_tables(step.copy(), {name: delta}).sql(dialect="duckdb"), self.schema)
            df = self.spark.sql(step_sql).toDF(*cols).localCheckpoint(eager=True)
        else:
            raise SparkRunError(f"WITH RECURSIVE {name}: still adding rows after {MAX_RECURSION_STEPS} steps")
        if not parts:  # an empty anchor: the recursive CTE is empty (its columns, no rows)
            return df
        out = parts[0]
        for p in parts[1:]:
            out = out.union(p)
        return out.localCheckpoint(eager=True)

    def insert_hits(self, df) -> None:
        from pyspark.sql.functions import col, lit

        have = set(df.columns)
        spark_types = {k: _duck_type_to_spark(v) for k, v in HIT_COLUMNS.items()}
        df = df.select([(col(k) if k in have else lit(None)).cast(t).alias(k) for k, t in spark_types.items()])
        # materialized once: store_findings reads the hits several times
        df = df.localCheckpoint(eager=True)
        hits = self.spark.table(engine.HITS).unionByName(df)
        self.view(engine.HITS, hits.localCheckpoint(eager=True))


def spark_session(
    master: str | None = "local[2]", driver_memory: str = "2g", shuffle_partitions: int = 4, app: str = "medaudit"
):
    """A SparkSession with the settings the runner relies on (UTC session time zone, ANSI off)."""
    try:
        from pyspark.sql import SparkSession
    except ImportError as e:
        raise SparkRunError("pyspark is not installed: pip install 'medaudit[spark]'") from e
    b = (
        SparkSession.builder.appName(app)
        .config("spark.sql.session.timeZone", "UTC")
        .config("spark.sql.shuffle.partitions", str(shuffle_partitions))
        .config("spark.sql.ansi.enabled", "false")
        # constraint propagation (an optimisation: filters inferred from the plan) failed on the
        # union of the checkpointed hits once peer_outlier's hits joined them (Spark 3.5:
        # NoSuchElementException "key not found: rule_key#..." in Union.rewriteConstraints)
        .config("spark.sql.constraintPropagation.enabled", "false")
        # decimals typed as DuckDB types them: a product keeps its scale (precision capped at
        # 38) instead of Spark's default of cutting the scale to 6 when the precision would pass
        # 38 (inventory_mismatch's excess units x an exact average price of 12 decimals gave
        # 15.736842 for 15.736842105263 on a 1M batch; the cents agreed, the line claims did not)
        .config("spark.sql.decimalOperations.allowPrecisionLoss", "false")
        .config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")
    )
    if master:
        b = b.master(master).config("spark.driver.memory", driver_memory)
        if master.startswith("local"):
            # the local workers run this interpreter (its packages: medaudit for the xdiv
            # function), not whatever python3 is first on PATH (pyspark reads PYSPARK_PYTHON only)
            import os
            import sys

            os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    return b.getOrCreate()


def refusals(rules) -> dict[str, list[str]]:
    """type -> ids of the given rules whose type cannot run on Spark."""
    out: dict[str, list[str]] = {}
    for r in rules:
        if r.type in REFUSED:
            out.setdefault(r.type, []).append(r.id)
    return out


@dataclass
class SparkResult:
    n_lines: int
    n_rules: int
    n_hits: int
    n_findings: int
    n_finding_lines: int
    refused: dict[str, list[str]]
    seconds_by_type: dict[str, float] = field(default_factory=dict)
    seconds_total: float = 0.0


def _register_udfs(spark) -> None:
    from decimal import Decimal

    from pyspark.sql.types import DecimalType

    from ..semantics import xdiv

    def _xdiv(a, b):
        r = xdiv(None if a is None else Decimal(a), None if b is None else Decimal(b))
        return r

    spark.udf.register("xdiv", _xdiv, DecimalType(38, 12))


def screen_parquet(
    spark, root: Path, library: Library, out: Path, stage: str = "post_hoc", skip_refused: bool = False, on_type=None
) -> SparkResult:
    """Screen the Parquet batch under ``root`` with the library's rules on Spark; write the
    findings and finding lines under ``out``. Rules of :data:`REFUSED` types stop the run
    (naming them) unless ``skip_refused``, which leaves them out and records which."""
    t0 = time.perf_counter()
    root, out = Path(root), Path(out)
    missing = [t for t in TABLES if not (root / t).is_dir()]
    if missing:
        raise SparkRunError(
            f"{root}: not a Parquet batch: no folder for {', '.join(missing)} "
            f"(expected one folder per table: {', '.join(TABLES)})"
        )
    rules = [r for r in library.rules if stage in r.stages]
    refused = refusals(rules)
    if refused and not skip_refused:
        raise SparkRunError(
            "rules of types that cannot run on Spark: "
            + "; ".join(f"{t} ({REFUSED[t]}): {', '.join(ids)}" for t, ids in sorted(refused.items()))
        )
    rules = [r for r in rules if r.type not in refused]
    duck = duckdb.connect(":memory:")
    dbm.install_macros(duck)
    con = SparkCon(spark, duck)
    _register_udfs(spark)
    from pyspark.sql.functions import broadcast

    for t in TABLES:
        df = spark.read.parquet(str(root / t))
        # knowledge tables are broadcast; the claim tables are large
        con.view(t, broadcast(df) if t in ("hilist", "psn_death", "purchases", "code_names") else df)
    n_lines = engine.prepare_lines(con, stage)
    by_type = engine.register_rules(con, rules, distinct_bodies=True)
    for name in (engine.RULES, engine.FAN, *(f"p_{t}" for t in by_type)):
        if name not in con.rule_tables:
            con._push_rule_table(name)
    engine.create_hits(con)
    timings: dict[str, float] = {}
    for i, tname in enumerate(sorted(by_type)):
        if on_type:
            on_type(tname, i, len(by_type))
        t1 = time.perf_counter()
        try:
            engine.run_type(con, REGISTRY[tname])
        except Exception as e:  # a rendering this module does not know, or Spark refusing the query
            raise SparkRunError(
                f"rule type {tname} does not run on Spark ({', '.join(r.id for r in by_type[tname])}): "
                f"{str(e).splitlines()[0] if str(e).strip() else repr(e)}"
            ) from e

        timings[tname] = time.perf_counter() - t1
    n_hits = con.spark.sql(
        f"SELECT count(*) + (SELECT count(*) FROM {engine.HITS} h JOIN {engine.FAN} f ON f.rep_key = h.rule_key) FROM {engine.HITS}"
    ).collect()[0][0]
    con.execute(engine.findings_sql(stage, 0))
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    findings = spark.table("new_finding_rows").drop("first_run", "last_run", "__rule_key")
    lines = spark.table("new_finding_lines")
    import pyarrow.parquet as pq

    # the run's rules (what the hospital loop reads when the findings are loaded: a new rule
    # version supersedes the old open findings)
    (out / "rules").mkdir()
    pq.write_table(duck.sql(f"SELECT * FROM {engine.RULES}").to_arrow_table(), out / "rules" / "part-0.parquet")
    findings.write.parquet(str(out / "findings"))
    lines.write.parquet(str(out / "finding_lines"))
    n_f, n_fl = findings.count(), lines.count()
    res = SparkResult(n_lines, len(rules), n_hits, n_f, n_fl, refused, timings, time.perf_counter() - t0)
    (out / "run.json").write_text(
        json.dumps(
            {
                "stage": stage,
                "library_digest": library.digest(),
                "n_rules": len(rules),
                "n_lines": n_lines,
                "n_hits": n_hits,
                "n_findings": n_f,
                "n_finding_lines": n_fl,
                "refused": refused,
                "written_at": dt.datetime.now().isoformat(timespec="seconds"),
            },
            ensure_ascii=False,
            indent=1,
        )
    )
    return res


def export_parquet(con: duckdb.DuckDBPyConnection, root: Path) -> dict[str, int]:
    """Write the loaded tables of a DuckDB file in the Parquet layout (one folder per table,
    ``<root>/<table>/part-0.parquet``, the DuckDB columns and types), streamed in record batches."""
    import pyarrow.parquet as pq

    root = Path(root)
    counts = {}
    for t in TABLES:
        d = root / t
        d.mkdir(parents=True, exist_ok=True)
        for old in d.glob("*.parquet"):
            old.unlink()
        reader = con.sql(f"SELECT * FROM {dbm.ident(t)}").to_arrow_reader(500_000)
        n = 0
        with pq.ParquetWriter(d / "part-0.parquet", reader.schema) as w:
            for b in reader:
                w.write_batch(b)
                n += b.num_rows
        counts[t] = n
    return counts


def load_findings(con: duckdb.DuckDBPyConnection, folder: Path) -> tuple[int, int, int]:
    """Bring a Spark run's findings (``folder``: what :func:`screen_parquet` wrote) into a DuckDB
    file as one screening run: new findings and their lines are inserted, known ones (same id)
    only touched, the hospital loop's state rows created and the money settled, all in one
    transaction. Returns (run id, findings read, new findings)."""
    folder = Path(folder)
    meta_file = folder / "run.json"
    if not meta_file.is_file() or not all((folder / d).is_dir() for d in ("findings", "finding_lines", "rules")):
        raise SparkRunError(
            f"{folder}: not the output of a Spark run (run.json, findings/, finding_lines/, rules/ expected)"
        )
    try:
        meta = json.loads(meta_file.read_text())
        stage = meta["stage"]
        if stage not in ("post_hoc", "in_process"):
            raise ValueError(f"stage {stage!r}")
    except (ValueError, KeyError) as e:
        raise SparkRunError(f"{meta_file}: unreadable run description ({e})") from e
    from ..hospital_loop import lifecycle
    from .. import money

    f_glob, l_glob = str(folder / "findings" / "*.parquet"), str(folder / "finding_lines" / "*.parquet")
    con.execute("BEGIN TRANSACTION")
    try:
        run_id = con.execute("SELECT coalesce(max(run_id), 0) + 1 FROM screen_runs").fetchall()[0][0]
        con.execute(
            "CREATE OR REPLACE TEMP TABLE new_findings AS SELECT *, CAST(? AS INTEGER) AS first_run, "
            "CAST(? AS INTEGER) AS last_run FROM read_parquet(?)",
            [run_id, run_id, f_glob],
        )
        con.execute("CREATE OR REPLACE TEMP TABLE new_finding_lines AS SELECT * FROM read_parquet(?)", [l_glob])
        con.execute(
            f"CREATE OR REPLACE TEMP TABLE {engine.RULES} AS SELECT * FROM read_parquet(?)",
            [str(folder / "rules" / "*.parquet")],
        )
        n_read = con.execute("SELECT count(*) FROM new_findings").fetchall()[0][0]
        n_new = con.execute(
            "SELECT count(*) FROM new_findings WHERE finding_id NOT IN (SELECT finding_id FROM findings)"
        ).fetchall()[0][0]
        con.execute(
            """
            UPDATE findings SET last_run = ? WHERE finding_id IN (SELECT finding_id FROM new_findings);
            """,
            [run_id],
        )
        con.execute(
            """
            INSERT INTO finding_lines BY NAME SELECT * FROM new_finding_lines
                WHERE finding_id NOT IN (SELECT finding_id FROM findings);
            INSERT INTO findings BY NAME SELECT * FROM new_findings
                WHERE finding_id NOT IN (SELECT finding_id FROM findings);
            """
        )
        lifecycle.on_screened(con, stage, run_id)
        from ..supervision import tips

        tips.link_run(con, run_id)  # findings on visits a tip names
        money.settle_deductions(con)
        con.execute(
            "INSERT INTO screen_runs VALUES (?, ?, now()::TIMESTAMP, now()::TIMESTAMP, ?, ?, ?, ?)",
            [run_id, stage, meta.get("library_digest"), meta.get("n_rules"), meta.get("n_hits"), n_new],
        )
        con.execute("COMMIT")
    except Exception:
        con.execute("ROLLBACK")
        raise
    return run_id, n_read, n_new
