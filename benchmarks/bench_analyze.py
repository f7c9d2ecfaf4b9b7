"""Benchmark: ``medaudit analyze`` at all three levels over a generated batch of N fee lines.

    .venv/bin/python benchmarks/bench_analyze.py                      # 1,000,000 lines
    .venv/bin/python benchmarks/bench_analyze.py --reuse-load         # keep / reuse the loaded database
    .venv/bin/python benchmarks/bench_analyze.py --lines 200000 --quarter 2026Q1

Generates (or reuses, cached under benchmarks/data/ by size and seed: the same batches as
bench_screen.py) a sample batch, loads it into a fresh DuckDB file (``--reuse-load``: a copy of
the database loaded last time), then times: the screened lines and the visit table (once, as
``medaudit analyze`` builds them), and one query per level (institution, department, doctor),
with wall and CPU seconds, rows and peak RSS. Results go to benchmarks/analyze_results.json
(one entry per size, period and label, replaced when re-run). The machine is shared: CPU
seconds and the load average are recorded next to the wall time.
"""

from __future__ import annotations

import argparse
import dataclasses
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

from bench_screen import cached_batch, cpu_s, peak_rss_mb  # noqa: E402

from medaudit import analysis as an, db, resources  # noqa: E402
from medaudit.loader import load_batch  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--lines", type=int, default=1_000_000, help="approximate fee lines to generate (default 1,000,000)"
    )
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--format", choices=("csv", "parquet"), default="parquet")
    ap.add_argument(
        "--data", type=Path, default=ROOT / "benchmarks" / "data", help="where generated batches are cached"
    )
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "analyze_results.json")
    ap.add_argument("--quarter", default=None, help="analyse this quarter only (default: every visit)")
    ap.add_argument("--stage", choices=an.STAGES, default="post_hoc")
    ap.add_argument(
        "--memory-limit",
        default=None,
        help="the process's memory budget, as medaudit --memory-limit (default: medaudit's)",
    )
    ap.add_argument("--label", default=None, help="names the entry in the results file")
    ap.add_argument(
        "--reuse-load",
        action="store_true",
        help="keep the loaded database next to the batch (loaded.duckdb) and use a copy of it next time",
    )
    args = ap.parse_args(argv)

    batch, gen_s = cached_batch(args.data, args.lines, args.seed, args.format)
    resources.configure(args.memory_limit, None, config=None)
    opts = an.Options(period=an.parse_period(quarter=args.quarter), stage=args.stage)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp) / "bench.duckdb"
        cached = batch / "loaded.duckdb"
        load_s = None
        if args.reuse_load and cached.exists():
            shutil.copyfile(cached, work)
            con = db.connect(work)
        else:
            con = db.connect(work)
            t = time.perf_counter()
            load_batch(batch, con)
            load_s = time.perf_counter() - t
            if args.reuse_load:
                con.execute("CHECKPOINT")
                shutil.copyfile(work, cached)
        n_fee = con.execute("SELECT count(*) FROM fee_list_d").fetchall()[0][0]
        load_avg_before = os.getloadavg()[0]
        t, c = time.perf_counter(), cpu_s()
        n_visits = an.prepare(con, opts)
        prep = {
            "wall_s": round(time.perf_counter() - t, 2),
            "cpu_s": round(cpu_s() - c, 2),
            "visits": n_visits,
            "screened_lines": con.execute("SELECT count(*) FROM lines").fetchall()[0][0],
        }
        levels = {}
        for lv in an.LEVELS:
            t, c = time.perf_counter(), cpu_s()
            a = an.level_rows(con, dataclasses.replace(opts, level=lv))
            levels[lv] = {
                "wall_s": round(time.perf_counter() - t, 3),
                "cpu_s": round(cpu_s() - c, 2),
                "entities": len(a.rows),
                "month_rows": len(a.months),
                "with_percentile": sum(r["p_cost_per_visit"] is not None for r in a.rows),
            }
        con.close()
    total_wall = prep["wall_s"] + sum(x["wall_s"] for x in levels.values())
    total_cpu = prep["cpu_s"] + sum(x["cpu_s"] for x in levels.values())
    result = {
        "label": args.label,
        "lines": n_fee,
        "format": args.format,
        "seed": args.seed,
        "period": opts.period.label,
        "stage": opts.stage,
        "generate_s": None if gen_s is None else round(gen_s, 1),
        "load_s": None if load_s is None else round(load_s, 1),
        "prepare": prep,
        "levels": levels,
        "all_levels_wall_s": round(total_wall, 2),
        "all_levels_cpu_s": round(total_cpu, 2),
        "peak_rss_mb": round(peak_rss_mb()),
        "memory_limit": resources.current().effective_memory_limit,
        "duckdb_memory_limit": resources.current().duckdb_memory_limit,
        "when": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC"),
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
            "load_average_before": round(load_avg_before, 1),
            "load_average_at_end": [round(x, 1) for x in os.getloadavg()],
        },
    }
    print(
        f"fee lines {n_fee:,}; generate {'cached' if gen_s is None else f'{gen_s:.1f}s'}; "
        f"load {'reused' if load_s is None else f'{load_s:.1f}s'}; load average {os.getloadavg()[0]:.1f} "
        f"on {os.cpu_count()} CPUs"
    )
    print(f"lines + visit table: {prep['wall_s']:.2f}s wall, {prep['cpu_s']:.2f}s CPU ({n_visits:,} visits)")
    for lv, x in levels.items():
        print(
            f"{lv:>12}: {x['wall_s']:.2f}s wall, {x['cpu_s']:.2f}s CPU, {x['entities']:,} entities, "
            f"{x['month_rows']:,} month rows"
        )
    print(f"all three levels: {total_wall:.2f}s wall, {total_cpu:.2f}s CPU; peak RSS {result['peak_rss_mb']:,} MB")
    old = json.loads(args.out.read_text()) if args.out.exists() else {"results": []}
    same = lambda e: (
        (e.get("lines"), e.get("period"), e.get("stage"), e.get("label"))
        == (n_fee, result["period"], result["stage"], args.label)
    )
    old["results"] = [e for e in old["results"] if not same(e)] + [result]
    args.out.write_text(json.dumps(old, ensure_ascii=False, indent=2) + "\n")
    print(f"results written to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
