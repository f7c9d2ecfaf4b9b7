"""Screening on Apache Spark (local mode) equals DuckDB: same findings, ids, claims, evidence and
money to the cent, for every rule type of the sample library that Spark runs; the others are
refused by name. Needs pyspark, sqlglot and a Java runtime (``pip install -e '.[test,spark]'``)."""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

import pytest

from medaudit import db
from medaudit.engine import screen
from medaudit.library import Library, load_library
from medaudit.loader import load_batch
from medaudit.sample import generate

ROOT = Path(__file__).resolve().parents[1]
HAVE_SPARK = importlib.util.find_spec("pyspark") is not None and importlib.util.find_spec("sqlglot") is not None
HAVE_JAVA = shutil.which("java") is not None
needs_spark = pytest.mark.skipif(
    not (HAVE_SPARK and HAVE_JAVA),
    reason="Spark tests need pyspark and sqlglot (pip install -e '.[test,spark]') and a Java runtime "
           f"(pyspark/sqlglot {'found' if HAVE_SPARK else 'missing'}, java {'found' if HAVE_JAVA else 'missing'})")

FINDING_COLS = ("finding_id", "rule_id", "rule_version", "rule_type", "stage", "severity", "fixmedins_code", "dept_code",
                "dr_code", "psn_no", "mdtrt_id", "setl_id", "period", "finding_key", "flagged_amt", "claimed_amt",
                "deduction_amt", "evidence", "status")
LINE_COLS = ("finding_id", "bkkp_sn", "role", "line_amt", "claim", "carried", "excess_units")


def _rows(con, table: str, cols) -> list[tuple]:
    return con.execute(f"SELECT {', '.join(cols)} FROM {table} ORDER BY ALL").fetchall()


@pytest.fixture(scope="module")
def screened(tmp_path_factory):
    """One generated batch loaded twice: screened by DuckDB in one file, by Spark (from its
    Parquet export) into the other."""
    from medaudit.spark import runner

    tmp = tmp_path_factory.mktemp("spark")
    generate(tmp / "batch", lines=3000, seed=3, fmt="parquet")
    full = load_library(ROOT / "rules")
    library = Library([r for r in full.rules if r.type not in runner.REFUSED], full.root)
    duck = db.connect(tmp / "duck.duckdb")
    load_batch(tmp / "batch", duck)
    runner.export_parquet(duck, tmp / "pq")
    duck.close()
    shutil.copy(tmp / "duck.duckdb", tmp / "spark.duckdb")
    duck = db.connect(tmp / "duck.duckdb")
    screen(duck, library, scope=None)
    spark = runner.spark_session()
    res = runner.screen_parquet(spark, tmp / "pq", full, tmp / "out", skip_refused=True)
    sp = db.connect(tmp / "spark.duckdb")
    run_id, n_read, n_new = runner.load_findings(sp, tmp / "out")
    yield duck, sp, res, library, (n_read, n_new), tmp
    duck.close()
    sp.close()


@needs_spark
@pytest.mark.slow
def test_spark_findings_equal_duckdb_to_the_cent(screened):
    duck, sp, res, library, (n_read, n_new), _tmp = screened
    types = {r.type for r in library.rules}
    found = {t for (t,) in duck.execute("SELECT DISTINCT rule_type FROM findings").fetchall()}
    # the batch exercises every type of the library that Spark runs (profiling types may find nothing)
    assert len(found) >= len(types) - 2, sorted(types - found)
    assert n_read == n_new == duck.execute("SELECT count(*) FROM findings").fetchall()[0][0]
    for t in sorted(types):
        d = duck.execute(f"SELECT {', '.join(FINDING_COLS)} FROM findings WHERE rule_type = ? ORDER BY ALL", [t]).fetchall()
        s = sp.execute(f"SELECT {', '.join(FINDING_COLS)} FROM findings WHERE rule_type = ? ORDER BY ALL", [t]).fetchall()
        assert s == d, t
    assert _rows(sp, "finding_lines", LINE_COLS) == _rows(duck, "finding_lines", LINE_COLS)
    from medaudit.spark import runner

    assert res.refused == runner.refusals(load_library(ROOT / "rules").rules) and "sql" in res.refused


@needs_spark
@pytest.mark.slow
def test_load_findings_again_adds_nothing(screened):
    from medaudit.spark import runner

    _duck, sp, _res, _lib, _n, tmp = screened
    before = _rows(sp, "findings", FINDING_COLS), _rows(sp, "finding_lines", LINE_COLS)
    _run, n_read, n_new = runner.load_findings(sp, tmp / "out")
    assert n_read > 0 and n_new == 0
    assert (_rows(sp, "findings", FINDING_COLS), _rows(sp, "finding_lines", LINE_COLS)) == before


@pytest.mark.skipif(not HAVE_SPARK, reason="needs sqlglot and pyspark (pip install -e '.[test,spark]')")
def test_types_spark_cannot_run_are_refused_by_name(tmp_path):
    from medaudit.spark import runner

    for t in runner.TABLES:
        (tmp_path / t).mkdir()
    lib = load_library(ROOT / "rules")
    with pytest.raises(runner.SparkRunError) as e:
        runner.screen_parquet(None, tmp_path, lib, tmp_path / "out")
    sql_ids = [r.id for r in lib.rules if r.type == "sql"]
    assert sql_ids and "sql (" in str(e.value) and all(i in str(e.value) for i in sql_ids)
    assert not (tmp_path / "out").exists()


@pytest.mark.skipif(not HAVE_SPARK, reason="needs sqlglot and pyspark (pip install -e '.[test,spark]')")
def test_a_folder_that_is_not_a_parquet_batch_is_refused(tmp_path):
    from medaudit.spark import runner

    (tmp_path / "fee_list_d").mkdir()
    with pytest.raises(runner.SparkRunError, match="no folder for mdtrt_d"):
        runner.screen_parquet(None, tmp_path, load_library(ROOT / "rules"), tmp_path / "out")
