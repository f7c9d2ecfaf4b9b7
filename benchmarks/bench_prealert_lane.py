"""Server CPU per 3101 check, in process, with and without the 3101 lane (``create_app(lane=...)``).

    .venv/bin/python benchmarks/bench_prealert_lane.py [--visits 2000] [--requests 5000] [--rounds 2]
                                                       [--library DIR]

No sockets and no HTTP server: the ASGI app is called directly from an asyncio loop (its
lifespan run as uvicorn runs it), one request at a time, so the process's CPU time is the
application's (middlewares, routing, validation, the check, the answer, the result writer's
thread) without uvicorn's HTTP parsing, which is the same with or without the lane. Not a
latency benchmark: ``bench_prealert.py`` is that (a real server, a real client).

1. History: a generated sample batch (``--visits``, seed 11, as ``bench_prealert.py``) loaded
   into a database, copied for each service.
2. Library: the national knowledge batches (``medaudit rules import-nhsa`` of
   ``../shared/reference/nhsa-rule-batches``; ``--library`` to give one; else ``rules/``).
3. Two services as ``medaudit serve --preload`` builds them (fast engine, history windowed,
   results stored in the background), one with the lane and one without, over copies of the
   database; requests of 10 new orders as ``bench_prealert.py`` makes them (half for stored stays
   in the window, half for new stays of the history's persons; an order names a library item
   with probability 0.2), the same requests for both. Each service answers 300 first (not
   counted), then the two take turns for ``--rounds`` rounds of ``--requests``, each round's CPU
   time (``time.process_time``, every thread of the process) and wall time divided by its requests.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NATIONAL = ROOT.parent / "shared" / "reference" / "nhsa-rule-batches"
sys.path.insert(0, str(ROOT))

from prealert_requests import body_3101  # noqa: E402


def requests(con, lib, n: int, exact_from: str | None, seed: int = 5) -> list[tuple[bytes, bytes]]:
    """``n`` (body, API key) of 10 new orders each, made as ``bench_prealert.py`` makes them:
    half for stored stays inside the served history window (from ``exact_from``), half for new
    stays of the history's persons admitted on its newest day (all stored ones without a window)."""
    rng = random.Random(seed)
    visits = con.execute(
        """SELECT mdtrt_id, psn_no, gend, CAST(brdy AS VARCHAR), fixmedins_code, hosp_lv, med_type, insutype,
                  CAST(begntime AS VARCHAR), dscg_maindiag_code FROM mdtrt_d ORDER BY mdtrt_id"""
    ).fetchall()
    batch_codes = [r[0] for r in con.execute("SELECT DISTINCT hilist_code FROM fee_list_d ORDER BY 1").fetchall()]
    lib_codes = sorted({it.code for r in lib.rules if "pre_alert" in r.stages for it in r.items if it.code})
    newest = max(v[8] for v in visits)
    recent = [v for v in visits if exact_from is None or v[8][:10] >= exact_from] or visits
    out = []
    for i in range(n):
        if exact_from is None or rng.random() < 0.5:
            v = rng.choice(recent)
        else:
            w = rng.choice(visits)
            v = (f"NEW{i}", *w[1:8], newest, w[9])
        codes = [rng.choice(lib_codes) if rng.random() < 0.2 else rng.choice(batch_codes) for _ in range(10)]
        body = body_3101(i, v, codes)
        out.append((json.dumps(body).encode(), f"bench-key-{v[4]}-0123456789".encode()))
    return out


class Served:
    """An app with its lifespan started, answering requests one at a time from one event loop."""

    def __init__(self, app):
        self.app = app
        self.to_app: asyncio.Queue = asyncio.Queue()
        self.from_app: asyncio.Queue = asyncio.Queue()
        self.codes: dict[int, int] = {}

    async def start(self) -> None:
        scope = {"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}}
        self.task = asyncio.get_running_loop().create_task(self.app(scope, self.to_app.get, self.from_app.put))
        await self.to_app.put({"type": "lifespan.startup"})
        assert (await self.from_app.get())["type"] == "lifespan.startup.complete"

    async def stop(self) -> None:
        await self.to_app.put({"type": "lifespan.shutdown"})
        await self.from_app.get()
        await self.task

    async def call(self, body: bytes, key: bytes) -> None:
        sent = False

        async def receive():
            nonlocal sent
            if sent:
                return {"type": "http.disconnect"}
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}

        async def send(message):
            if message["type"] == "http.response.start":
                self.codes[message["status"]] = self.codes.get(message["status"], 0) + 1

        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": "POST",
            "scheme": "http",
            "path": "/prealert/3101",
            "raw_path": b"/prealert/3101",
            "query_string": b"",
            "root_path": "",
            "headers": [
                (b"host", b"127.0.0.1"),
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"x-api-key", key),
            ],
            "client": ("127.0.0.1", 40000),
            "server": ("127.0.0.1", 8000),
            "state": {},
        }
        await self.app(scope, receive, send)


