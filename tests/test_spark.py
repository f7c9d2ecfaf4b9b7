"""Screening on Apache Spark (local mode) equals DuckDB: same findings, ids, claims, evidence and
money to the cent, for every rule type of the sample library that Spark runs; the others are
refused by name. Needs pyspark, sqlglot and a Java runtime (``pip install -e '.[test,spark]'``)."""

from __future__ import annotations

from decimal import Decimal

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
#: the national knowledge workbooks (not in the repo): their rules join the Spark comparison when present
NHSA = ROOT.parent / "shared" / "reference" / "nhsa-rule-batches"
HAVE_NHSA = NHSA.is_dir() and len(list(NHSA.glob("*.xlsx"))) >= 14
NO_NHSA = f"the national knowledge workbooks are not at {NHSA} (not part of the repo): national rules left out"
#: peer_outlier rules small enough for the test batch's few visits per doctor and month (the sample
#: library's R-PEER-001 needs 30 stays a month): every metric, entity and peer group, with its
#: evidence format (元, 天, %), and percentiles that are not whole
PEER_RULES = """
rules:
  - {id: T-PEER-DRUG, version: 1, name: drug share, type: peer_outlier,
     params: {entity: doctor, metric: drug_share, peer_by: none, percentile: 75, min_visits: 2}}
  - {id: T-PEER-CONS, version: 1, name: consumables, type: peer_outlier,
     params: {entity: department, metric: consumable_share, peer_by: level, percentile: 60, min_visits: 2}}
  - {id: T-PEER-EXLAB, version: 1, name: exams and labs, type: peer_outlier,
     params: {entity: institution, metric: exam_lab_share, peer_by: none, percentile: 50, min_visits: 1}}
  - {id: T-PEER-CPV, version: 1, name: cost per visit, type: peer_outlier,
     params: {entity: doctor, metric: cost_per_visit, peer_by: department, percentile: 50, min_visits: 1}}
  - {id: T-PEER-LOS, version: 1, name: length of stay, type: peer_outlier,
     params: {entity: institution, metric: los, peer_by: none, percentile: 62.5, min_visits: 1}}
  - {id: T-PEER-READM, version: 1, name: readmissions, type: peer_outlier,
     params: {entity: department, metric: readmission_rate, peer_by: none, percentile: 50, min_visits: 1}}
"""


def spark_library(tmp: Path, national: Path | None) -> Library:
    """The sample library, the peer rules above and (when its workbooks are there) the national
    library as ``medaudit rules import-nhsa`` writes it: the folder ``national`` it was imported
    to (conftest.py's ``nhsa_imported``)."""
    (tmp / "peer").mkdir()
    (tmp / "peer" / "peer.yaml").write_text(PEER_RULES)
    rules = load_library(ROOT / "rules").rules + load_library(tmp / "peer").rules
    if national is not None:
        rules += load_library(national).rules
    return Library(rules, ROOT / "rules")


def national_folder(request) -> Path | None:
    """The imported national library's folder when its workbooks are here (else None)."""
    return request.getfixturevalue("nhsa_imported")[0] if HAVE_NHSA else None


HAVE_SPARK = importlib.util.find_spec("pyspark") is not None and importlib.util.find_spec("sqlglot") is not None
HAVE_JAVA = shutil.which("java") is not None
needs_spark = pytest.mark.skipif(
    not (HAVE_SPARK and HAVE_JAVA),
    reason="Spark tests need pyspark and sqlglot (pip install -e '.[test,spark]') and a Java runtime "
    f"(pyspark/sqlglot {'found' if HAVE_SPARK else 'missing'}, java {'found' if HAVE_JAVA else 'missing'})",
)

FINDING_COLS = (
    "finding_id",
    "rule_id",
    "rule_version",
    "rule_type",
    "stage",
    "severity",
    "fixmedins_code",
    "dept_code",
    "dr_code",
    "psn_no",
    "mdtrt_id",
    "setl_id",
    "period",
    "finding_key",
    "flagged_amt",
    "claimed_amt",
    "deduction_amt",
    "evidence",
    "status",
)
LINE_COLS = ("finding_id", "bkkp_sn", "role", "line_amt", "claim", "carried", "excess_units")


def _rows(con, table: str, cols) -> list[tuple]:
    return con.execute(f"SELECT {', '.join(cols)} FROM {table} ORDER BY ALL").fetchall()


@pytest.fixture(scope="module")
def screened(tmp_path_factory, request):
    """One generated batch loaded twice: screened by DuckDB in one file, by Spark (from its
    Parquet export) into the other."""
    from medaudit.spark import runner

    tmp = tmp_path_factory.mktemp("spark")
    generate(tmp / "batch", lines=3000, seed=3, fmt="parquet")
    full = spark_library(tmp, national_folder(request))
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


