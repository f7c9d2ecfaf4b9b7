"""Benchmark: a night's screen of one day's batch against months of history (issue 15, item 0).

    .venv/bin/python benchmarks/bench_nightly.py                         # 3M generated lines, 90 days of history
    .venv/bin/python benchmarks/bench_nightly.py --lines 3000000 --history-days 90,180

A generated batch (CSV, cached under benchmarks/data/) is cut by arrival day
(medaudit/sample/split.py): the first ``H`` days are the history, the next day is the night's
batch. For each ``H``:

1. the history is loaded and screened whole (``screen --all``): the database a bureau has;
2. two copies of it load the night's batch; one screens it as a nightly job does (``screen``,
   what the new batch touches with the history its rules need), the other screens everything
   again (``screen --all``);
3. the two copies' findings are compared (ids, status, claimed and deducted sums, lines and
   what each carries): the night must equal the full re-screen, or the run fails.

Each step runs as its own process (``python -m medaudit``), so its wall time, CPU time and peak
memory are its own. Results go to benchmarks/nightly_results.json (one entry per lines/history,
replaced when re-run), with the machine's load average.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from medaudit.sample import generate  # noqa: E402
from medaudit.sample.split import split_batch  # noqa: E402


_CHILD = """
import atexit, os, runpy, sys
atexit.register(lambda: open(os.environ["PEAK_FILE"], "w").write(open("/proc/self/status").read()))
sys.argv = ["medaudit", *sys.argv[1:]]
runpy.run_module("medaudit", run_name="__main__")
"""


def run_measured(args: list[str], label: str) -> dict:
    """Run ``python -m medaudit ARGS`` as a child: its wall and CPU seconds and peak RSS (wait4),
    and the run's summary lines."""
    t = time.perf_counter()
    peak_file = Path(tempfile.mkstemp(prefix="peak-")[1])
    # the child reports its own peak (VmHWM): a forked child's ru_maxrss starts from this
    # process's own, which holds the split batch
    proc = subprocess.Popen(
        [sys.executable, "-c", _CHILD, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env={**os.environ, "COLUMNS": "100", "PEAK_FILE": str(peak_file)},
    )
    chunks = []
    while True:
        b = proc.stdout.read(65536)
        if not b:
            break
        chunks.append(b)
    _, status, ru = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t
    text = b"".join(chunks).decode(errors="replace")
    status_text = peak_file.read_text()
    peak_file.unlink()
    peak_kb = int(next((ln.split()[1] for ln in status_text.splitlines() if ln.startswith("VmHWM:")), "0"))
    if os.waitstatus_to_exitcode(status):
        raise SystemExit(f"{label} failed:\n{text[-3000:]}")
    first = next((ln for ln in text.splitlines() if ln.startswith("Run ")), "")
    scope = next((ln for ln in text.splitlines() if ln.startswith("Screened:")), "")
    return {
        "step": label,
        "wall_s": round(wall, 2),
        "cpu_s": round(ru.ru_utime + ru.ru_stime, 2),
        "peak_rss_mb": round(peak_kb / 1024),
        "summary": first.strip(),
        "scope": scope.strip(),
    }


def compare_findings(a: Path, b: Path) -> dict:
    """The two databases' findings compared in DuckDB (ids, status, amounts, evidence, first run;
    every finding line and what it carries): rows only in one or the other, and A's totals."""
    import duckdb

    con = duckdb.connect()
    try:
        con.execute("ATTACH ? AS a (READ_ONLY)", [str(a)])
        con.execute("ATTACH ? AS b (READ_ONLY)", [str(b)])
        cols = "finding_id, status, flagged_amt, claimed_amt, deduction_amt, evidence, first_run"
        differ = {}
        for what, sel in (
            ("findings", f"SELECT {cols} FROM {{}}.findings"),
            ("lines", "SELECT * FROM {}.finding_lines"),
        ):
            x, y = sel.format("a"), sel.format("b")
            differ[what] = con.execute(
                f"SELECT (SELECT count(*) FROM ({x} EXCEPT ALL {y})), (SELECT count(*) FROM ({y} EXCEPT ALL {x}))"
            ).fetchall()[0]
        totals = con.execute("SELECT count(*), sum(claimed_amt), sum(deduction_amt) FROM a.findings").fetchall()[0]
        n_lines = con.execute("SELECT count(*) FROM a.finding_lines").fetchall()[0][0]
        return {"same": all(v == (0, 0) for v in differ.values()), "differ": differ, "totals": totals, "lines": n_lines}
    finally:
        con.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--lines", type=int, default=3_000_000, help="generated fee lines in all (about 9 months)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--history-days", default="90", help="days of history before the night, comma-separated")
    ap.add_argument("--rules", default=str(ROOT / "rules"))
    ap.add_argument("--work", default=None, help="folder for the databases (default: a temporary one)")
    ap.add_argument("--memory-limit", default=None, help="DuckDB memory limit for every step (default: medaudit's)")
    ap.add_argument(
        "--night-days", type=int, default=1, help="days the night's batch holds (a city's day in a smaller batch)"
    )
    ap.add_argument(
        "--batch",
        default=None,
        help="a generated batch folder to cut (CSV or Parquet; --lines and --seed then only label the run), "
        "e.g. benchmarks/data/lines50000000_seed1_parquet_parts2000000 from bench_screen.py",
    )
    args = ap.parse_args()

    data = ROOT / "benchmarks" / "data"
    batch = Path(args.batch) if args.batch else data / f"lines{args.lines}_seed{args.seed}_csv"
    if not (batch / "answer_key.csv").exists():
        if args.batch:
            raise SystemExit(f"{batch}: not a generated batch (no answer_key.csv)")
        t = time.perf_counter()
        generate(batch, lines=args.lines, seed=args.seed, fmt="csv")
        print(f"generated {batch} in {time.perf_counter() - t:.0f}s")
    fmt = "parquet" if (batch / "mdtrt_d.parquet").exists() else "csv"
    import duckdb

    rel = (
        duckdb.read_parquet(str(batch / "mdtrt_d.parquet"))
        if fmt == "parquet"
        else duckdb.read_csv(str(batch / "mdtrt_d.csv"), all_varchar=True)
    )
    start = rel.aggregate("min(CAST(substr(CAST(begntime AS VARCHAR), 1, 10) AS DATE))").fetchall()[0][0]
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="nightly-"))
    limit = ["--memory-limit", args.memory_limit] if args.memory_limit else []
    results_path = ROOT / "benchmarks" / "nightly_results.json"
    results = json.loads(results_path.read_text()) if results_path.exists() else []

    for h in [int(x) for x in args.history_days.split(",")]:
        night_day = start + dt.timedelta(days=h)
        split = work / f"split_h{h}"
        if split.exists():
            shutil.rmtree(split)
        night_end = night_day + dt.timedelta(days=args.night_days)
        t = time.perf_counter()
        hist, night = split_batch(batch, split, [night_day, night_end], fmt=fmt, keep_last=False)
        split_s = time.perf_counter() - t

        def n_lines(folder: Path) -> int:
            f = folder / f"fee_list_d.{fmt}"
            if fmt == "parquet":
                return duckdb.read_parquet(str(f)).aggregate("count(*)").fetchall()[0][0]
            return sum(1 for _ in open(f)) - 1

        n_hist, n_night = n_lines(hist), n_lines(night)
        print(
            f"history {start}..{night_day - dt.timedelta(days=1)}: {n_hist:,} lines; night {night_day}"
            f"{'' if args.night_days == 1 else '..' + str(night_end - dt.timedelta(days=1))}: {n_night:,} lines "
            f"(cut in {split_s:.0f}s)"
        )
        base = work / f"hist_h{h}.duckdb"
        for p in work.glob(f"*_h{h}.duckdb*"):
            p.unlink()
        steps = [
            run_measured([*limit, "load", str(hist), "--db", str(base)], "load history"),
            run_measured([*limit, "screen", str(base), "--rules", args.rules, "--all"], "screen history --all"),
        ]
        nightly, full = work / f"nightly_h{h}.duckdb", work / f"full_h{h}.duckdb"
        shutil.copy(base, nightly)
        shutil.copy(base, full)
        steps.append(run_measured([*limit, "load", str(night), "--db", str(nightly)], "load night"))
        steps.append(run_measured([*limit, "screen", str(nightly), "--rules", args.rules], "screen night (nightly)"))
        steps.append(run_measured([*limit, "load", str(night), "--db", str(full)], "load night (copy)"))
        steps.append(run_measured([*limit, "screen", str(full), "--rules", args.rules, "--all"], "screen night --all"))
        cmp = compare_findings(nightly, full)
        same = cmp["same"]
        for s in steps:
            print(
                f"  {s['step']:<24} wall {s['wall_s']:>7.1f}s  cpu {s['cpu_s']:>7.1f}s  peak {s['peak_rss_mb']:>6,} MB  {s['summary']}"
            )
            if s["scope"]:
                print(f"  {'':<24} {s['scope']}")
        print(
            f"  findings after the night: {cmp['totals'][0]:,} ({cmp['lines']:,} finding lines): "
            f"{'identical to --all' if same else 'DIFFERENT from --all: ' + str(cmp['differ'])}"
        )
        entry = {
            "lines_generated": args.lines,
            "seed": args.seed,
            "batch": os.path.relpath(batch, ROOT),
            "history_days": h,
            "history_lines": n_hist,
            "night": str(night_day),
            "night_days": args.night_days,
            "night_lines": n_night,
            "rules": os.path.relpath(args.rules, ROOT),
            "memory_limit": args.memory_limit or "medaudit default (a quarter of RAM, DuckDB four fifths of it)",
            "steps": steps,
            "findings_identical": same,
            "findings_total": cmp["totals"][0],
            "finding_lines": cmp["lines"],
            "claimed_total": str(cmp["totals"][1]),
            "deducted_total": str(cmp["totals"][2]),
            "machine": {
                "cpus": os.cpu_count(),
                "python": platform.python_version(),
                "load_avg_end": [round(x, 2) for x in os.getloadavg()],
            },
            "measured_at": dt.datetime.now().isoformat(timespec="seconds"),
        }
        results = [
            r
            for r in results
            if not (
                r["lines_generated"] == args.lines
                and r["history_days"] == h
                and r.get("night_days", 1) == args.night_days
            )
        ] + [entry]
        results_path.write_text(json.dumps(results, indent=1, ensure_ascii=False) + "\n")
        if not same:
            raise SystemExit("the nightly screen's findings differ from the full re-screen's")


if __name__ == "__main__":
    main()