async def measure(served: Served, reqs) -> tuple[float, float]:
    """CPU and wall ms per request of answering ``reqs`` one after another."""
    cpu, wall = time.process_time(), time.perf_counter()
    for body, key in reqs:
        await served.call(body, key)
    n = len(reqs)
    return (time.process_time() - cpu) * 1000 / n, (time.perf_counter() - wall) * 1000 / n


async def run(apps: dict[str, object], reqs, warm: int, rounds: int) -> dict:
    served = {name: Served(app) for name, app in apps.items()}
    for s in served.values():
        await s.start()
    for s in served.values():
        await measure(s, reqs[:warm])
    out: dict[str, list] = {name: [] for name in served}
    for _ in range(rounds):
        for name, s in served.items():
            cpu, wall = await measure(s, reqs[warm:])
            out[name].append({"cpu_ms": round(cpu, 4), "wall_ms": round(wall, 4)})
    for s in served.values():
        await s.stop()
    return {
        name: {"rounds": r, "cpu_ms_per_request": min(x["cpu_ms"] for x in r), "statuses": served[name].codes}
        for name, r in out.items()
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--visits", type=int, default=2000)
    ap.add_argument("--requests", type=int, default=5000, help="requests a round (after 300 not counted)")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--library", type=Path, help="a rule library folder (default: the national batches)")
    ap.add_argument("--out", type=Path, help="write the figures as JSON here too")
    args = ap.parse_args()

    from medaudit import db
    from medaudit.library import load_library
    from medaudit.loader import load_batch
    from medaudit.prealert import store
    from medaudit.prealert.app import create_app
    from medaudit.sample import generate

    work = Path(tempfile.mkdtemp(prefix="bench_lane_"))
    try:
        generate(work / "batch", visits=args.visits, seed=11)
        con = db.connect(work / "m.duckdb")
        load_batch(work / "batch", con)
        con.close()
        if args.library:
            lib_dir, lib_name = args.library, str(args.library)
        elif NATIONAL.is_dir() and any(NATIONAL.glob("*.xlsx")):
            lib_dir, lib_name = work / "national", "national knowledge batches (medaudit rules import-nhsa)"
            subprocess.run(
                [sys.executable, "-m", "medaudit", "rules", "import-nhsa", str(NATIONAL), "--out", str(lib_dir)],
                check=True,
                capture_output=True,
            )
        else:
            lib_dir, lib_name = ROOT / "rules", "sample library rules/ (national workbooks not found)"
        lib = load_library(lib_dir)
        apps = {}
        for name, lane in (("lane", True), ("fastapi", False)):
            shutil.copyfile(work / "m.duckdb", work / f"{name}.duckdb")
            con = db.connect(work / f"{name}.duckdb")
            insts = [r[0] for r in con.execute("SELECT DISTINCT fixmedins_code FROM mdtrt_d").fetchall()]
            keys = {store.key_hash(f"bench-key-{i}-0123456789"): i for i in insts}
            apps[name] = create_app(
                con,
                {"default": lib},
                keys,
                preload=True,
                window=True,
                async_results=True,
                journal=str(work / f"journal-{name}"),
                max_db_checks=2,
                lane=lane,
            )
            if name == "lane":
                window = apps[name].state.checker.window
                reqs = requests(con, lib, 300 + args.requests, window.describe()["exact_from"] if window else None)
        load_before = os.getloadavg()
        result = asyncio.run(run(apps, reqs, 300, args.rounds))
        load = [round(x, 2) for x in (*load_before, *os.getloadavg())]
    finally:
        shutil.rmtree(work, ignore_errors=True)
    report = {
        "library": lib_name,
        "visits": args.visits,
        "requests_a_round": args.requests,
        # other load on the machine (1, 5, 15 minutes; before, after) inflates CPU per request
        "load_avg_before_after": load,
        "python": platform.python_version(),
        **result,
    }
    print(json.dumps(report, indent=1))
    if args.out:
        args.out.write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