#: the types Spark runs since their shared queries were made portable (issue 16, second and third
#: slices): each must have findings on the generated batch, so the equality below is not an empty one
NEWLY_RUNNABLE = {
    "price_cap",
    "secondary_procedure",
    "readmission",
    "companion_required",
    "outpatient_as_inpatient",
    "overtreatment",
    "peer_outlier",
    "period_limit",
}


@pytest.mark.skipif(not HAVE_SPARK, reason="needs sqlglot and pyspark (pip install -e '.[test,spark]')")
def test_only_sql_is_refused():
    from medaudit.spark import runner

    assert set(runner.REFUSED) == {"sql"}
    assert not NEWLY_RUNNABLE & set(runner.REFUSED)


@needs_spark
@pytest.mark.slow
def test_spark_findings_equal_duckdb_to_the_cent(screened):
    """One test, not two: under xdist each worker would build the module fixture (two Spark
    sessions at once on two cores); the second load is checked at the end."""
    from medaudit.spark import runner

    duck, sp, res, library, (n_read, n_new), tmp = screened
    types = {r.type for r in library.rules}
    found = {t for (t,) in duck.execute("SELECT DISTINCT rule_type FROM findings").fetchall()}
    # the batch exercises every type of the library that Spark runs
    assert NEWLY_RUNNABLE <= types
    assert types - found == set(), sorted(types - found)
    assert n_read == n_new == duck.execute("SELECT count(*) FROM findings").fetchall()[0][0]
    for t in sorted(types):
        d = duck.execute(
            f"SELECT {', '.join(FINDING_COLS)} FROM findings WHERE rule_type = ? ORDER BY ALL", [t]
        ).fetchall()
        s = sp.execute(
            f"SELECT {', '.join(FINDING_COLS)} FROM findings WHERE rule_type = ? ORDER BY ALL", [t]
        ).fetchall()
        assert s == d, t
    assert _rows(sp, "finding_lines", LINE_COLS) == _rows(duck, "finding_lines", LINE_COLS)
    assert res.refused == runner.refusals(load_library(ROOT / "rules").rules) and "sql" in res.refused
    assert set(res.refused) == set(runner.REFUSED)
    # every peer rule (each metric, entity and evidence format) has findings, on both sides equal
    peer = {
        r for (r,) in duck.execute("SELECT DISTINCT rule_id FROM findings WHERE rule_id LIKE 'T-PEER-%'").fetchall()
    }
    assert peer == {"T-PEER-DRUG", "T-PEER-CONS", "T-PEER-EXLAB", "T-PEER-CPV", "T-PEER-LOS", "T-PEER-READM"}
    if HAVE_NHSA:
        assert any(r.id.startswith("NHSA-") for r in library.rules)

    # load-findings again: nothing new
    before = _rows(sp, "findings", FINDING_COLS), _rows(sp, "finding_lines", LINE_COLS)
    _run, n_read, n_new = runner.load_findings(sp, tmp / "out")
    assert n_read > 0 and n_new == 0
    assert (_rows(sp, "findings", FINDING_COLS), _rows(sp, "finding_lines", LINE_COLS)) == before


@pytest.mark.skipif(not HAVE_NHSA, reason=NO_NHSA)
def test_the_national_library_is_in_the_spark_comparison(tmp_path, nhsa_imported):
    """The Spark equality above screens the national library too (when its workbooks are here):
    every one of its rules, none of a refused type."""
    lib = spark_library(tmp_path, nhsa_imported[0])
    national = [r for r in lib.rules if r.id.startswith("NHSA-")]
    assert len(national) >= 14
    from medaudit.spark import runner

    assert not runner.refusals(national)


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


@pytest.mark.skipif(not HAVE_SPARK, reason="needs sqlglot and pyspark (pip install -e '.[test,spark]')")
def test_list_indices_keep_their_place_in_spark():
    """DuckDB's ``v[i]`` is 1-based: rendered as Spark's 1-based ``element_at`` with the same index,
    whatever the index expression (sqlglot shifted only ``int + literal`` indices, so
    ``v[least(i + 2, n)]`` read the next element and overtreatment's percentile came out wrong)."""
    from medaudit.spark.dialect import render

    got = render(
        "SELECT v[least(CAST(n AS INTEGER) + 2, m)] AS a, v[CAST(n AS INTEGER) + 1] AS b, v[k] AS c, "
        "v[1] AS d, s['f'] AS e FROM t",
        {},
    )
    assert got == (
        "SELECT ELEMENT_AT(`v`, CAST(LEAST(CAST(`n` AS INT) + 2, `m`) AS INT)) AS `a`, "
        "ELEMENT_AT(`v`, CAST(CAST(`n` AS INT) + 1 AS INT)) AS `b`, ELEMENT_AT(`v`, CAST(`k` AS INT)) AS `c`, "
        "ELEMENT_AT(`v`, CAST(1 AS INT)) AS `d`, `s`['f'] AS `e` FROM `t`"
    )


