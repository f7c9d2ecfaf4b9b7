"""Benchmark: load and screen a generated batch of N fee lines; time each step.

    .venv/bin/python benchmarks/bench_screen.py                       # 1,000,000 lines, rules/
    .venv/bin/python benchmarks/bench_screen.py --lines 200000 --replicate 1,5,20

Generates a sample batch (Parquet, cached under benchmarks/data/ by size and seed), loads it
into a fresh DuckDB file, screens it with the rule library, and prints wall time for load and
screen, the screen time per rule type, peak RSS, and the check against the answer key.
``--replicate`` copies every rule k times under new ids (``R-SEX-001#2``...) to show how the
cost grows with the number of rules; each k is screened on the same loaded data with the
findings cleared in between. Results go to benchmarks/results.json (one entry per
configuration, replaced when re-run).
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
import os
import platform
import resource
import sys
import tempfile
import time
from pathlib import Path

import polars as pl

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from medaudit import db  # noqa: E402
from medaudit.engine import screen  # noqa: E402
from medaudit.library import Library, load_library  # noqa: E402
from medaudit.loader import load_batch  # noqa: E402
from medaudit.sample import generate  # noqa: E402
from medaudit.sample.check import compare  # noqa: E402


def cpu_s() -> float:
    """User + system CPU seconds of this process, all threads (less sensitive to a busy machine than wall time)."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KB on Linux


def library(path: Path) -> Library:
    """A folder: the YAML files at its top (derived sub-folders such as rules/national/ are
    left out); a file: that file."""
    if path.is_dir():
        libs = [load_library(f) for f in sorted(path.glob("*.yaml"))]
        return Library([r for lib in libs for r in lib.rules], path)
    return load_library(path)


def replicate(lib: Library, k: int) -> Library:
    """Every rule k times; copies get new ids, so they are separate rules with separate findings."""
    rules = list(lib.rules)
    for i in range(2, k + 1):
        rules += [dataclasses.replace(r, id=f"{r.id}#{i}") for r in lib.rules]
    return Library(rules, lib.root)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lines", type=int, default=1_000_000, help="approximate fee lines to generate (default 1,000,000)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--format", choices=("parquet", "csv"), default="parquet")
    ap.add_argument("--rules", type=Path, default=ROOT / "rules", help="rule library folder or YAML file")
    ap.add_argument("--replicate", default="1", help="comma-separated rule multipliers, e.g. 1,5,20")
    ap.add_argument("--data", type=Path, default=ROOT / "benchmarks" / "data", help="where generated batches are cached")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results.json")
    ap.add_argument("--no-check", action="store_true", help="skip the comparison with the answer key")
    args = ap.parse_args(argv)
    ks = [int(x) for x in args.replicate.split(",") if x.strip()]

    batch = args.data / f"lines{args.lines}_seed{args.seed}_{args.format}"
    gen_s = None
    if not (batch / "answer_key.csv").exists():
        t = time.perf_counter()
        generate(batch, lines=args.lines, seed=args.seed, fmt=args.format)
        gen_s = time.perf_counter() - t
    base = library(args.rules)

    with tempfile.TemporaryDirectory() as tmp:
        con = db.connect(Path(tmp) / "bench.duckdb")
        t, c = time.perf_counter(), cpu_s()
        loaded = load_batch(batch, con)
        load_s, load_cpu = time.perf_counter() - t, cpu_s() - c
        rss_load = peak_rss_mb()
        n_fee = next(s.loaded for s in loaded.tables if s.table == "fee_list_d")
        key = pl.read_csv(batch / "answer_key.csv", infer_schema=False)
        runs = []
        for k in ks:
            con.execute("DELETE FROM finding_lines; DELETE FROM findings;")
            lib = replicate(base, k)
            t, c = time.perf_counter(), cpu_s()
            res = screen(con, lib)
            screen_s, screen_cpu = time.perf_counter() - t, cpu_s() - c
            n_findings = con.execute("SELECT count(*) FROM findings").fetchall()[0][0]
            check = None
            if not args.no_check:
                c = compare(con, key, res.run_id)
                check = {"expected": c.expected.height, "missed": c.missed.height, "extra": c.extra.height,
                         "recall": c.recall, "precision": c.precision}
            runs.append({
                "rules_multiplier": k, "rules": len(lib.rules), "screen_s": round(screen_s, 2),
                "screen_cpu_s": round(screen_cpu, 2),
                "screened_lines": res.n_lines, "hits": res.n_hits, "findings": n_findings,
                "other_s": round(screen_s - sum(res.seconds_by_type.values()), 2),  # lines, findings, money
                "seconds_by_type": {t: round(s, 3) for t, s in sorted(res.seconds_by_type.items(), key=lambda x: -x[1])},
                "peak_rss_mb": round(peak_rss_mb(), 0), "check": check,
            })
        con.close()

    result = {
        "when": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC"),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform(),
                    "load_average_at_end": [round(x, 1) for x in os.getloadavg()]},
        "lines": n_fee, "format": args.format, "seed": args.seed,
        "generate_s": None if gen_s is None else round(gen_s, 2),
        "load_s": round(load_s, 2), "load_cpu_s": round(load_cpu, 2), "peak_rss_after_load_mb": round(rss_load, 0), "runs": runs,
    }
    print(f"fee lines: {n_fee:,} ({args.format}); generate: "
          f"{'cached' if gen_s is None else f'{gen_s:.1f}s'}; load: {load_s:.1f}s wall, {load_cpu:.1f}s CPU "
          f"(peak RSS {rss_load:,.0f} MB); load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    print(f"{'rules':>7} {'screen s':>9} {'CPU s':>7} {'types s':>8} {'other s':>8} {'lines/s':>11} {'findings':>9} {'peak MB':>8}"
          "  recall/precision  slowest types")
    for r in runs:
        slow = ", ".join(f"{t} {s:.1f}s" for t, s in list(r["seconds_by_type"].items())[:3])
        rp = "-" if r["check"] is None else f"{r['check']['recall']:.3f}/{r['check']['precision']:.3f}"
        print(f"{r['rules']:>7} {r['screen_s']:>9.1f} {r['screen_cpu_s']:>7.1f} {r['screen_s'] - r['other_s']:>8.1f} {r['other_s']:>8.1f} "
              f"{n_fee / r['screen_s']:>11,.0f} {r['findings']:>9,} "
              f"{r['peak_rss_mb']:>8,.0f}  {rp:>16}  {slow}")

    old = json.loads(args.out.read_text()) if args.out.exists() else {"results": []}
    same = lambda e: (e.get("lines"), e.get("format"), [r["rules_multiplier"] for r in e.get("runs", [])]) == (
        n_fee, args.format, ks)
    old["results"] = [e for e in old.get("results", []) if not same(e)] + [result]
    args.out.write_text(json.dumps(old, ensure_ascii=False, indent=2) + "\n")
    print(f"results written to {args.out.relative_to(ROOT) if args.out.is_relative_to(ROOT) else args.out}")
    bad = [r for r in runs if r["check"] and (r["check"]["missed"] or r["check"]["extra"])]
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
