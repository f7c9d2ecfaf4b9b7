"""Benchmark: load and screen a generated batch of N fee lines; time each step.

    .venv/bin/python benchmarks/bench_screen.py                       # 1,000,000 lines, rules/
    .venv/bin/python benchmarks/bench_screen.py --lines 200000 --replicate 1,5,20
    .venv/bin/python benchmarks/bench_screen.py --extra-rules rules/national --dump /tmp/before

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
import shutil
import sys
import tempfile
import time
from pathlib import Path

import polars as pl

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from medaudit import db, resources  # noqa: E402
from medaudit.engine import screen  # noqa: E402
from medaudit.library import Library, load_library  # noqa: E402
from medaudit.loader import load_batch  # noqa: E402
from medaudit.sample import generate  # noqa: E402
from medaudit.sample.check import compare  # noqa: E402


def cached_batch(
    data: Path, lines: int, seed: int, fmt: str, part_lines: int | None = None
) -> tuple[Path, float | None]:
    """The generated batch of that size, seed and format (made in parts of ``part_lines`` lines
    if given: another batch, cached apart) under ``data`` (generated the first time: returns the
    seconds it took, else None)."""
    batch = data / f"lines{lines}_seed{seed}_{fmt}{f'_parts{part_lines}' if part_lines else ''}"
    if (batch / "answer_key.csv").exists():
        return batch, None
    t = time.perf_counter()
    generate(batch, lines=lines, seed=seed, fmt=fmt, part_lines=part_lines)
    return batch, time.perf_counter() - t


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
    ap.add_argument(
        "--lines", type=int, default=1_000_000, help="approximate fee lines to generate (default 1,000,000)"
    )
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--format", choices=("parquet", "csv"), default="parquet")
    ap.add_argument(
        "--part-lines",
        type=int,
        default=None,
        help="generate the batch in parts of about this many lines (memory bounded by a part: "
        "for tens of millions of lines, e.g. 2000000)",
    )
    ap.add_argument("--rules", type=Path, default=ROOT / "rules", help="rule library folder or YAML file")
    ap.add_argument(
        "--extra-rules",
        type=Path,
        action="append",
        default=[],
        help="another library added to --rules, every YAML under it (e.g. rules/national from "
        "`medaudit rules import-nhsa`); may be repeated",
    )
    ap.add_argument(
        "--dump",
        type=Path,
        default=None,
        help="write each run's findings and finding lines to Parquet under this folder "
        "(k<N>/findings.parquet, k<N>/finding_lines.parquet), for compare_findings.py",
    )
    ap.add_argument("--replicate", default="1", help="comma-separated rule multipliers, e.g. 1,5,20")
    ap.add_argument(
        "--data", type=Path, default=ROOT / "benchmarks" / "data", help="where generated batches are cached"
    )
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results.json")
    ap.add_argument(
        "--memory-limit",
        default=None,
        help="the process's memory budget, as medaudit --memory-limit (DuckDB gets four fifths; "
        "default: medaudit's, a quarter of the machine's memory)",
    )
    ap.add_argument("--temp-dir", type=Path, default=None, help="DuckDB spill folder (default: next to the database)")
    ap.add_argument(
        "--label",
        default=None,
        help="names the entry in results.json (e.g. the change measured); entries with another label are kept",
    )
    ap.add_argument(
        "--reuse-load",
        action="store_true",
        help="keep the loaded database next to the batch (loaded.duckdb) and screen a copy of it "
        "next time instead of loading again (no load figures then)",
    )
    ap.add_argument("--no-check", action="store_true", help="skip the comparison with the answer key")
    ap.add_argument(
        "--screen-part-lines",
        type=int,
        default=None,
        help="screen in parts of persons of about this many fee lines (default: medaudit's, from the "
        "memory limit; a number above the batch's lines screens it whole)",
    )
    args = ap.parse_args(argv)
    ks = [int(x) for x in args.replicate.split(",") if x.strip()]

    batch, gen_s = cached_batch(args.data, args.lines, args.seed, args.format, args.part_lines)
    resources.configure(args.memory_limit, args.temp_dir, config=None)
    base = library(args.rules)
    if args.extra_rules:
        extra = [r for x in args.extra_rules for r in load_library(x).rules]
        base = Library(list(base.rules) + extra, base.root)

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp) / "bench.duckdb"
        cached = batch / "loaded.duckdb"
        if args.reuse_load and cached.exists():
            shutil.copyfile(cached, work)
            con = db.connect(work)
            load_s = load_cpu = None
            n_fee = con.execute("SELECT count(*) FROM fee_list_d").fetchall()[0][0]
        else:
            con = db.connect(work)
            t, c = time.perf_counter(), cpu_s()
            loaded = load_batch(batch, con)
            load_s, load_cpu = time.perf_counter() - t, cpu_s() - c
            n_fee = next(s.loaded for s in loaded.tables if s.table == "fee_list_d")
            if args.reuse_load:
                con.execute("CHECKPOINT")
                shutil.copyfile(work, cached)
        rss_load = peak_rss_mb()
        key = None  # the answer key is read after the first screen: its frame is the benchmark's
        # memory, not medaudit's (370 MB of CSV at 50M lines, over 1 GB in memory)
        runs = []
        for k in ks:
            con.execute("DELETE FROM finding_lines; DELETE FROM findings;")
            lib = replicate(base, k)
            # CPU seconds per step, from the engine's per-type callback: before the first type
            # (lines, rule tables), each type, after the last (findings, money)
            marks: list[tuple[str, float]] = []
            t, c = time.perf_counter(), cpu_s()
            res = screen(
                con,
                lib,
                on_type=lambda name, i, n: marks.append((name or "(findings, money)", cpu_s())),
                part_lines=args.screen_part_lines,
            )
            screen_s, screen_cpu = time.perf_counter() - t, cpu_s() - c
            screen_rss = peak_rss_mb()  # before the answer key is read (the first run) and compared
            ends = [m[1] for m in marks[1:]] + [c + screen_cpu]
            cpu_by_step = {"(lines, rule tables)": marks[0][1] - c if marks else screen_cpu}
            for (name, start), end in zip(marks, ends):  # a screen in parts runs each type once per part
                step = "(lines, rule tables)" if name.startswith("(lines") else name
                cpu_by_step[step] = cpu_by_step.get(step, 0.0) + end - start
            n_findings = con.execute("SELECT count(*) FROM findings").fetchall()[0][0]
            if args.dump:
                from compare_findings import dump  # noqa: E402  (benchmarks/ is on sys.path)

                dump(con, args.dump / f"k{k}")
            check = None
            if not args.no_check:
                if key is None:
                    key = pl.read_csv(batch / "answer_key.csv", infer_schema=False)
                c = compare(con, key, res.run_id)
                check = {
                    "expected": c.expected.height,
                    "missed": c.missed.height,
                    "extra": c.extra.height,
                    "recall": c.recall,
                    "precision": c.precision,
                }
            runs.append(
                {
                    "rules_multiplier": k,
                    "rules": len(lib.rules),
                    "screen_s": round(screen_s, 2),
                    "screen_cpu_s": round(screen_cpu, 2),
                    "screened_lines": res.n_lines,
                    "hits": res.n_hits,
                    "findings": n_findings,
                    "other_s": round(screen_s - sum(res.seconds_by_type.values()), 2),  # lines, findings, money
                    "seconds_by_type": {
                        t: round(s, 3) for t, s in sorted(res.seconds_by_type.items(), key=lambda x: -x[1])
                    },
                    "cpu_s_by_step": {t: round(s, 2) for t, s in sorted(cpu_by_step.items(), key=lambda x: -x[1])},
                    "peak_rss_mb": round(screen_rss, 0),
                    "parts": res.n_parts,
                    "check": check,
                }
            )
        con.close()

    result = {
        "label": args.label,
        "when": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC"),
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
            "load_average_at_end": [round(x, 1) for x in os.getloadavg()],
        },
        "lines": n_fee,
        "format": args.format,
        "seed": args.seed,
        "part_lines": args.part_lines,
        "extra_rules": [str(x) for x in args.extra_rules],
        "memory_limit": resources.current().effective_memory_limit,
        "duckdb_memory_limit": resources.current().duckdb_memory_limit,
        "generate_s": None if gen_s is None else round(gen_s, 2),
        "load_s": None if load_s is None else round(load_s, 2),
        "load_cpu_s": None if load_cpu is None else round(load_cpu, 2),
        "peak_rss_after_load_mb": round(rss_load, 0),
        "runs": runs,
    }
    load_text = "reused" if load_s is None else f"{load_s:.1f}s wall, {load_cpu:.1f}s CPU"
    print(
        f"fee lines: {n_fee:,} ({args.format}); generate: "
        f"{'cached' if gen_s is None else f'{gen_s:.1f}s'}; load: {load_text} "
        f"(peak RSS {rss_load:,.0f} MB); load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs"
    )
    print(
        f"{'rules':>7} {'screen s':>9} {'CPU s':>7} {'types s':>8} {'other s':>8} {'lines/s':>11} {'findings':>9} {'peak MB':>8}"
        "  recall/precision  slowest types"
    )
    for r in runs:
        slow = ", ".join(f"{t} {s:.1f}s" for t, s in list(r["seconds_by_type"].items())[:3])
        rp = "-" if r["check"] is None else f"{r['check']['recall']:.3f}/{r['check']['precision']:.3f}"
        print(
            f"{r['rules']:>7} {r['screen_s']:>9.1f} {r['screen_cpu_s']:>7.1f} {r['screen_s'] - r['other_s']:>8.1f} {r['other_s']:>8.1f} "
            f"{n_fee / r['screen_s']:>11,.0f} {r['findings']:>9,} "
            f"{r['peak_rss_mb']:>8,.0f}  {rp:>16}  {slow}"
        )
        print("        CPU s by step: " + ", ".join(f"{t} {x:.1f}" for t, x in list(r["cpu_s_by_step"].items())[:8]))

    old = json.loads(args.out.read_text()) if args.out.exists() else {"results": []}
    same = lambda e: (
        (
            e.get("lines"),
            e.get("format"),
            [r["rules_multiplier"] for r in e.get("runs", [])],
            e.get("extra_rules", []),
            e.get("label"),
            e.get("part_lines"),
        )
        == (n_fee, args.format, ks, result["extra_rules"], args.label, args.part_lines)
    )
    old["results"] = [e for e in old.get("results", []) if not same(e)] + [result]
    args.out.write_text(json.dumps(old, ensure_ascii=False, indent=2) + "\n")
    print(f"results written to {args.out.relative_to(ROOT) if args.out.is_relative_to(ROOT) else args.out}")
    bad = [r for r in runs if r["check"] and (r["check"]["missed"] or r["check"]["extra"])]
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