@pytest.mark.skipif(not HAVE_SPARK, reason="needs sqlglot and pyspark (pip install -e '.[test,spark]')")
def test_list_functions_spark_lacks_are_rendered_or_refused():
    from medaudit.spark.dialect import NotPortable, render

    got = render("SELECT count(DISTINCT h) OVER (PARTITION BY a) AS n, list_has_all(x, y) AS ok FROM t", {})
    assert "SIZE(COLLECT_SET(`h`) OVER (PARTITION BY `a`))" in got
    assert "SIZE(ARRAY_EXCEPT(FILTER(`y`, `x__` -> NOT `x__` IS NULL), `x`)) = 0" in got
    with pytest.raises(NotPortable, match="ordered window"):
        render("SELECT count(DISTINCT h) OVER (PARTITION BY a ORDER BY b) FROM t", {})


@pytest.mark.skipif(not HAVE_SPARK, reason="needs sqlglot and pyspark (pip install -e '.[test,spark]')")
def test_list_slices_keep_duckdb_ends_in_spark():
    """``list_slice(l, a, b)``: 1-based, both ends included, negative from the end (period_limit
    keeps its last max_count paid units with ``list_slice(l, -k, -1)``); Spark's ``slice`` takes a
    length, so the ends are resolved against ``size(l)`` (sqlglot passed the end as the length)."""
    from medaudit.spark.dialect import render

    got = render("SELECT list_slice(l, -k, -1) AS a FROM t", {})
    assert "SLICE(`l`, GREATEST(CASE WHEN (-`k`) < 0 THEN SIZE(`l`) + (-`k`) + 1 ELSE (-`k`) END, 1)" in got
    assert "LEAST(CASE WHEN (-1) < 0 THEN SIZE(`l`) + (-1) + 1 ELSE (-1) END, SIZE(`l`))" in got


@needs_spark
@pytest.mark.slow
def test_a_recursive_query_is_iterated_on_spark_as_duckdb_runs_it():
    """Spark SQL has no recursion: the runner runs the anchor, then the step over the rows the
    previous step added until it adds none (period_limit's walk), and an empty anchor gives an
    empty result (a batch where no unit can be excess) rather than an error."""
    import duckdb

    from medaudit.spark import runner

    con = runner.SparkCon(runner.spark_session(), duckdb.connect())
    for anchor in ("SELECT 1 AS n, 'a' AS s", "SELECT 1 AS n, 'a' AS s WHERE 1 = 0"):
        sql = (
            f"WITH RECURSIVE base AS (SELECT 3 AS lim), r(n, s) AS ({anchor} UNION ALL "
            "SELECT r.n + 1, r.s || 'b' FROM r JOIN base ON r.n < base.lim) "
            "SELECT n, s FROM r ORDER BY n"
        )
        want = duckdb.sql(sql).fetchall()
        assert con.execute(sql).fetchall() == want
        assert want in ([(1, "a"), (2, "ab"), (3, "abb")], [])


@needs_spark
@pytest.mark.slow
def test_decimal_products_keep_their_scale_on_spark():
    """A price of 12 decimals (an exact average, ``xdiv``) times units, and the fund share of it,
    come out of Spark with every decimal DuckDB keeps (Spark's default cut the scale to 6)."""
    import duckdb

    from medaudit import semantics
    from medaudit.spark import runner

    spark = runner.spark_session()
    runner._register_udfs(spark)
    con = runner.SparkCon(spark, duckdb.connect())
    sql = (
        "WITH x AS (SELECT CAST(1.0000 AS DECIMAL(18,4)) AS units, CAST(15.736842105263 AS DECIMAL(38,12)) AS pric, "
        "CAST(10.5000 AS DECIMAL(18,4)) AS deductible, CAST(15.9000 AS DECIMAL(18,4)) AS amt) "
        "SELECT CAST(units * pric AS DECIMAL(38,12)) AS over, "
        f"{semantics.fund_share_claim.sql('units * pric', 'deductible', 'amt')} AS claim FROM x"
    )
    ddb = duckdb.connect()
    db.install_macros(ddb)
    want = ddb.execute(sql).fetchall()
    assert want[0][0] == Decimal("15.736842105263")
    assert con.execute(sql).fetchall() == want
