"""Split one batch into the day-by-day batches a bureau receives (for nightly-run tests and benchmarks).

Each row goes to the batch of the day it would arrive: a visit on its admission day; a fee line
on its fee day (never before its visit; a refund never before the line it refunds); a
settlement on its settlement day; diagnoses and procedures with the visit's settlement; a
death on the death date; a month's purchase records at the month's end; the catalogue first.
``late_share`` of the visits (chosen with ``seed``) arrive ``late_days`` later, all their rows
together, as late submissions do. Batches are cut at the given days: batch k holds the rows
arriving on or after ``cuts[k-1]`` and before ``cuts[k]`` (the first batch everything before
``cuts[0]``, the last everything from the last cut on).

The split runs in DuckDB within a memory limit (spilling to a folder under ``out``), so a
batch of tens of millions of lines is cut without being held in memory; rows keep their
columns and values (text from CSV, the file's types from Parquet), not their order.
"""

from __future__ import annotations

import datetime as dt
import random
import shutil
from pathlib import Path

import duckdb
import pyarrow as pa

#: the tables a batch may hold, in the order they are read
TABLES = (
    "mdtrt_d",
    "fee_list_d",
    "setl_d",
    "setl_list_diag_d",
    "setl_list_oprn_d",
    "psn_death",
    "purchases",
    "hilist",
)


def _day(col: str) -> str:
    """The date of a column's first ten characters (NULL when they are not one)."""
    return f"TRY_CAST(substr(CAST({col} AS VARCHAR), 1, 10) AS DATE)"


def _source(con: duckdb.DuckDBPyConnection, src: Path, name: str) -> bool:
    """Register the table ``name`` of the batch as view ``raw_<name>``; False when absent."""
    p = src / f"{name}.csv"
    if p.exists():
        rel = con.read_csv(str(p), header=True, all_varchar=True)
    elif (src / f"{name}.parquet").exists():
        rel = con.read_parquet(str(src / f"{name}.parquet"))
    else:
        return False
    rel.create_view(f"raw_{name}")
    return True


def split_batch(
    src: Path,
    out: Path,
    cuts: list[dt.date],
    late_share: float = 0.0,
    late_days: int = 10,
    seed: int = 0,
    fmt: str = "csv",
    memory_limit: str = "4GB",
    keep_last: bool = True,
) -> list[Path]:
    """Write ``len(cuts) + 1`` batch folders ``out/day_00`` ... (``fmt`` csv or parquet) and
    return them (empty ones included). ``keep_last=False``: the rows arriving from the last cut
    on are left out (``len(cuts)`` folders), for a benchmark that needs only what comes before."""
    if fmt not in ("csv", "parquet"):
        raise ValueError(f"format must be csv or parquet, got {fmt!r}")
    src, out = Path(src), Path(out)
    out.mkdir(parents=True, exist_ok=True)
    spill = out / ".split-spill"
    con = duckdb.connect()
    try:
        con.execute("SET memory_limit = ?", [memory_limit])
        con.execute("SET temp_directory = ?", [str(spill)])
        # rows keep no order (see the module doc): a partitioned write that kept it held a
        # 10M-line CSV batch's rows in memory past a 4 GB limit
        con.execute("SET preserve_insertion_order = false")
        # joins as written, the small table built, the batch's rows probing it: DuckDB guesses a
        # CSV file holds a few dozen rows and built its hash table on a 10M-line fee_list_d.csv
        con.execute("SET disabled_optimizers = 'join_order,build_side_probe_side'")
        return _split(con, src, out, sorted(cuts), late_share, late_days, seed, fmt, keep_last)
    finally:
        con.close()
        shutil.rmtree(spill, ignore_errors=True)


