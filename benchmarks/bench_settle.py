"""Benchmark: what settling the money costs a nightly run as the findings behind it grow.

    .venv/bin/python benchmarks/bench_settle.py                          # 1M lines' findings x 1, 10, 100
    .venv/bin/python benchmarks/bench_settle.py --copies 1,30 --touched 5000,50000

A screening run settles who carries each line's money (:func:`medaudit.money.settle_deductions`).
A full re-screen settles every finding's lines; a nightly run settles only the lines its findings
touch (``touched=True``: the lines of the run's new and superseded findings, and every finding
holding one). This screens a generated batch once (cached under benchmarks/data/, like
``bench_screen.py``), then stands for a bureau's months of findings by copying the findings and
their lines k times under new ids and line numbers (each copy is settled like the original). For
each k it times the full settling and the touched settling of n lines drawn from the findings'
lines, and checks that they agree: the money of the touched lines and their findings is
scrambled first, and the touched settling must put back exactly what the full one puts back.
Results go to benchmarks/settle_results.json (one entry per lines/copies, replaced when re-run).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import bench_screen  # noqa: E402
from medaudit import db, money  # noqa: E402
from medaudit.engine import screen  # noqa: E402
from medaudit.loader import load_batch  # noqa: E402

#: the money a settling decides, in a form two settlings can be compared by
MONEY = """SELECT (SELECT sum(hash(finding_id, deduction_amt)) FROM findings),
                  (SELECT sum(deduction_amt) FROM findings),
                  (SELECT sum(hash(finding_id, bkkp_sn, carried)) FROM finding_lines)"""

SCRAMBLE = f"""
    UPDATE finding_lines SET carried = claim + 7 WHERE bkkp_sn IN (SELECT bkkp_sn FROM {money.TOUCHED_LINES});
    UPDATE findings SET deduction_amt = 999 WHERE finding_id IN (
        SELECT finding_id FROM finding_lines WHERE bkkp_sn IN (SELECT bkkp_sn FROM {money.TOUCHED_LINES}))"""


def timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return round(time.perf_counter() - t, 3)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lines", type=int, default=1_000_000, help="fee lines of the generated batch screened once")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--rules", type=Path, default=ROOT / "rules")
    ap.add_argument("--copies", default="1,10,100", help="comma-separated k: the findings held, k times the batch's")
    ap.add_argument("--touched", default="5000", help="comma-separated lines a night touches")
    ap.add_argument("--data", type=Path, default=ROOT / "benchmarks" / "data")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "settle_results.json")
    args = ap.parse_args(argv)
    copies = sorted({int(k) for k in args.copies.split(",")})
    touched = [int(n) for n in args.touched.split(",")]

    batch, _ = bench_screen.cached_batch(args.data, args.lines, args.seed, "parquet")
    work = Path(tempfile.mkdtemp(prefix="bench-settle-"))
    results = []
    try:
        con = db.connect(work / "settle.duckdb")
        load_batch(batch, con)
        res = screen(con, bench_screen.library(args.rules))
        print(f"screened {res.n_lines:,} lines: {res.n_new_findings:,} findings", flush=True)
        con.execute("CREATE TEMP TABLE f0 AS SELECT * FROM findings")
        con.execute("CREATE TEMP TABLE l0 AS SELECT * FROM finding_lines")
        con.execute("CREATE TEMP TABLE s0 AS SELECT * FROM finding_state")
        held = 1
        for k in copies:
            # copies held..k-1 at once: other finding ids and other lines, settled alike
            copy = f"range({held}, {max(held, k)}) AS r(c)"
            con.execute(
                f"INSERT INTO findings SELECT f0.* REPLACE (md5(finding_id || '#' || c) AS finding_id) FROM f0, {copy}"
            )
            con.execute(
                f"""INSERT INTO finding_lines SELECT l0.* REPLACE
                    (md5(finding_id || '#' || c) AS finding_id, bkkp_sn || '#' || c AS bkkp_sn) FROM l0, {copy}"""
            )
            con.execute(
                f"INSERT INTO finding_state SELECT s0.* REPLACE (md5(finding_id || '#' || c) AS finding_id) FROM s0, {copy}"
            )
            held = max(held, k)
            n_f = con.execute("SELECT count(*) FROM findings").fetchall()[0][0]
            n_l = con.execute("SELECT count(*) FROM finding_lines").fetchall()[0][0]
            full = [timed(lambda: money.settle_deductions(con)) for _ in range(2)]
            settled = con.execute(MONEY).fetchall()
            for n in touched:
                con.execute(
                    f"""CREATE OR REPLACE TEMP TABLE {money.TOUCHED_LINES} AS
                        SELECT DISTINCT bkkp_sn FROM finding_lines USING SAMPLE {int(n)} ROWS (reservoir, 7)"""
                )
                con.execute(SCRAMBLE)
                scrambled = con.execute(MONEY).fetchall()
                first = timed(lambda: money.settle_deductions(con, touched=True))
                same = con.execute(MONEY).fetchall() == settled
                again = timed(lambda: money.settle_deductions(con, touched=True))
                entry = {
                    "lines": res.n_lines,
                    "copies": k,
                    "findings": n_f,
                    "finding_lines": n_l,
                    "touched_lines": n,
                    "full_s": full,
                    "touched_s": [first, again],
                    "touched_equals_full": same and scrambled != settled,
                }
                print(json.dumps(entry), flush=True)
                if not entry["touched_equals_full"]:
                    print("the touched settling differs from the full one", file=sys.stderr)
                    return 1
                results.append(entry)
        con.close()
    finally:
        shutil.rmtree(work, ignore_errors=True)

    old = json.loads(args.out.read_text()) if args.out.exists() else []
    keys = {(r["lines"], r["copies"], r["touched_lines"]) for r in results}
    kept = [r for r in old if (r["lines"], r["copies"], r["touched_lines"]) not in keys]
    machine = {"cpus": os.cpu_count(), "python": platform.python_version(), "load_avg_end": os.getloadavg()}
    when = dt.datetime.now().isoformat(timespec="seconds")
    args.out.write_text(
        json.dumps(kept + [r | {"machine": machine, "measured_at": when} for r in results], indent=1) + "\n"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
