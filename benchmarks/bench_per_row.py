"""Benchmark: two national rules checked line by line (durable-rules, a plain Python loop) against
medaudit's set-based type queries, on the same lines in one run.

    .venv/bin/python benchmarks/bench_per_row.py                     # about 200,000 fee lines
    .venv/bin/python benchmarks/bench_per_row.py --lines 1000000 --skip-durable

The two rules are those of issue 15: a gender list (national batch 1, drugs and services: 6,862
codes with the gender each is for, one ``restrict_gender`` rule) and the daily limits (batch 8-1,
67 items, ``frequency_limit``), imported from the workbooks by ``medaudit rules import-nhsa``
(``--nhsa DIR``, default /work/shared/reference/nhsa-rule-batches). The lines are a generated
sample batch (benchmarks/data/, shared with bench_screen.py), loaded with medaudit's loader;
its catalogue shares 10 codes with the two lists (bed, nursing and ward-round fees, monitoring
hours, 子宫造影, ...), and the batch's injected violations break them.

Every path reads the same screened lines: medaudit's ``lines`` table (refunds netted, refunded
settlements and self-paid lines out, ``deductible`` computed), built once by
``engine.prepare_lines`` and timed apart. Then, each timed on its own:

1. **medaudit**: the two rule types' queries (``engine.run_type``: match the lines to the rule
   items, then one query per type) over the ``lines`` table in DuckDB;
2. **python**: one loop over the lines as tuples: a dict lookup per rule, the gender test, and
   the day's quantities per (visit, code, day), then the excess taken from the latest lines;
3. **durable-rules**: one event per line posted to a ruleset (explicit ``id`` per event: without
   it durable-rules crashed after 57,942 events in an earlier run). The code lists stay Python
   dicts: each event carries the parameters of its code (the gender the item is for, the daily
   limit), looked up when the event is built, and the rules' conditions decide in durable-rules;
   the frequency rule's action collects the line into its day, and the days are summed and the
   excess allocated in Python after the last event (durable-rules has no windowed sum).

Each path must flag the same lines (rule, bkkp_sn) as violating: the script asserts it and
prints the count. A line is violating as in the type queries: for the gender rule, a person of
gender 1 or 2 other than the item's, with a deductible amount; for the daily limit, a line
holding excess units (the day's quantity above the limit, taken from the latest lines first,
by fee_ocur_time then bkkp_sn) with a price and a deductible amount, so its claim is above 0.

Results go to benchmarks/per_row_results.json.
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import json
import os
import platform
import sys
import tempfile
import time
from decimal import Decimal
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_screen import cached_batch, cpu_s  # noqa: E402

from medaudit import db, resources  # noqa: E402
from medaudit.engine import create_hits, prepare_lines, register_rules, run_type  # noqa: E402
from medaudit.library import load_library  # noqa: E402
from medaudit.loader import load_batch  # noqa: E402
from medaudit.types import REGISTRY  # noqa: E402

NHSA = Path("/work/shared/reference/nhsa-rule-batches")
GENDER_FILES = ("nhsa-b1-drug-gender.csv", "nhsa-b1-item-gender.csv")
FREQ_FILE = "nhsa-b8-1-item-frequency.csv"
GENDER_ID, FREQ_ID = "BENCH-GENDER", "NHSA-B8-1-ITEM-FREQUENCY"
# amounts are DECIMAL(18,4) in lines: the Python paths take them as integers of 1/10000
SCALE = 10_000


def national_rules(nhsa: Path, work: Path):
    """The two rules: batch 1's gender lists as one restrict_gender rule, batch 8-1 as imported."""
    from medaudit.nhsa import import_batches

    out = work / "national"
    import_batches(nhsa, out)
    rows = {}
    for f in GENDER_FILES:
        for r in csv.DictReader((out / f).open(encoding="utf-8")):
            if rows.setdefault(r["code"], r)["gender"] != r["gender"]:
                raise SystemExit(f"{r['code']} has two genders in {GENDER_FILES}")
    lib = work / "lib"
    lib.mkdir()
    with (lib / "gender.csv").open("w", encoding="utf-8", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=["code", "name", "gender"])
        w.writeheader()
        w.writerows(sorted(rows.values(), key=lambda r: r["code"]))
    (lib / "gender.yaml").write_text(
        f"rules:\n- id: {GENDER_ID}\n  version: 1\n  name: 国家第一批 限定性别（药品与医疗服务项目）\n"
        "  type: restrict_gender\n  items:\n    table: gender.csv\n",
        encoding="utf-8",
    )
    freq = (out / FREQ_FILE.replace(".csv", ".yaml")).read_text(encoding="utf-8")
    (lib / "freq.yaml").write_text(freq, encoding="utf-8")
    (lib / FREQ_FILE).write_bytes((out / FREQ_FILE).read_bytes())
    rules = load_library(lib).rules
    for r in rules:  # the Python paths below implement no validity period or scope
        if r.valid_from or r.valid_to or any(r.scope.values()) or any(it.prefix for it in r.items):
            raise SystemExit(f"{r.id} has a validity period or scope; this benchmark does not model it (nor prefixes)")
    gender = {
        it.code: str(it.params.get("gender", r.params.get("gender")))
        for r in rules
        if r.type == "restrict_gender"
        for it in r.items
    }
    limit = {
        it.code: int(Decimal(str(it.params.get("max_per_day", r.params.get("max_per_day")))) * SCALE)
        for r in rules
        if r.type == "frequency_limit"
        for it in r.items
    }
    if set(gender) & set(limit):
        raise SystemExit("a code is in both lists; the per-event rules below assume not")
    return rules, gender, limit