def _split(con, src: Path, out: Path, cuts, late_share, late_days, seed, fmt, keep_last) -> list[Path]:
    present = [name for name in TABLES if _source(con, src, name)]
    if "mdtrt_d" not in present:
        raise FileNotFoundError(f"{src}: no mdtrt_d.csv or mdtrt_d.parquet")
    # the late visits: drawn in the file's order, one draw per visit row
    late: list[str] = []
    if late_share > 0:
        rng = random.Random(seed)
        ids = con.sql("SELECT CAST(mdtrt_id AS VARCHAR) FROM raw_mdtrt_d").fetchall()
        late = [v for (v,) in ids if rng.random() < late_share]
    con.register("late_ids", pa.table({"mdtrt_id": pa.array(late, pa.string())}))
    con.execute("CREATE TEMP TABLE late AS SELECT DISTINCT mdtrt_id FROM late_ids")
    con.execute(
        f"""CREATE TEMP TABLE t_mdtrt_d AS
            SELECT r.*, {_day("r.begntime")} + CASE WHEN l.mdtrt_id IS NULL THEN 0 ELSE ? END AS __arrive
            FROM raw_mdtrt_d r LEFT JOIN late l ON CAST(r.mdtrt_id AS VARCHAR) = l.mdtrt_id""",
        [late_days],
    )
    con.execute(
        """CREATE TEMP TABLE vday AS
           SELECT CAST(v.mdtrt_id AS VARCHAR) AS mdtrt_id, v.__arrive AS vday, l.mdtrt_id IS NOT NULL AS late
           FROM t_mdtrt_d v LEFT JOIN late l ON CAST(v.mdtrt_id AS VARCHAR) = l.mdtrt_id"""
    )
    # a visit id twice in mdtrt_d joins each of its rows twice, as a join of the tables would
    delay = f"CASE WHEN v.late THEN {int(late_days)} ELSE 0 END"
    if "fee_list_d" in present:
        own = f"greatest({_day('r.fee_ocur_time')} + {delay}, v.vday)"
        # a refund arrives no earlier than the line it refunds: the refunded lines' own days
        con.execute(
            f"""CREATE TEMP TABLE refunded AS
                SELECT CAST(r.bkkp_sn AS VARCHAR) AS sn, {own} AS oday
                FROM raw_fee_list_d r LEFT JOIN vday v ON CAST(r.mdtrt_id AS VARCHAR) = v.mdtrt_id
                WHERE CAST(r.bkkp_sn AS VARCHAR) IN (SELECT CAST(init_feedetl_sn AS VARCHAR) FROM raw_fee_list_d)"""
        )
        # a view: the lines are read once more when written, not held
        con.execute(
            f"""CREATE TEMP VIEW t_fee_list_d AS
                SELECT r.*, greatest({own}, o.oday) AS __arrive
                FROM raw_fee_list_d r LEFT JOIN vday v ON CAST(r.mdtrt_id AS VARCHAR) = v.mdtrt_id
                LEFT JOIN refunded o ON CAST(r.init_feedetl_sn AS VARCHAR) = o.sn"""
        )
    if "setl_d" in present:
        con.execute(
            f"""CREATE TEMP TABLE t_setl_d AS
                SELECT r.*, greatest({_day("r.setl_time")} + {delay}, v.vday) AS __arrive
                FROM raw_setl_d r LEFT JOIN vday v ON CAST(r.mdtrt_id AS VARCHAR) = v.mdtrt_id"""
        )
        con.execute(
            """CREATE TEMP TABLE sday AS
               SELECT CAST(mdtrt_id AS VARCHAR) AS mdtrt_id, max(__arrive) AS sday FROM t_setl_d GROUP BY 1"""
        )
    settled = "s.sday" if "setl_d" in present else "NULL"
    for name in ("setl_list_diag_d", "setl_list_oprn_d"):
        if name in present:
            con.sql(
                f"""CREATE TEMP TABLE t_{name} AS
                    SELECT r.*, coalesce({settled}, v.vday) AS __arrive
                    FROM raw_{name} r LEFT JOIN vday v ON CAST(r.mdtrt_id AS VARCHAR) = v.mdtrt_id
                    {"LEFT JOIN sday s ON CAST(r.mdtrt_id AS VARCHAR) = s.mdtrt_id" if "setl_d" in present else ""}"""
            )
    if "psn_death" in present:
        con.sql(f"CREATE TEMP TABLE t_psn_death AS SELECT *, {_day('die_date')} AS __arrive FROM raw_psn_death")
    if "purchases" in present:
        con.sql(
            """CREATE TEMP TABLE t_purchases AS
               SELECT *, last_day(TRY_CAST(CAST(period AS VARCHAR) || '-01' AS DATE)) AS __arrive FROM raw_purchases"""
        )
    if "hilist" in present:
        con.sql("CREATE TEMP TABLE t_hilist AS SELECT *, CAST(NULL AS DATE) AS __arrive FROM raw_hilist")

    # batch k: arriving on or after cuts[k-1] and before cuts[k]; no arrival day: the first batch
    batch = "len(list_filter(?, lambda c: c <= coalesce(__arrive, DATE '0001-01-01')))"
    last = len(cuts) + (1 if keep_last else 0)
    folders = [out / f"day_{k:02d}" for k in range(last)]
    for f in folders:
        f.mkdir(parents=True, exist_ok=True)
    parts = out / ".split-parts"
    for name in present:
        # one pass per table: every batch's rows written at once, a folder per batch
        rel = con.sql(
            f"SELECT * EXCLUDE (__arrive) FROM (SELECT *, {batch} AS __batch FROM t_{name}) WHERE __batch < ?",
            params=[cuts, last],
        )
        target = parts / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if fmt == "parquet":
            rel.write_parquet(str(target), partition_by=["__batch"])
        else:
            rel.write_csv(str(target), header=True, partition_by=["__batch"])
        for k, folder in enumerate(folders):
            files = sorted((target / f"__batch={k}").glob("*")) if (target / f"__batch={k}").exists() else []
            if len(files) > 1:
                raise RuntimeError(f"{name}: batch {k} written as {len(files)} files")
            if files:
                files[0].rename(folder / f"{name}.{fmt}")
    shutil.rmtree(parts, ignore_errors=True)
    return folders
