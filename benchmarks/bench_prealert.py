"""Pre-alert service benchmark: latency and throughput of 3101 checks of 10 orders.

    .venv/bin/python benchmarks/bench_prealert.py [--visits 2000] [--rate 500] [--seconds 30]
                                                  [--concurrency 32] [--engine fast|sql] [--library DIR]

1. History: a generated sample batch (``--visits``) loaded into a fresh database.
2. Library: the national knowledge batches imported with ``medaudit rules import-nhsa`` from
   ``../shared/reference/nhsa-rule-batches`` (``--library`` to give one; without the workbooks,
   the sample library ``rules/``, and the report says so).
3. ``medaudit serve`` is started as its own process on 127.0.0.1; this process is the client
   (:mod:`loadgen`: asyncio over ``--concurrency`` keep-alive sockets, pre-encoded requests)
   and sends requests of 10 new orders (each naming a library item with probability
   ``--lib-share``, default 0.2, else an item of the batch's own lines) for random visits of
   the history:

   - **open loop** at ``--rate`` requests per second for ``--seconds`` (latency counted from
     when each request was due, so queueing behind a stall is counted; ``--rate 0`` skips it);
   - **closed loop**: as fast as the connections go, for ``--seconds`` (the most the service
     answers per second; latency there is mostly queueing).
   - **soak** (``--soak MINUTES``): open loop at ``--rate`` for that long instead of the two
     runs above, the server's resident memory (RSS, from /proc) and its writer's queue (from
     ``/health``) sampled every ``--sample-every`` seconds (10); the curve is written next to
     the results file as ``prealert_soak_<label>.csv`` and ``.svg`` (and ``.png`` when
     matplotlib happens to be installed), its figures under the run's ``soak`` key.
4. Reported per run: p50 / p90 / p99 / max latency (ms, as the client sees it), requests per
   second, how many answers had alerts, the server's and the client's CPU time per request
   (from /proc and the process clock: figures other load on the machine inflates least), and
   the load average; written to ``benchmarks/prealert_results.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import socket
import statistics
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

import loadgen
from prealert_requests import body_3101

ROOT = Path(__file__).resolve().parents[1]
NATIONAL = ROOT.parent / "shared" / "reference" / "nhsa-rule-batches"
sys.path.insert(0, str(ROOT))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_mb(pid: int) -> float | None:
    try:
        return round(int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20, 1)
    except (OSError, ValueError, IndexError):
        return None


def tree(pid: int) -> list[int]:
    """The process and its children (the workers of ``medaudit serve --workers N``)."""
    kids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == pid:
                kids.append(int(stat.parent.name))
        except (OSError, ValueError, IndexError):
            pass
    return [pid, *kids]


def steal_s() -> float | None:
    """The machine's stolen CPU seconds so far (``/proc/stat``: time a virtual machine's cores
    waited for the host), or None where there is no such figure."""
    try:
        fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()
        return int(fields[8]) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


def by_window(due_s: list[float], latencies_ms: list[float], width: float) -> list[dict]:
    """The latencies by when the requests were due, ``width`` seconds a window: where in a run the
    tail is (a stall shows as one window's max; a slow drift as p99 rising window by window)."""
    windows: dict[int, list[float]] = {}
    for t, ms in zip(due_s, latencies_ms):
        windows.setdefault(int(t // width), []).append(ms)
    out = []
    for k in sorted(windows):
        lat = sorted(windows[k])
        out.append(
            {
                "t_s": k * width,
                "requests": len(lat),
                "p50_ms": loadgen.percentile(lat, 0.50),
                "p99_ms": loadgen.percentile(lat, 0.99),
                "max_ms": round(lat[-1], 2),
                "over_10ms": sum(1 for x in lat if x > 10),
            }
        )
    return out


def write_soak(samples: list[dict], args) -> dict:
    """The memory curve as CSV and SVG (PNG too when matplotlib is installed) next to the results;
    returns its summary (first/last/peak RSS, growth per hour over the run's second half)."""
    stem = args.out.parent / f"prealert_soak_{args.label or args.engine}"
    cols = [
        "t_s",
        "rss_mb",
        "rss_by_process_mb",
        "malloc_mb",
        "duckdb_mb",
        "duckdb_by_tag_mb",
        # the writer process's own (with --workers): where its slow growth would show
        "writer_malloc_mb",
        "writer_duckdb_mb",
        "writer_rows",
        "journal_segments",
        "checkpoints",
        "loadavg",
    ]
    stem.with_suffix(".csv").write_text(
        ",".join(cols)
        + "\n"
        + "".join(",".join("" if r.get(c) is None else str(r[c]) for c in cols) + "\n" for r in samples),
        encoding="utf-8",
    )
    pts = [(r["t_s"], r["rss_mb"]) for r in samples if r.get("rss_mb") is not None]
    out = {"samples": len(pts), "csv": stem.with_suffix(".csv").name}
    if len(pts) < 2:
        return out
    half = [p for p in pts if p[0] >= pts[-1][0] / 2]
    slope = (
        ((half[-1][1] - half[0][1]) / (half[-1][0] - half[0][0]) * 3600)
        if len(half) > 1 and half[-1][0] > half[0][0]
        else None
    )
    out.update(
        rss_first_mb=pts[0][1],
        rss_last_mb=pts[-1][1],
        rss_peak_mb=max(p[1] for p in pts),
        rss_growth_mb_per_hour_second_half=round(slope, 1) if slope is not None else None,
    )
    # the SVG by hand (no plotting dependency)
    w, h, pad = 640, 320, 48
    t1 = max(p[0] for p in pts) or 1
    lo, hi = min(p[1] for p in pts), max(p[1] for p in pts)
    lo, hi = (lo * 0.95, hi * 1.05) if hi > lo else (lo - 1, hi + 1)
    xy = " ".join(
        f"{pad + (t / t1) * (w - 2 * pad):.1f},{h - pad - (m - lo) / (hi - lo) * (h - 2 * pad):.1f}" for t, m in pts
    )
    svg = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="11">',
        f'<rect width="{w}" height="{h}" fill="white"/>',
        f'<line x1="{pad}" y1="{h - pad}" x2="{w - pad}" y2="{h - pad}" stroke="black"/>',
        f'<line x1="{pad}" y1="{pad}" x2="{pad}" y2="{h - pad}" stroke="black"/>',
        f'<text x="{w / 2}" y="{h - 12}" text-anchor="middle">minutes ({t1 / 60:.0f} in all, {args.rate or 500:g} requests/s)</text>',
        f'<text x="4" y="{pad - 8}">server RSS, MB</text>',
        f'<text x="{pad - 4}" y="{h - pad}" text-anchor="end">{lo:.0f}</text>',
        f'<text x="{pad - 4}" y="{pad + 4}" text-anchor="end">{hi:.0f}</text>',
        f'<polyline fill="none" stroke="#c0392b" stroke-width="1.5" points="{xy}"/>',
        "</svg>",
    ]
    stem.with_suffix(".svg").write_text("\n".join(svg) + "\n", encoding="utf-8")
    out["svg"] = stem.with_suffix(".svg").name
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return out
    fig, ax = plt.subplots(figsize=(8, 4))
    ax.plot([t / 60 for t, _m in pts], [m for _t, m in pts])
    ax.set_xlabel("minutes")
    ax.set_ylabel("server RSS (MB)")
    fig.savefig(stem.with_suffix(".png"), dpi=100)
    out["png"] = stem.with_suffix(".png").name
    return out


#: run by the serving checkout's interpreter: loads the batch into a fresh database with that
#: checkout's loader and writes what the client needs to build requests (as JSON) to a file
LOAD_SCRIPT = """
import json, sys
from medaudit import db
from medaudit.loader import load_batch
con = db.connect(sys.argv[2])
load_batch(sys.argv[1], con)
lines = con.execute("SELECT count(*) FROM fee_list_d").fetchall()[0][0]
visits = con.execute(\"\"\"SELECT v.mdtrt_id, v.psn_no, v.gend, CAST(v.brdy AS VARCHAR), v.fixmedins_code, v.hosp_lv,
                               v.med_type, v.insutype, CAST(v.begntime AS VARCHAR), v.dscg_maindiag_code
                        FROM mdtrt_d v ORDER BY v.mdtrt_id\"\"\").fetchall()
codes = [r[0] for r in con.execute("SELECT DISTINCT hilist_code FROM fee_list_d ORDER BY 1").fetchall()]
con.close()
# to a file: DuckDB's progress bar may write to stdout when a statement is slow
open(sys.argv[3], "w").write(json.dumps({"lines": lines, "visits": visits, "codes": codes}))
"""


def server_python(root: Path, given: Path | None = None) -> str:
    """The interpreter that serves ``root``: ``given``, else its own ``.venv`` (this interpreter for
    this checkout when it has none), after checking that it imports medaudit from ``root`` and not
    from another checkout (an editable install of another worktree would otherwise serve silently)."""
    venv = root / ".venv" / "bin" / "python"
    if given is not None:
        python = str(given)
    elif venv.exists():
        python = str(venv)
    elif root == ROOT:
        python = sys.executable
    else:
        raise SystemExit(f"{root} has no .venv: make one there (python3 -m venv .venv && .venv/bin/pip install -e .)")
    where = run_checked([python, "-c", "import medaudit; print(medaudit.__file__)"], root, 60).strip()
    if not Path(where).resolve().is_relative_to(root):
        raise SystemExit(f"{python} imports medaudit from {where}, not from {root}: pip install -e {root} there")
    return python


def run_checked(cmd: list[str], cwd: Path, timeout: float) -> str:
    """Run a setup step; its stdout, or a loud exit with its output if it fails or takes too long."""
    try:
        done = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as e:
        raise SystemExit(f"{cmd[:4]} did not finish in {timeout:g} s:\n{e.stderr or ''}") from None
    if done.returncode:
        raise SystemExit(f"{cmd[:4]} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return done.stdout


def wait_until_up(server: subprocess.Popen, base: str, timeout: float, log_path: Path) -> float:
    """Seconds until the service answers /health with every worker up; exits loudly (with the end
    of the server's output) if the server ends or does not come up within ``timeout`` seconds."""
    t_up = time.perf_counter()
    while True:
        try:
            h = httpx.get(base + "/health", timeout=1)
            # several workers: measure only once every one is up (connections made before
            # would all go to the first one for the whole run)
            w = h.json().get("workers", {}) if h.status_code == 200 else {}
            if h.status_code == 200 and w.get("ready", 1) == w.get("of", 1):
                return time.perf_counter() - t_up
        except (httpx.HTTPError, ValueError):
            pass
        if server.poll() is not None or time.perf_counter() - t_up > timeout:
            why = (
                f"server exited ({server.returncode})"
                if server.poll() is not None
                else f"server not up in {timeout:g} s"
            )
            if server.poll() is None:
                server.kill()
            raise SystemExit(f"{why}; its output ({log_path}):\n" + log_path.read_text(errors="replace")[-3000:])
        time.sleep(0.2)


#: what differs between two answers to the same request even when they say the same
VOLATILE = ("jr_id", "jrd_id", "task_id")


def scrub(x):
    """An answer without its ids (``jr_id`` and the like: new for every answer)."""
    if isinstance(x, dict):
        return {k: scrub(v) for k, v in x.items() if k not in VOLATILE}
    if isinstance(x, list):
        return [scrub(v) for v in x]
    return x


def library_codes(lib_dir: Path) -> list[str]:
    from medaudit.library import load_library

    lib = load_library(lib_dir)
    codes = sorted({it.code for r in lib.rules if "pre_alert" in r.stages for it in r.items if it.code})
    return codes


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--visits", type=int, default=2000)
    ap.add_argument("--requests", type=int, default=5000, help="distinct request bodies (cycled)")
    ap.add_argument("--seconds", type=float, default=30, help="length of each run")
    ap.add_argument("--rate", type=float, default=500, help="open-loop requests per second (0: closed loop only)")
    ap.add_argument("--concurrency", type=int, default=32, help="keep-alive connections")
    ap.add_argument("--sessions", type=int, default=1)
    ap.add_argument("--library", type=Path, default=None)
    ap.add_argument("--lib-share", type=float, default=0.2, help="share of orders naming a library item")
    ap.add_argument("--batch", type=int, default=32, help="medaudit serve --batch")
    ap.add_argument("--engine", choices=("fast", "sql"), default="fast", help="medaudit serve --engine")
    ap.add_argument(
        "--out",
        type=Path,
        default=ROOT / "benchmarks" / "prealert_results.json",
        help="results file: this run's figures go under its engine's key (or --label), the others are kept",
    )
    ap.add_argument(
        "--label", default=None, help="key of this run's figures in the results file (default: the engine's name)"
    )
    ap.add_argument("--note", default=None, help="a note kept with the figures (e.g. that the machine was shared)")
    ap.add_argument(
        "--soak",
        type=float,
        default=None,
        metavar="MINUTES",
        help="one open-loop run at --rate for MINUTES, sampling the server's memory (see the doc)",
    )
    ap.add_argument("--sample-every", type=float, default=10.0, help="seconds between memory samples (--soak)")
    ap.add_argument(
        "--window", type=float, default=10.0, help="seconds a window of the latencies by time (the run's by_window)"
    )
    ap.add_argument(
        "--workers",
        default="1",
        help="medaudit serve --workers (answering processes; auto: one "
        "per core); CPU time and RSS then count the writer and every worker",
    )
    ap.add_argument(
        "--serve-arg",
        action="append",
        default=[],
        help="an extra option for medaudit serve (repeatable, e.g. --serve-arg=--whole-history)",
    )
    ap.add_argument(
        "--server-root",
        type=Path,
        default=None,
        help="the checkout that serves (default this one): its .venv's python, its loader and importer; "
        "e.g. a git worktree of an older commit, to compare commits on the same requests",
    )
    ap.add_argument(
        "--server-python",
        type=Path,
        default=None,
        help="interpreter for --server-root (default its .venv); it must import medaudit from that root "
        "(python -m runs it from the root, ahead of an editable install elsewhere)",
    )
    ap.add_argument("--startup-timeout", type=float, default=180, help="seconds the server may take to come up")
    ap.add_argument(
        "--requests-file",
        type=Path,
        default=None,
        help="the request bodies: read from this JSON file if it exists, else built and written to it "
        "(so runs of several commits send the same requests)",
    )
    ap.add_argument(
        "--dump-answers",
        type=Path,
        default=None,
        help="before the runs, send the first --dump-answers-n requests one by one and write their answers "
        "(ids left out) to this file, one JSON line each",
    )
    ap.add_argument("--dump-answers-n", type=int, default=2000)
    ap.add_argument("--no-closed", action="store_true", help="skip the closed-loop run")
    ap.add_argument("--keep-work", action="store_true", help="keep the run's temporary folder (server.log, database)")
    args = ap.parse_args()

    # Which checkout serves: --server-root (another worktree, e.g. an older commit) runs its own
    # interpreter (its .venv) and its own medaudit, checked before anything waits on it.
    srv_root = (args.server_root or ROOT).resolve()
    srv_python = server_python(srv_root, args.server_python)
    from medaudit.sample import generate

    work = Path(tempfile.mkdtemp(prefix="bench_prealert_"))
    t0 = time.perf_counter()
    # the batch by this checkout's generator, so every server compared reads the same data; the load
    # and the library import by the serving checkout (its schema and its importer)
    generate(work / "batch", visits=args.visits, seed=11)
    run_checked(
        [srv_python, "-c", LOAD_SCRIPT, str(work / "batch"), str(work / "m.duckdb"), str(work / "loaded.json")],
        srv_root,
        600,
    )
    loaded = json.loads((work / "loaded.json").read_text(encoding="utf-8"))
    n_lines, batch_codes = loaded["lines"], loaded["codes"]
    visits = [tuple(v) for v in loaded["visits"]]

    if args.library:
        lib_dir, lib_name = args.library, str(args.library)
    elif NATIONAL.is_dir() and any(NATIONAL.glob("*.xlsx")):
        lib_dir, lib_name = work / "national", "national knowledge batches (medaudit rules import-nhsa)"
        run_checked(
            [srv_python, "-m", "medaudit", "rules", "import-nhsa", str(NATIONAL), "--out", str(lib_dir)], srv_root, 600
        )
    else:
        lib_dir, lib_name = srv_root / "rules", "sample library rules/ (national workbooks not found)"
    lib_codes = library_codes(lib_dir)
    setup_s = time.perf_counter() - t0

    keys = {}
    for inst in sorted({v[4] for v in visits}):
        keys[inst] = f"bench-key-{inst}-0123456789"
    (work / "keys.yaml").write_text("".join(f"{k}: {v}\n" for k, v in keys.items()), encoding="utf-8")

    port = free_port()
    log_path = work / "server.log"
    log = open(log_path, "w", encoding="utf-8")  # noqa: SIM115 - closed in finally
    # the server's output goes to a file: a pipe nobody reads fills up (64 KB) and blocks the server
    server = subprocess.Popen(
        [
            srv_python,
            "-m",
            "medaudit",
            "serve",
            "--db",
            str(work / "m.duckdb"),
            "--rules",
            str(lib_dir),
            "--keys",
            str(work / "keys.yaml"),
            "--port",
            str(port),
            "--sessions",
            str(args.sessions),
            "--batch",
            str(args.batch),
            "--engine",
            args.engine,
            # an older checkout has no --workers: given only when asked for
            *(["--workers", str(args.workers)] if str(args.workers) != "1" else []),
            *(["--preload"] if args.engine == "fast" else []),
            *args.serve_arg,
        ],
        cwd=srv_root,
        stdout=log,
        stderr=subprocess.STDOUT,
        text=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        startup_s = wait_until_up(server, base, args.startup_timeout, log_path)

        rng = random.Random(5)
        # The service preloads only as much history as its rules look back (prealert/window.py);
        # a check of a stored visit older than that goes to the SQL path, as it should: doctors
        # write orders for today's stays, not for last spring's. So the requests are what a hospital
        # sends: half for stored stays inside the window (orders dated at their admission), half for
        # new stays of persons of the history, admitted on the window's newest day (their earlier
        # visits are the history the cross-visit rules read). With --whole-history every stored visit
        # is in memory and any may be asked about.
        win = httpx.get(base + "/health", timeout=10).json().get("history_window")
        exact_from = win["exact_from"] if win else None
        recent = [v for v in visits if exact_from is None or v[8][:10] >= exact_from] or visits
        newest = max(v[8] for v in visits)

        def pick(i: int) -> tuple:
            if exact_from is None or rng.random() < 0.5:
                return rng.choice(recent)
            v = rng.choice(visits)
            return (f"NEW{i}", *v[1:8], newest, v[9])

        def body(i: int) -> tuple[dict, str]:
            v = pick(i)
            # each order names an item of the library with probability --lib-share (the others are
            # the batch's own items, which mostly break nothing)
            codes = [
                rng.choice(lib_codes) if rng.random() < args.lib_share else rng.choice(batch_codes) for _ in range(10)
            ]
            return body_3101(i, v, codes), keys[v[4]]

        if args.requests_file and args.requests_file.exists():
            saved = json.loads(args.requests_file.read_text(encoding="utf-8"))
            payloads = [(p, k) for p, k in saved["payloads"]]
        else:
            payloads = [body(i) for i in range(args.requests)]
            if args.requests_file:
                args.requests_file.write_text(
                    json.dumps({"history_window": win, "payloads": payloads}, ensure_ascii=False), encoding="utf-8"
                )
        raw = [loadgen.encode("/prealert/3101", json.dumps(p).encode(), {"X-API-Key": k}) for p, k in payloads]
        # warm-up (not measured)
        with httpx.Client(base_url=base, timeout=30) as c:
            for p, k in payloads[:20]:
                c.post("/prealert/3101", json=p, headers={"X-API-Key": k}).raise_for_status()
            if args.dump_answers:  # every request answered once, ids and times left out: compare two commits' files
                dump = []
                for p, k in payloads[: args.dump_answers_n]:
                    r = c.post("/prealert/3101", json=p, headers={"X-API-Key": k})
                    r.raise_for_status()
                    dump.append(scrub(r.json()))
                args.dump_answers.write_text(
                    "".join(json.dumps(a, ensure_ascii=False, sort_keys=True) + "\n" for a in dump), encoding="utf-8"
                )
        loadgen.drive(port, raw, rate=0, connections=args.concurrency, seconds=2)

        def cpu_s(pid: int, children: bool = True) -> float | None:
            # the server's CPU seconds (user + system), its workers' included: per request, a
            # figure that other load on the machine does not inflate the way it inflates wall-clock latency
            try:
                total = 0.0
                for q in tree(pid) if children else [pid]:
                    fields = Path(f"/proc/{q}/stat").read_text().rsplit(")", 1)[1].split()
                    total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
                return total
            except (OSError, ValueError, IndexError):
                return None

        def measured(rate: float) -> dict:
            loads: list[float] = []  # 1-minute load average, sampled each second of the run
            running = threading.Event()
            running.set()

            def sample_load() -> None:
                while running.is_set():
                    loads.append(os.getloadavg()[0])
                    time.sleep(1)

            sampler = threading.Thread(target=sample_load, daemon=True)
            sampler.start()
            cpu0, parent0, steal0 = cpu_s(server.pid), cpu_s(server.pid, children=False), steal_s()
            run = loadgen.drive(port, raw, rate=rate, connections=args.concurrency, seconds=args.seconds)
            cpu1, parent1, steal1 = cpu_s(server.pid), cpu_s(server.pid, children=False), steal_s()
            running.clear()
            lat = sorted(run.latencies_ms)
            n = len(lat)
            out = {
                "mode": f"open loop at {rate:g} requests/s" if rate else f"closed loop, {args.concurrency} connections",
                "requests": n,
                "errors": n - run.statuses.get(200, 0),
                "first_errors": run.errors,
                "requests_with_alerts": run.with_results,
                "answered_by": run.headers,
                "p50_ms": loadgen.percentile(lat, 0.50),
                "p90_ms": loadgen.percentile(lat, 0.90),
                "p99_ms": loadgen.percentile(lat, 0.99),
                "max_ms": round(lat[-1], 2),
                "mean_ms": round(statistics.fmean(lat), 2),
                "requests_per_s": round(n / run.seconds, 1),
                "seconds": round(run.seconds, 1),
                "server_cpu_ms_per_request": (
                    round((cpu1 - cpu0) * 1000 / n, 3) if cpu0 is not None and cpu1 is not None else None
                ),
                # per check answered (200): a refused request (503) costs the server next to nothing
                "server_cpu_ms_per_answer": (
                    round((cpu1 - cpu0) * 1000 / run.statuses[200], 3)
                    if cpu0 is not None and cpu1 is not None and run.statuses.get(200)
                    else None
                ),
                # with --workers N the parent is the writer: its share of the server's CPU
                "server_parent_cpu_ms_per_request": (
                    round((parent1 - parent0) * 1000 / n, 3) if parent0 is not None and parent1 is not None else None
                ),
                "client_cpu_ms_per_request": round(run.cpu_seconds * 1000 / n, 3),
                # CPU time the hypervisor gave to others while this machine wanted it (all cores):
                # a run with stalls and little load of its own usually has some
                "cpu_steal_s": round(steal1 - steal0, 2) if steal0 is not None and steal1 is not None else None,
                "loadavg_during": {
                    "min": round(min(loads), 2),
                    "mean": round(statistics.fmean(loads), 2),
                    "max": round(max(loads), 2),
                }
                if loads
                else None,
            }
            out["by_window"] = {"seconds": args.window, "windows": by_window(run.due_s, run.latencies_ms, args.window)}
            print(json.dumps({k: v for k, v in out.items() if k != "by_window"}, ensure_ascii=False), flush=True)
            return out

        load_before = os.getloadavg()
        soak = None
        if args.soak:
            samples: list[dict] = []
            stop = threading.Event()
            t_start = time.perf_counter()

            def sample() -> None:
                with httpx.Client(base_url=base, timeout=5) as c:
                    while not stop.is_set():
                        row = {
                            "t_s": round(time.perf_counter() - t_start, 1),
                            "rss_mb": round(sum(rss_mb(q) or 0 for q in tree(server.pid)), 1),
                            # each process's own (the parent with the writer first, then the workers)
                            "rss_by_process_mb": " ".join(str(rss_mb(q)) for q in tree(server.pid)),
                            "loadavg": os.getloadavg()[0],
                        }
                        try:
                            h = c.get("/health").json()
                            row.update(
                                writer_rows=h["results"].get("queued_rows"),
                                journal_segments=h["results"].get("journal_segments"),
                                # the writer's checkpoints so far: where in the run they fell
                                checkpoints=h["results"].get("checkpoints"),
                                duckdb_mb=round(h["memory"]["duckdb_bytes"] / 2**20, 1),
                                # the writer's (the parent's) DuckDB buffer manager and C allocator
                                writer_duckdb_mb=(
                                    round(h["writer_memory"]["duckdb_bytes"] / 2**20, 1)
                                    if (h.get("writer_memory") or {}).get("duckdb_bytes") is not None
                                    else None
                                ),
                                writer_malloc_mb=(
                                    "{in_use:.1f}/{free_held:.1f}".format(
                                        **{k: v / 2**20 for k, v in h["writer_memory"]["malloc"].items()}
                                    )
                                    if (h.get("writer_memory") or {}).get("malloc")
                                    else None
                                ),
                                # each worker's C allocator (glibc): in use / freed but held, MB
                                malloc_mb=" ".join(
                                    f"{m['in_use'] / 2**20:.1f}/{m['free_held'] / 2**20:.1f}"
                                    for m in (
                                        (w.get("gauges") or {}).get("malloc")
                                        for w in (h.get("workers") or {}).get("each", [])
                                    )
                                    if m
                                )
                                or (
                                    "{in_use:.1f}/{free_held:.1f}".format(
                                        **{k: v / 2**20 for k, v in h["memory"]["malloc"].items()}
                                    )
                                    if h["memory"].get("malloc")
                                    else None
                                ),
                                # what DuckDB holds the memory for, e.g. BASE_TABLE:12.5 ART_INDEX:30.1
                                duckdb_by_tag_mb=" ".join(
                                    f"{t}:{b / 2**20:.1f}"
                                    for t, b in sorted(h["memory"].get("duckdb_by_tag", {}).items())
                                ),
                            )
                        except (httpx.HTTPError, KeyError, ValueError):
                            pass
                        samples.append(row)
                        stop.wait(args.sample_every)

            sampler = threading.Thread(target=sample, daemon=True)
            sampler.start()
            seconds, args.seconds = args.seconds, args.soak * 60
            runs = [measured(args.rate or 500)]
            args.seconds = seconds
            stop.set()
            sampler.join(args.sample_every + 5)
            soak = write_soak(samples, args)
            runs[0]["soak"] = soak
        else:
            runs = ([measured(args.rate)] if args.rate else []) + ([] if args.no_closed else [measured(0)])
    finally:
        server.terminate()
        try:
            server.wait(10)
        except subprocess.TimeoutExpired:
            server.kill()
        log.close()

    result = {
        "engine": args.engine,
        "machine": f"{os.cpu_count()} CPUs, {platform.processor() or platform.machine()}, {platform.system()} {platform.release()}",
        "loadavg_before": load_before,
        "library": lib_name,
        "library_codes": len(lib_codes),
        "history_visits": len(visits),
        "history_lines": n_lines,
        "orders_per_request": 10,
        "library_item_share": args.lib_share,
        "distinct_requests": len(raw),
        "history_window": win,
        "stored_visits_asked": len(recent) if exact_from else len(visits),
        "requests": "half stored stays inside the window, half new stays of known persons"
        if exact_from
        else "stored visits (whole history preloaded)",
        "sessions": args.sessions,
        "batch": args.batch,
        "workers": args.workers,
        "setup_s": round(setup_s, 1),
        "server_startup_s": round(startup_s, 1),
        "cpus": os.cpu_count(),
        "runs": runs,
        "loadavg_after": os.getloadavg(),
    }
    result["server_root"] = str(srv_root)
    result["server_python"] = srv_python
    result["server_commit"] = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=srv_root, capture_output=True, text=True
    ).stdout.strip()
    if args.requests_file:
        result["requests_file"] = str(args.requests_file)
    if args.label:
        result["label"] = args.label
    if args.note:
        result["note"] = args.note
    print(json.dumps(result, ensure_ascii=False, indent=2))
    try:
        kept = json.loads(args.out.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        kept = {}
    kept[args.label or args.engine] = result
    args.out.write_text(json.dumps(kept, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
    # the run's folder (batch, database, journal, server.log: 10-20 MB) goes once the results are
    # written; a run that failed keeps it, so its server.log can be read
    if not args.keep_work:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
