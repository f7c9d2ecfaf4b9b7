"""Pre-alert: the cost of a rule type WITHOUT an in-memory evaluator, two ways (issue 10, item 3).

    .venv/bin/python benchmarks/bench_prealert_context_sql.py [--visits 2000] [--requests 300] [--label L]

The types of the sample library ``rules/`` at ``pre_alert`` that have no evaluator (``sql``,
``gender_diagnosis_conflict``) run on the SQL path in each request. This measures, per request
of 10 new orders (built as ``bench_prealert.py`` builds them), the server-side CPU time of:

- **shadows** (what the service does): :class:`medaudit.prealert.sql_path.SqlPath` for those
  types only — the request's context loaded into temporary shadows of the input tables,
  ``prepare_lines``, the types' statements, the touched hits, the same types again without the
  new orders when needed: about a dozen statements;
- **in-memory context**: the request's ``lines`` built in Python by the fast path's context
  (:func:`medaudit.prealert.fast.context.build_lines`, from a preloaded cache), handed to DuckDB
  as Arrow tables (``lines``, ``visits``, ``diag``, ``setl_d``) registered on a cursor that holds
  the registered rules, and each type's one statement run over them (``sql``: its rules' queries
  in the sandbox, then its statement), hits into alerts with :func:`medaudit.prealert.alerts.alerts_of`,
  again without the new orders when needed.

It checks that both give the same alerts for every request (the in-memory variant's
``setl_d`` holds the visit's stored settlements, so refunded visits are left out as on the SQL
path), then prints ms per request and writes them under ``--label`` in
``benchmarks/prealert_results.json``. CPU time of this one process (``time.process_time``):
other load on the machine inflates it less than wall-clock time.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import sys
import tempfile
import time
from pathlib import Path

import pyarrow as pa

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from prealert_requests import body_3101  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--visits", type=int, default=2000)
    ap.add_argument("--requests", type=int, default=300)
    ap.add_argument("--lib-share", type=float, default=0.2)
    ap.add_argument("--label", default="in-memory context vs shadows: sample library's SQL-only types")
    ap.add_argument("--note", default=None)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "prealert_results.json")
    args = ap.parse_args()

    from medaudit import db, engine
    from medaudit.library import load_library
    from medaudit.loader import load_batch
    from medaudit.prealert.alerts import alerts_of, again_types, claims_before, Hit, LineInfo
    from medaudit.prealert.fast import EVALUATORS, ORDER_TAG, FastPath
    from medaudit.prealert.fast.context import build_lines, inst_level
    from medaudit.prealert.schemas import Request3101, to_check_request
    from medaudit.prealert.sql_path import SqlPath
    from medaudit.sample import generate
    from medaudit.types import REGISTRY
    from medaudit.types import sql as sql_type

    work = Path(tempfile.mkdtemp(prefix="bench_ctx_sql_"))
    generate(work / "batch", visits=args.visits, seed=11)
    con = db.connect(work / "m.duckdb")
    load_batch(work / "batch", con)
    visits = con.execute("""SELECT mdtrt_id, psn_no, gend, CAST(brdy AS VARCHAR), fixmedins_code, hosp_lv, med_type,
                                   insutype, CAST(begntime AS VARCHAR), dscg_maindiag_code FROM mdtrt_d""").fetchall()
    batch_codes = [r[0] for r in con.execute("SELECT DISTINCT hilist_code FROM fee_list_d ORDER BY 1").fetchall()]
    lib = load_library(ROOT / "rules")
    rules = [r for r in lib.rules if "pre_alert" in r.stages]
    types = sorted({r.type for r in rules if r.type not in EVALUATORS})
    all_types = list(types)
    lib_codes = sorted({it.code for r in rules for it in r.items if it.code})

    rng = random.Random(5)
    reqs = []
    for i in range(args.requests):
        v = rng.choice(visits)
        codes = [rng.choice(lib_codes) if rng.random() < args.lib_share else rng.choice(batch_codes) for _ in range(10)]
        body = body_3101(i, v, codes)
        p = Request3101.model_validate(body).patient_dtos[0]
        reqs.append(to_check_request(p, None))

    # ---- shadows: the service's SQL path for those types
    sql = SqlPath(con, {"default": rules}, sessions=1, batch=1)
    sql.check("default", reqs[0], types)  # session made, not measured
    t0 = time.process_time()
    shadows = [sql.check("default", r, types) for r in reqs]
    shadows_ms = (time.process_time() - t0) * 1000 / len(reqs)

    # ---- in-memory context: Arrow tables, one statement per type
    fast = FastPath(con, {"default": rules}, preload=True)
    cur = con.cursor()
    cur.execute("SET threads = 1")
    db.install_macros(cur)
    engine.register_rules(cur, rules)
    statements = {t: REGISTRY[t].sql(engine.type_names(REGISTRY[t]), cur) for t in types}
    sql_rules = (
        cur.execute("SELECT p.rule_key, r.rule_id, p.query FROM p_sql p JOIN r_all r USING (rule_key)").fetchall()
        if "sql" in types
        else []
    )
    sandbox = sql_type.open_sandbox()
    setl = {}
    for row in con.execute("SELECT mdtrt_id, setl_id, refd_setl_flag FROM setl_d").fetchall():
        setl.setdefault(row[0], []).append(row)
    hit_cols = ["rule_key", "finding_key", "mdtrt_id", "bkkp_sn", "role", "claim", "ev_head", "ev_line"]

    def run_types(lines: list[dict], diags: list[str], v: dict, which: list[str]) -> list[Hit]:
        cols = [k for k in lines[0] if not k.startswith("_")] if lines else []
        cur.register("lines", pa.Table.from_pylist([{k: ln[k] for k in cols} for ln in lines]))
        vrow = {
            **v,
            "inst_level": inst_level(v.get("hosp_lv")),
            "inpatient": str(v.get("med_type", "")).startswith("2"),
            "los": None,
        }
        cur.register("visits", pa.Table.from_pylist([vrow]))
        cur.register(
            "diag",
            pa.Table.from_pylist(
                [{"mdtrt_id": v["mdtrt_id"], "diag_code": d, "diag_name": None, "is_main": False} for d in diags],
                schema=pa.schema(
                    [
                        ("mdtrt_id", pa.string()),
                        ("diag_code", pa.string()),
                        ("diag_name", pa.string()),
                        ("is_main", pa.bool_()),
                    ]
                ),
            ),
        )
        cur.register(
            "setl_d",
            pa.Table.from_pylist(
                [{"mdtrt_id": a, "setl_id": b, "refd_setl_flag": c} for a, b, c in setl.get(v["mdtrt_id"], [])],
                schema=pa.schema(
                    [("mdtrt_id", pa.string()), ("setl_id", pa.string()), ("refd_setl_flag", pa.string())]
                ),
            ),
        )
        out = []
        for t in which:
            if t == "sql":
                sql_type.run_rules(cur, sql_rules, sandbox)
            out += [Hit(*r) for r in cur.execute(f"SELECT {', '.join(hit_cols)} FROM ({statements[t]})").fetchall()]
        return out

    def in_memory(req) -> list:
        ctx = fast.cache.get(req.visit["mdtrt_id"], req.visit["psn_no"])
        lines, diags, _deaths = build_lines(ctx, req, ORDER_TAG)
        v = {**(ctx.visit or {}), **{k: x for k, x in req.visit.items() if x is not None}}
        hits = run_types(lines, diags, v, types)
        new_ids = {ln["bkkp_sn"] for ln in lines if ln["_new"]}
        if not any(h.bkkp_sn in new_ids for h in hits):
            return []
        before = {}
        again = again_types(rules, hits, new_ids)
        if again:
            before = claims_before(run_types([ln for ln in lines if not ln["_new"]], diags, v, again))
        named = {h.bkkp_sn for h in hits}
        line = {
            ln["bkkp_sn"]: LineInfo(
                ln["fee_ocur_time"],
                ln["psn_no"],
                ln["hilist_code"],
                ln["fixmedins_code"],
                ln["mdtrt_id"],
                ln["fee_date"],
            )
            for ln in lines
            if ln["bkkp_sn"] in named
        }
        order_ids = {ln["bkkp_sn"] for ln in lines if ln["bkkp_sn"].endswith(ORDER_TAG)}
        return [a for _i, a in alerts_of(rules, hits, line, before, new_ids, order_ids)]

    in_memory(reqs[0])
    t0 = time.process_time()
    mem = [in_memory(r) for r in reqs]
    mem_ms = (time.process_time() - t0) * 1000 / len(reqs)

    # each type alone, both ways
    per_type = {}
    for t in list(types):
        one = [t]
        t0 = time.process_time()
        for r in reqs:
            sql.check("default", r, one)
        a_ms = (time.process_time() - t0) * 1000 / len(reqs)
        types[:] = one
        t0 = time.process_time()
        for r in reqs:
            in_memory(r)
        b_ms = (time.process_time() - t0) * 1000 / len(reqs)
        types[:] = all_types
        per_type[t] = {
            "shadows_cpu_ms_per_request": round(a_ms, 2),
            "in_memory_context_cpu_ms_per_request": round(b_ms, 2),
        }

    def shape(alerts):
        return sorted(
            (a.rule_id, a.finding_key, a.evidence, a.amount, tuple((i.bkkp_sn, i.role, i.claim) for i in a.items))
            for a in alerts
        )

    differ = sum(1 for a, b in zip(shadows, mem) if shape(a) != shape(b))
    result = {
        "label": args.label,
        "what": "server CPU ms per request of 10 new orders for the rule types without an "
        "in-memory evaluator, on the SQL path's shadows vs one statement per type over an in-memory context",
        "machine": f"{os.cpu_count()} CPUs, {platform.processor() or platform.machine()}, {platform.system()} {platform.release()}",
        "loadavg": os.getloadavg(),
        "note": args.note,
        "library": "sample library rules/",
        "types": types,
        "history_visits": len(visits),
        "requests": len(reqs),
        "requests_with_alerts": sum(1 for a in shadows if a),
        "shadows_cpu_ms_per_request": round(shadows_ms, 2),
        "in_memory_context_cpu_ms_per_request": round(mem_ms, 2),
        "answers_that_differ": differ,
        "per_type": per_type,
    }
    print(json.dumps(result, ensure_ascii=False, indent=2))
    try:
        kept = json.loads(args.out.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        kept = {}
    kept[args.label] = result
    args.out.write_text(json.dumps(kept, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
