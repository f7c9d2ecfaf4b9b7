"""The pre-alert writer's CPU per answer: journal segments stored one transaction each, or a
flush's segments in one transaction (``ResultWriter.BATCH_SEGMENTS``).

    .venv/bin/python benchmarks/bench_prealert_writer.py [--answers 40000] [--rounds 2]
                                                         [--batches 1,64]

What ``medaudit serve --workers 2`` does at 1,000 answers a second, without HTTP: two
:class:`JournalProducer` (the workers) append answers to their segments and close one every
100 answers (their 0.1 s interval); the :class:`ResultWriter` (the parent process) stores every
two closings of each (its 0.2 s interval): 4 segments a store. An answer is 2 result rows and
10 item rows (a request of 10 orders with alerts). Only the writer's ``flush`` is timed
(``time.process_time``: reading the segments back, the inserts, commits, marks and checkpoints),
into a fresh database file under the service's 64 MiB writer limit. The batch sizes take turns
for ``--rounds`` rounds. Figures go to ``benchmarks/prealert_writer_results.json``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from decimal import Decimal
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from medaudit import db  # noqa: E402
from medaudit.commands.serve import WRITER_MEMORY_LIMIT  # noqa: E402
from medaudit.prealert import store  # noqa: E402
from medaudit.prealert.writer import JournalProducer, ResultWriter  # noqa: E402

NOW = dt.datetime(2026, 3, 2, 9, 0)


def result_rows(jr: str) -> list[tuple]:
    return [
        (jr, "H001", "default", f"R-{k}", "1", "某规则名称", "restrict_gender", "violation", "5", "P0000123456",
         "P0000123456", "V000012345", "项目【示例】(XYZ) 限女性使用；2026-03-02 收费 1 次", Decimal("12.50"), NOW, None)
        for k in range(2)
    ]  # fmt: skip


def item_rows(jr: str) -> list[tuple]:
    return [(jr, f"{jr}-{i}", f"RX{i}", "001102000030000", "1", Decimal("3.00")) for i in range(10)]


def one_run(batch: int, answers: int) -> dict:
    ResultWriter.BATCH_SEGMENTS = batch
    work = Path(tempfile.mkdtemp(prefix="bench_writer_"))
    try:
        con = db.connect(work / "svc.duckdb")
        store.ensure(con)
        con.execute("SET memory_limit = ?", [WRITER_MEMORY_LIMIT])
        folder = work / "journal"
        writer = ResultWriter(con, folder, start=False, shared=True)
        producers = [JournalProducer(folder, start=False) for _ in range(2)]
        cpu = wall = 0.0
        n = 0
        while n < answers:
            for _ in range(2):
                for p in producers:
                    for _ in range(100):
                        jr = f"J{n:09d}"
                        n += 1
                        p.add(result_rows(jr), item_rows(jr))
                    p.rotate()
            t0, w0 = time.process_time(), time.perf_counter()
            writer.flush()
            cpu += time.process_time() - t0
            wall += time.perf_counter() - w0
        stored = con.execute("SELECT count(*) FROM prealert_results").fetchall()[0][0]
        assert stored == 2 * n, (stored, n)
        out = {
            "answers": n,
            "writer_cpu_ms_per_answer": round(1000 * cpu / n, 4),
            "writer_wall_ms_per_answer": round(1000 * wall / n, 4),
            "segments": writer.segments_stored,
            "checkpoints": writer.checkpoints,
        }
        writer.close()
        con.close()
        return out
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--answers", type=int, default=40_000)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--batches", default="1,64", help="values of ResultWriter.BATCH_SEGMENTS, in turn")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "prealert_writer_results.json")
    args = ap.parse_args()
    batches = [int(b) for b in args.batches.split(",")]
    runs: dict[str, list[dict]] = {str(b): [] for b in batches}
    load_before = os.getloadavg()
    for _ in range(args.rounds):
        for b in batches:
            r = one_run(b, args.answers)
            runs[str(b)].append(r)
            print(f"segments a transaction at most {b:>3}: {r}", flush=True)
    best = {b: min(r["writer_cpu_ms_per_answer"] for r in rs) for b, rs in runs.items()}
    report = {
        "when": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": f"{os.cpu_count()} CPUs, {platform.machine()}, {platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "answer": "2 result rows and 10 item rows; 2 producers closing a segment every 100 answers, a store every 4 segments",
        "load_avg_before_after": [round(x, 2) for x in (*load_before, *os.getloadavg())],
        "runs": runs,
        "best_writer_cpu_ms_per_answer": best,
    }
    args.out.write_text(json.dumps(report, indent=1, ensure_ascii=False) + "\n")
    print(json.dumps(best), "->", args.out)


if __name__ == "__main__":
    main()