def fetch_lines(con) -> list[tuple]:
    """The screened lines the Python paths read, as tuples (amounts in 1/10000)."""
    return con.execute(
        f"""SELECT bkkp_sn, mdtrt_id, hilist_code, fee_date, fee_ocur_time, gend,
                   CAST(round(cnt * {SCALE}) AS BIGINT), CAST(round(pric * {SCALE}) AS BIGINT),
                   CAST(round(deductible * {SCALE}) AS BIGINT)
            FROM lines"""
    ).fetchall()


def allocate(days: dict, limit: dict, flagged: set) -> None:
    """The daily-limit groups -> violating lines: excess taken from the latest lines first."""
    for (mdtrt_id, code, _day), group in days.items():
        lim = limit[code]  # in 1/10000 like the quantities
        total = sum(g[2] for g in group)
        if total <= lim:
            continue
        excess, cum = total - lim, 0
        for t, sn, cnt, pric, ded in sorted(group, reverse=True):  # fee_ocur_time DESC, bkkp_sn DESC
            cum += cnt
            units = max(min(cnt, excess - (cum - cnt)), 0)
            if units > 0 and pric > 0 and ded > 0:
                flagged.add((FREQ_ID, sn))


def run_python(lines: list[tuple], gender: dict, limit: dict) -> set:
    flagged: set = set()
    days: dict = {}
    g_get, l_get = gender.get, limit.get
    for sn, mdtrt_id, code, day, t, gend, cnt, pric, ded in lines:
        g = g_get(code)
        if g is not None:
            if (gend == "1" or gend == "2") and gend != g and ded > 0:
                flagged.add((GENDER_ID, sn))
            continue
        lim = l_get(code)
        if lim is not None:
            key = (mdtrt_id, code, day)
            grp = days.get(key)
            if grp is None:
                days[key] = grp = []
            grp.append((t, sn, cnt, pric, ded))
    allocate(days, limit, flagged)
    return flagged


