"""Where a screen's time goes, statement by statement: every SQL statement the engine runs, with
its wall time and the process's CPU time (all threads), the dearest first.

    .venv/bin/python benchmarks/bench_screen.py --lines 10000000 --extra-rules rules/national --reuse-load
    .venv/bin/python benchmarks/profile_screen.py benchmarks/data/lines10000000_seed1_parquet/loaded.duckdb \\
        --extra-rules rules/national --top 40
    .venv/bin/python benchmarks/profile_screen.py DB --part-lines 2000000      # a screen in parts
    .venv/bin/python benchmarks/profile_screen.py DB --replicate 10             # ten copies of every rule

Screens a copy of a loaded database (``bench_screen.py --reuse-load`` keeps one next to the
batch), so the file itself is not changed. A script of several statements (the findings'
grouping, the money) is timed statement by statement. The statements are timed through a thin
wrapper around the connection; the engine's helpers that check for a DuckDB connection
(``db.joins_as_written``, ``db.hash_as_written``, ``engine._drop_temp``) are handed the real one,
so the plans are the ones a screen runs (without that the joins ran as DuckDB orders them and
the build of ``lines`` cost twice as much). For one statement's plan, DuckDB's own
``PRAGMA enable_profiling='json'`` says more.
"""

from __future__ import annotations

import argparse
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_screen import cpu_s, library, replicate  # noqa: E402
from medaudit import db, engine, resources  # noqa: E402
from medaudit.library import Library, load_library  # noqa: E402

#: statements of one script: split where a statement ends at the end of a line
_END = re.compile(r";\s*\n")


def _comment_only(stmt: str) -> bool:
    return all(not ln.strip() or ln.strip().startswith("--") for ln in stmt.splitlines())


class Timed:
    """The connection, each ``execute`` timed (a script without parameters one statement at a time)."""

    def __init__(self, con: Any):
        self._c = con
        self.log: list[tuple[float, float, str]] = []

    def execute(self, sql: str, *args: Any, **kw: Any) -> Any:
        parts = [p for p in _END.split(str(sql)) if p.strip() and not _comment_only(p)]
        if len(parts) > 1 and not args and not kw:
            out = None
            for p in parts:
                out = self.execute(p)
            return out
        t, c = time.perf_counter(), cpu_s()
        out = self._c.execute(sql, *args, **kw)
        text = " ".join(ln for ln in str(sql).splitlines() if not ln.strip().startswith("--"))
        self.log.append((time.perf_counter() - t, cpu_s() - c, " ".join(text.split())))
        return out

    def __getattr__(self, name: str) -> Any:
        return getattr(self._c, name)


def _real(con: Any) -> Any:
    return getattr(con, "_c", con)


def _grouped(log: list[tuple[float, float, str]]) -> list[tuple[float, float, str]]:
    """The statements added up by their text with numbers and quoted paths left out, each shown
    as ``(n x) text``."""
    sums: dict[str, list[float]] = {}
    for w, c, s in log:
        key = re.sub(r"\d+", "N", re.sub(r"'[^']*/[^']*'", "'PATH'", " ".join(s.split())))
        acc = sums.setdefault(key, [0.0, 0.0, 0])
        acc[0], acc[1], acc[2] = acc[0] + w, acc[1] + c, acc[2] + 1
    return [(w, c, f"({int(n)} x) {k}") for k, (w, c, n) in sums.items()]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("db", type=Path, help="a loaded database (screened as a copy)")
    ap.add_argument("--rules", type=Path, default=ROOT / "rules")
    ap.add_argument("--extra-rules", type=Path, action="append", default=[])
    ap.add_argument(
        "--part-lines", type=int, default=None, help="as medaudit screen's (default: from the memory limit)"
    )
    ap.add_argument("--replicate", type=int, default=1, help="copies of every rule (as bench_screen.py)")
    ap.add_argument("--memory-limit", default=None)
    ap.add_argument("--top", type=int, default=30, help="statements shown")
    ap.add_argument("--width", type=int, default=150, help="characters of each statement shown")
    ap.add_argument(
        "--group",
        action="store_true",
        help="add up the statements that differ only in numbers and paths (a screen in parts runs each once a part)",
    )
    args = ap.parse_args(argv)

    resources.configure(args.memory_limit, None, config=None)
    lib = library(args.rules)
    if args.extra_rules:
        lib = Library(list(lib.rules) + [r for x in args.extra_rules for r in load_library(x).rules], lib.root)
    lib = replicate(lib, args.replicate)
    # the engine's connection checks, handed the real connection (see the module doc)
    for mod, name in ((db, "joins_as_written"), (db, "hash_as_written"), (engine, "_drop_temp")):
        real = getattr(mod, name)
        setattr(mod, name, lambda con, *a, _f=real: _f(_real(con), *a))
    with tempfile.TemporaryDirectory(dir=args.db.parent) as tmp:
        work = Path(tmp) / "profiled.duckdb"
        shutil.copyfile(args.db, work)
        con = db.connect(work)
        timed = Timed(con)
        t, c = time.perf_counter(), cpu_s()
        res = engine.screen(timed, lib, part_lines=args.part_lines)  # type: ignore[arg-type]
        wall, cpu = time.perf_counter() - t, cpu_s() - c
        con.close()
    log = timed.log
    print(
        f"screen: {wall:.1f} s wall, {cpu:.1f} CPU s, {res.n_lines:,} lines, {len(lib.rules)} rules, "
        f"{res.n_parts} part(s); {len(log)} statements, {sum(x[1] for x in log):.1f} CPU s in them"
    )
    hits = sum(x[1] for x in log if x[2].startswith("INSERT INTO hits"))
    print(f"the types' statements (INSERT INTO hits): {hits:.1f} CPU s")
    if args.group:
        log = _grouped(log)
    print(f"{'wall s':>7} {'CPU s':>7}  statement")
    for w, c_, s in sorted(log, key=lambda x: -x[1])[: args.top]:
        print(f"{w:7.2f} {c_:7.2f}  {s[: args.width]}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
