"""Pre-alert service benchmark: latency and throughput of 3101 checks of 10 orders.

    .venv/bin/python benchmarks/bench_prealert.py [--visits 2000] [--requests 2000] [--seconds 60] [--batch 32]
                                                  [--concurrency 32] [--sessions 1] [--library DIR]

1. History: a generated sample batch (``--visits``) loaded into a fresh database.
2. Library: the national knowledge batches imported with ``medaudit rules import-nhsa`` from
   ``../shared/reference/nhsa-rule-batches`` (``--library`` to give one; without the workbooks,
   the sample library ``rules/``, and the report says so).
3. ``medaudit serve`` is started as its own process on 127.0.0.1; this process is the client:
   ``--concurrency`` threads with keep-alive connections send requests of 10 new orders
   (each naming a library item with probability ``--lib-share``, default 0.2, else an item of
   the batch's own lines) for random
   visits of the history, until ``--requests`` are done or ``--seconds`` have passed.
4. Reported: p50 / p90 / p99 / max latency (ms, as the client sees it), requests per second,
   how many requests returned alerts, the server's CPU time per request (from /proc: the
   figure other load on the machine inflates least), the load average; written to
   ``benchmarks/prealert_results.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
NATIONAL = ROOT.parent / "shared" / "reference" / "nhsa-rule-batches"
sys.path.insert(0, str(ROOT))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def library_codes(lib_dir: Path) -> list[str]:
    from medaudit.library import load_library

    lib = load_library(lib_dir)
    codes = sorted({it.code for r in lib.rules if "pre_alert" in r.stages for it in r.items if it.code})
    return codes


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--visits", type=int, default=2000)
    ap.add_argument("--requests", type=int, default=2000)
    ap.add_argument("--seconds", type=float, default=60)
    ap.add_argument("--concurrency", type=int, default=32)
    ap.add_argument("--sessions", type=int, default=1)
    ap.add_argument("--library", type=Path, default=None)
    ap.add_argument("--lib-share", type=float, default=0.2, help="share of orders naming a library item")
    ap.add_argument("--batch", type=int, default=32, help="medaudit serve --batch")
    ap.add_argument("--engine", choices=("fast", "sql"), default="fast", help="medaudit serve --engine")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "prealert_results.json",
                    help="results file: this run's figures go under its engine's key, the other engine's are kept")
    args = ap.parse_args()

    from medaudit import db
    from medaudit.loader import load_batch
    from medaudit.sample import generate

    work = Path(tempfile.mkdtemp(prefix="bench_prealert_"))
    t0 = time.perf_counter()
    generate(work / "batch", visits=args.visits, seed=11)
    con = db.connect(work / "m.duckdb")
    load_batch(work / "batch", con)
    n_lines = con.execute("SELECT count(*) FROM fee_list_d").fetchall()[0][0]
    visits = con.execute("""SELECT v.mdtrt_id, v.psn_no, v.gend, CAST(v.brdy AS VARCHAR), v.fixmedins_code, v.hosp_lv,
                                   v.med_type, v.insutype, CAST(v.begntime AS VARCHAR), v.dscg_maindiag_code
                            FROM mdtrt_d v""").fetchall()
    batch_codes = [r[0] for r in con.execute("SELECT DISTINCT hilist_code FROM fee_list_d ORDER BY 1").fetchall()]
    con.close()

    if args.library:
        lib_dir, lib_name = args.library, str(args.library)
    elif NATIONAL.is_dir() and any(NATIONAL.glob("*.xlsx")):
        lib_dir, lib_name = work / "national", "national knowledge batches (medaudit rules import-nhsa)"
        subprocess.run([sys.executable, "-m", "medaudit", "rules", "import-nhsa", str(NATIONAL), "--out", str(lib_dir)],
                       check=True, cwd=ROOT, stdout=subprocess.DEVNULL)
    else:
        lib_dir, lib_name = ROOT / "rules", "sample library rules/ (national workbooks not found)"
    lib_codes = library_codes(lib_dir)
    setup_s = time.perf_counter() - t0

    keys = {}
    for inst in sorted({v[4] for v in visits}):
        keys[inst] = f"bench-key-{inst}-0123456789"
    (work / "keys.yaml").write_text("".join(f"{k}: {v}\n" for k, v in keys.items()), encoding="utf-8")

    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "medaudit", "serve", "--db", str(work / "m.duckdb"), "--rules", str(lib_dir),
         "--keys", str(work / "keys.yaml"), "--port", str(port), "--sessions", str(args.sessions),
         "--batch", str(args.batch), "--engine", args.engine, *(["--preload"] if args.engine == "fast" else [])],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        t_up = time.perf_counter()
        while True:
            try:
                if httpx.get(base + "/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if server.poll() is not None:
                raise SystemExit("server exited:\n" + (server.stdout.read() if server.stdout else ""))
            if time.perf_counter() - t_up > 300:
                raise SystemExit("server did not come up in 300 s")
            time.sleep(0.2)
        startup_s = time.perf_counter() - t_up

        rng = random.Random(5)

        def body(i: int) -> tuple[dict, str]:
            v = rng.choice(visits)
            # each order names an item of the library with probability --lib-share (the others are
            # the batch's own items, which mostly break nothing)
            codes = [rng.choice(lib_codes) if rng.random() < args.lib_share else rng.choice(batch_codes)
                     for _ in range(10)]
            orders = [{
                "rx_id": f"B{i}-{k}", "hilist_code": c, "hilist_name": "", "cnt": "1", "pric": "25.5",
                "sumamt": "25.5", "drord_begn_date": v[8], "drord_dept_codg": "D01", "drord_dr_codg": "DR01",
                "curr_drord_flag": 1,
            } for k, c in enumerate(codes)]
            return {
                "trig_scen": "5",
                "patient_dtos": [{
                    "patn_id": v[1], "gend": v[2], "brdy": v[3], "curr_mdtrt_id": v[0],
                    "fsi_encounter_dtos": [{
                        "mdtrt_id": v[0], "medins_id": v[4], "medins_lv": v[5], "med_type": v[6], "insutype": v[7],
                        "adm_date": v[8], "dscg_main_dise_codg": v[9] or "",
                        "fsi_diagnose_dtos": ([{"dise_codg": v[9], "maindise_flag": "1"}] if v[9] else []),
                        "fsi_order_dtos": orders,
                    }],
                }],
            }, keys[v[4]]

        payloads = [body(i) for i in range(args.requests)]
        # warm-up (not measured)
        with httpx.Client(base_url=base, timeout=30) as c:
            for p, k in payloads[:20]:
                c.post("/prealert/3101", json=p, headers={"X-API-Key": k}).raise_for_status()

        lat: list[float] = []
        alerts = [0]
        engines: dict[str, int] = {}  # X-Medaudit-Engine of the answers: which path answered
        errors: list[str] = []
        nxt = [20]
        lock = threading.Lock()
        deadline = time.perf_counter() + args.seconds

        def worker() -> None:
            with httpx.Client(base_url=base, timeout=30) as c:
                while True:
                    with lock:
                        i = nxt[0]
                        nxt[0] += 1
                    if i >= len(payloads) or time.perf_counter() > deadline:
                        return
                    p, k = payloads[i]
                    t = time.perf_counter()
                    r = c.post("/prealert/3101", json=p, headers={"X-API-Key": k})
                    d = time.perf_counter() - t
                    with lock:
                        lat.append(d * 1000)
                        e = r.headers.get("X-Medaudit-Engine", "?")
                        engines[e] = engines.get(e, 0) + 1
                        if r.status_code != 200:
                            errors.append(f"{r.status_code} {r.text[:200]}")
                        elif r.json()["output"]["result"]:
                            alerts[0] += 1

        def cpu_s(pid: int) -> float | None:
            # the server's CPU seconds (user + system): per request, a figure that other load on
            # the machine does not inflate the way it inflates wall-clock latency
            try:
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
                return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
            except (OSError, ValueError, IndexError):
                return None

        loads: list[float] = []  # 1-minute load average, sampled each second of the run
        running = threading.Event()
        running.set()

        def sample_load() -> None:
            while running.is_set():
                try:
                    loads.append(os.getloadavg()[0])
                except OSError:
                    return
                time.sleep(1)

        load_before = os.getloadavg() if hasattr(os, "getloadavg") else None
        sampler = threading.Thread(target=sample_load, daemon=True)
        sampler.start()
        cpu0 = cpu_s(server.pid)
        t_run = time.perf_counter()
        threads = [threading.Thread(target=worker) for _ in range(args.concurrency)]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        wall = time.perf_counter() - t_run
        cpu1 = cpu_s(server.pid)
        running.clear()
    finally:
        server.terminate()
        try:
            server.wait(10)
        except subprocess.TimeoutExpired:
            server.kill()

    lat.sort()

    def pct(q: float) -> float:
        return round(lat[min(len(lat) - 1, int(q * len(lat)))], 2)

    try:
        load = os.getloadavg()
    except OSError:
        load = None
    result = {
        "engine": args.engine, "answered_by": engines,
        "machine": f"{os.cpu_count()} CPUs, {platform.processor() or platform.machine()}, {platform.system()} {platform.release()}",
        "loadavg_before": load_before,
        "loadavg_during": {"min": round(min(loads), 2), "mean": round(statistics.fmean(loads), 2),
                           "max": round(max(loads), 2)} if loads else None,
        "library": lib_name, "library_codes": len(lib_codes), "history_visits": len(visits), "history_lines": n_lines,
        "orders_per_request": 10, "library_item_share": args.lib_share, "concurrency": args.concurrency,
        "sessions": args.sessions, "batch": args.batch,
        "requests": len(lat), "errors": len(errors), "requests_with_alerts": alerts[0],
        "p50_ms": pct(0.50), "p90_ms": pct(0.90), "p99_ms": pct(0.99), "max_ms": round(lat[-1], 2),
        "mean_ms": round(statistics.fmean(lat), 2), "requests_per_s": round(len(lat) / wall, 1),
        "seconds": round(wall, 1),
        "server_cpu_ms_per_request": round((cpu1 - cpu0) * 1000 / max(len(lat), 1), 2) if cpu0 is not None and cpu1 is not None else None, "setup_s": round(setup_s, 1), "server_startup_s": round(startup_s, 1),
        "cpus": os.cpu_count(), "loadavg_after": load,
    }
    print(json.dumps(result, ensure_ascii=False, indent=2))
    if errors:
        print("first errors:", *errors[:5], sep="\n  ")
    try:
        kept = json.loads(args.out.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        kept = {}
    if "p99_ms" in kept:  # a file from before the fast engine: those were SQL-path figures
        kept = {"sql": {"engine": "sql", **kept}}
    kept[args.engine] = result
    args.out.write_text(json.dumps(kept, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