def run_durable(lines: list[tuple], gender: dict, limit: dict, progress: bool) -> tuple[set, int]:
    from durable.engine import MessageNotHandledException
    from durable.lang import m, post, ruleset, when_all

    flagged: set = set()
    days: dict = {}
    name = f"bench_per_row_{os.getpid()}"
    with ruleset(name):

        @when_all(
            (m.kind == "line") & +m.rgender & ((m.gend == "1") | (m.gend == "2")) & (m.gend != m.rgender) & (m.ded > 0)
        )
        def wrong_gender(c):
            flagged.add((GENDER_ID, c.m.sn))

        @when_all((m.kind == "line") & +m.max_per_day)
        def daily(c):
            x = c.m
            days.setdefault((x.mdtrt_id, x.code, x.day), []).append((x.t, x.sn, x.cnt, x.pric, x.ded))

    unhandled = 0
    g_get, l_get = gender.get, limit.get
    for i, (sn, mdtrt_id, code, day, t, gend, cnt, pric, ded) in enumerate(lines):
        ev = {
            "id": i + 1,
            "kind": "line",
            "sn": sn,
            "mdtrt_id": mdtrt_id,
            "code": code,
            "day": day.isoformat(),
            "t": t.isoformat(sep=" "),
            "gend": gend or "",
            "cnt": cnt,
            "pric": pric,
            "ded": ded,
        }
        g = g_get(code)
        if g is not None:
            ev["rgender"] = g
        else:
            lim = l_get(code)
            if lim is not None:
                ev["max_per_day"] = lim
        try:
            post(name, ev)
        except MessageNotHandledException:  # no rule takes it (most lines)
            unhandled += 1
        if progress and (i + 1) % 50_000 == 0:
            print(f"  durable-rules: {i + 1:,} events", flush=True)
    allocate(days, limit, flagged)
    return flagged, unhandled


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lines", type=int, default=200_000, help="approximate fee lines to generate (default 200,000)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--nhsa", type=Path, default=NHSA, help="folder of the national knowledge workbooks")
    ap.add_argument(
        "--data", type=Path, default=ROOT / "benchmarks" / "data", help="where generated batches are cached"
    )
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "per_row_results.json")
    ap.add_argument("--skip-durable", action="store_true", help="leave durable-rules out (slow on large batches)")
    ap.add_argument("--note", default=None, help="a note stored with the result (e.g. that the machine was shared)")
    args = ap.parse_args(argv)
    if not args.nhsa.is_dir():
        raise SystemExit(f"{args.nhsa}: no such folder (the national knowledge workbooks; give --nhsa)")

    batch, gen_s = cached_batch(args.data, args.lines, args.seed, "parquet")
    resources.configure(None, None, config=None)
    with tempfile.TemporaryDirectory() as tmp:
        rules, gender, limit = national_rules(args.nhsa, Path(tmp))
        con = db.connect(Path(tmp) / "bench.duckdb")
        load_batch(batch, con)
        t = time.perf_counter()
        n = prepare_lines(con)
        prepare_s = time.perf_counter() - t

        # (3) medaudit: match + one query per type, over the lines table
        register_rules(con, rules, distinct_bodies=True)
        create_hits(con)
        t, c = time.perf_counter(), cpu_s()
        for tname in ("restrict_gender", "frequency_limit"):
            run_type(con, REGISTRY[tname])
        med_s, med_cpu = time.perf_counter() - t, cpu_s() - c
        med = set(
            con.execute(
                "SELECT DISTINCT r.rule_id, h.bkkp_sn FROM hits h JOIN r_all r USING (rule_key) WHERE h.role = 'violating'"
            ).fetchall()
        )

        t = time.perf_counter()
        lines = fetch_lines(con)
        fetch_s = time.perf_counter() - t
        con.close()
    assert len(lines) == n
    matched = sum(1 for x in lines if x[2] in gender or x[2] in limit)

    # (2) a plain Python loop
    t, c = time.perf_counter(), cpu_s()
    py = run_python(lines, gender, limit)
    py_s, py_cpu = time.perf_counter() - t, cpu_s() - c

    # (1) durable-rules, one event per line
    dur = dur_s = dur_cpu = unhandled = None
    if not args.skip_durable:
        t, c = time.perf_counter(), cpu_s()
        dur, unhandled = run_durable(lines, gender, limit, progress=True)
        dur_s, dur_cpu = time.perf_counter() - t, cpu_s() - c

    assert py == med, f"python and medaudit differ: {sorted(py ^ med)[:10]}"
    if dur is not None:
        assert dur == med, f"durable-rules and medaudit differ: {sorted(dur ^ med)[:10]}"
    by_rule = {rid: sum(1 for r, _ in med if r == rid) for rid in (GENDER_ID, FREQ_ID)}

    def entry(s, cpu):
        return None if s is None else {"seconds": round(s, 3), "cpu_s": round(cpu, 3), "lines_per_s": round(n / s)}

    load1 = os.getloadavg()[0]
    result = {
        "when": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC"),
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
            "processor": platform.processor() or platform.machine(),
            "load_average_at_end": [round(x, 1) for x in os.getloadavg()],
        },
        "note": args.note,
        "rules": {
            GENDER_ID: f"restrict_gender, {len(gender):,} codes (batch 1 drugs and services)",
            FREQ_ID: f"frequency_limit, {len(limit)} daily limits (batch 8-1)",
        },
        "lines": n,
        "lines_matching_a_rule": matched,
        "seed": args.seed,
        "flagged_lines": len(med),
        "flagged_by_rule": by_rule,
        "prepare_lines_s": round(prepare_s, 3),
        "fetch_lines_to_python_s": round(fetch_s, 3),
        "medaudit_type_queries": entry(med_s, med_cpu),
        "python_loop": entry(py_s, py_cpu),
        "durable_rules_per_event": entry(dur_s, dur_cpu),
        "durable_rules_unhandled_events": unhandled,
        "same_flagged_lines": True,
    }
    print(
        f"{n:,} screened lines ({matched:,} with a code of the two rules); flagged {len(med):,} "
        f"({', '.join(f'{k} {v:,}' for k, v in by_rule.items())}), the same on every path"
    )
    print(f"  prepare_lines {prepare_s:.2f}s (shared), fetch to Python {fetch_s:.2f}s (not counted)")
    for label, key in (
        ("medaudit type queries", "medaudit_type_queries"),
        ("plain Python loop", "python_loop"),
        ("durable-rules per event", "durable_rules_per_event"),
    ):
        e = result[key]
        print(
            f"  {label:<24} "
            + (
                "skipped"
                if e is None
                else f"{e['seconds']:>8.2f}s  {e['cpu_s']:>7.2f} CPU s  {e['lines_per_s']:>11,} lines/s"
            )
        )
    print(f"  load average {load1:.1f} on {os.cpu_count()} CPUs")
    args.out.write_text(json.dumps(result, ensure_ascii=False, indent=2) + "\n")
    print(f"results written to {args.out.relative_to(ROOT) if args.out.is_relative_to(ROOT) else args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
