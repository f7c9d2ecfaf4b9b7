"""Benchmark: wall time, CPU and peak memory of `medaudit sample generate` at given sizes.

    .venv/bin/python benchmarks/bench_generate.py                          # 1M and 10M lines, Parquet
    .venv/bin/python benchmarks/bench_generate.py --lines 1000000 --format csv
    .venv/bin/python benchmarks/bench_generate.py --lines 10000000 --part-lines 2000000   # in parts

Each size runs as its own process under ``/usr/bin/time -v`` (peak RSS is a per-process high-water
mark), writing to a temporary folder that is removed afterwards. Results go to
benchmarks/gen_results.json (one entry per size and format, replaced when re-run) with the
machine's CPU count and load average: wall time suffers when other work shares the CPUs, CPU
seconds less so.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def measure(lines: int, seed: int, fmt: str, part_lines: int | None = None) -> dict:
    tmp = Path(tempfile.mkdtemp(prefix="medaudit-gen-"))
    try:
        cmd = [
            "/usr/bin/time",
            "-v",
            sys.executable,
            "-m",
            "medaudit",
            "sample",
            "generate",
            "--out",
            str(tmp / "batch"),
            "--lines",
            str(lines),
            "--seed",
            str(seed),
            "--format",
            fmt,
        ] + (["--part-lines", str(part_lines)] if part_lines else [])
        load_before = os.getloadavg()[0]
        p = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
        if p.returncode != 0:
            raise SystemExit(f"generate failed ({p.returncode}):\n{p.stdout[-2000:]}\n{p.stderr[-2000:]}")
        err = p.stderr

        def field(name: str) -> str:
            m = re.search(rf"{re.escape(name)}: (.+)", err)
            return m.group(1).strip() if m else ""

        wall = field("Elapsed (wall clock) time (h:mm:ss or m:ss)")
        parts = [float(x) for x in wall.split(":")]
        wall_s = sum(x * 60**i for i, x in enumerate(reversed(parts)))
        fee = tmp / "batch" / f"fee_list_d.{'parquet' if fmt == 'parquet' else 'csv'}"
        key_rows = sum(1 for _ in (tmp / "batch" / "answer_key.csv").open(encoding="utf-8")) - 1
        if fmt == "parquet":
            import pyarrow.parquet as pq

            n_fee = pq.ParquetFile(fee).metadata.num_rows
        else:
            n_fee = sum(1 for _ in fee.open(encoding="utf-8")) - 1
        return {
            "lines_asked": lines,
            "fee_lines": n_fee,
            "answer_key_rows": key_rows,
            "format": fmt,
            "seed": seed,
            "part_lines": part_lines,
            "wall_s": round(wall_s, 1),
            "cpu_s": round(float(field("User time (seconds)")) + float(field("System time (seconds)")), 1),
            "cpu_percent": field("Percent of CPU this job got"),
            "peak_rss_mb": round(int(field("Maximum resident set size (kbytes)")) / 1024),
            "load_average_before": round(load_before, 1),
            "load_average_after": round(os.getloadavg()[0], 1),
        }
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lines", default="1000000,10000000", help="comma-separated approximate line counts")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--format", choices=("parquet", "csv"), default="parquet")
    ap.add_argument("--part-lines", type=int, default=None, help="make each batch in parts of about this many lines")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "gen_results.json")
    ap.add_argument("--note", default=None, help="a note stored with each result (e.g. that the machine was shared)")
    args = ap.parse_args(argv)
    old = json.loads(args.out.read_text()) if args.out.exists() else {"results": []}
    for n in [int(x) for x in args.lines.split(",") if x.strip()]:
        r = measure(n, args.seed, args.format, args.part_lines)
        r.update(
            {
                "when": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC"),
                "machine": {
                    "cpus": os.cpu_count(),
                    "python": platform.python_version(),
                    "platform": platform.platform(),
                },
                "note": args.note,
            }
        )
        print(
            f"{r['fee_lines']:>12,} lines ({args.format}"
            f"{f', parts of {args.part_lines:,}' if args.part_lines else ''}): {r['wall_s']:.1f}s wall, {r['cpu_s']:.1f}s CPU "
            f"({r['cpu_percent']}), peak RSS {r['peak_rss_mb']:,} MB, {r['answer_key_rows']:,} key rows, "
            f"load average {r['load_average_before']} -> {r['load_average_after']}",
            flush=True,
        )
        old["results"] = [
            e
            for e in old.get("results", [])
            if (e.get("lines_asked"), e.get("format"), e.get("seed"), e.get("part_lines"))
            != (n, args.format, args.seed, args.part_lines)
        ] + [r]
        args.out.write_text(json.dumps(old, ensure_ascii=False, indent=2) + "\n")
    print(f"results written to {args.out.relative_to(ROOT) if args.out.is_relative_to(ROOT) else args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
