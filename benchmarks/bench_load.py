"""Benchmark the loader alone: wall time, CPU seconds and peak RSS of ``load_batch``.

    .venv/bin/python benchmarks/bench_load.py --lines 1000000 [--format csv] [--memory-limit 6GB]
    .venv/bin/python benchmarks/bench_load.py --lines 50000000 --part-lines 2000000 --memory-limit 8GB

Uses the same generated batches as bench_screen.py (cached under benchmarks/data/ by size,
seed and format). Run each size in its own process: peak RSS is the process's high-water mark.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from medaudit import db, resources  # noqa: E402
from medaudit.loader import load_batch  # noqa: E402
from bench_screen import cached_batch, cpu_s  # noqa: E402  (benchmarks/ is on sys.path as the script's folder)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lines", type=int, default=1_000_000)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--format", choices=("parquet", "csv"), default="parquet")
    ap.add_argument("--part-lines", type=int, default=None, help="the batch made in parts (as bench_screen.py)")
    ap.add_argument("--data", type=Path, default=ROOT / "benchmarks" / "data")
    ap.add_argument(
        "--memory-limit",
        default=None,
        help="the process's memory budget, as medaudit --memory-limit (DuckDB gets four fifths), e.g. 6GB",
    )
    ap.add_argument("--generate-only", action="store_true")
    args = ap.parse_args(argv)
    batch, gen_s = cached_batch(args.data, args.lines, args.seed, args.format, args.part_lines)
    if gen_s is not None:
        print(f"generated {batch.name} in {gen_s:.1f}s", flush=True)
    if args.generate_only:
        return 0
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    with tempfile.TemporaryDirectory() as tmp:
        resources.configure(args.memory_limit, None, config=None)
        con = db.connect(Path(tmp) / "bench.duckdb")
        t, c = time.perf_counter(), cpu_s()
        res = load_batch(batch, con)
        wall, cpu = time.perf_counter() - t, cpu_s() - c
        con.close()
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    fee = next(s for s in res.tables if s.table == "fee_list_d")
    out = {
        "lines": fee.read,
        "format": args.format,
        "part_lines": args.part_lines,
        "load_s": round(wall, 2),
        "load_cpu_s": round(cpu, 2),
        "peak_rss_mb": round(rss),
        "rss_before_load_mb": round(rss0),
        "memory_limit": resources.current().effective_memory_limit,
        "duckdb_memory_limit": resources.current().duckdb_memory_limit,
        "rejected": sum(s.rejected for s in res.tables),
        "load_average": round(os.getloadavg()[0], 1),
    }
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
